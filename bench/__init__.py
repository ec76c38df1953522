"""The BillingOS SDK benchmarks (issue 5): ``python -m bench [--quick] [--only NAME] [--no-report]``.

Not shipped in the wheel. Every scenario is registered in :data:`SCENARIOS` below: a number, a short name
for ``--only``, and ``module:function``. The function takes a :class:`bench._harness.Context` and returns
rows (:class:`bench._harness.Row`, or dicts with the keys ``name, figure, unit, goal, met, spread``).
A module that cannot be imported (an optional dependency missing) is reported as skipped, not as a failure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    number: str
    name: str
    target: str
    """``module:function``, imported only when the scenario runs."""
    title: str


SCENARIOS = (
    Scenario("1", "overhead", "bench.overhead:run_check", "Per-call client overhead: check_entitlement"),
    Scenario("2", "track-list", "bench.overhead:run_track_list", "Per-call overhead: usage.track, list page"),
    Scenario("3", "loopback", "bench.loopback:run", "Loopback throughput against the embedded server"),
    Scenario("4", "cache", "bench.cache:run", "Entitlement cache"),
    Scenario("5", "sync", "bench.sync_facade:run", "Sync facade"),
    Scenario("6", "recorder", "bench.recorder:run", "Usage recorder"),
    Scenario("7", "imports", "bench.imports:run", "Import time"),
    Scenario("8", "memory", "bench.memory:run", "Memory"),
    Scenario("9", "first-use", "bench.first_use:run", "No stall of a running loop on first use"),
    Scenario("10", "scale", "bench.scale:run", "Running at scale: rate budget, 500-user workload"),
    Scenario("11", "redis", "bench.redis_cache:run", "Entitlement cache shared on Redis"),
)
