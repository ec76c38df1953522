"""Scenario 7: import time of ``billingos`` against importing its dependencies alone, fresh interpreters.

Each sample is one new interpreter timing one ``import`` statement (interpreter start-up excluded);
the interpreters for the different imports are started in turn (billingos, dependencies, peers,
billingos, ...), so a busy moment of the machine hits every side alike.
"""

from __future__ import annotations

import importlib.util

from ._harness import Context, Goal, Row, fmt, interleave, ratios, run_child

DEPENDENCIES = ("httpx2", "anyio", "tenacity", "attrs", "cattrs")
PEERS = ("openai", "stripe")

_TIMED = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"

_EXTRA = """
import json, sys
import {deps}
before = set(sys.modules)
import billingos
extra = sorted(m for m in set(sys.modules) - before if not m.startswith("billingos"))
print(json.dumps(extra))
"""


def _time_import(modules: str) -> float:
    return float(run_child(["-c", _TIMED.format(modules)]))


def run(ctx: Context) -> list[Row]:
    """7. ``import billingos`` vs ``import httpx2, anyio, tenacity, attrs, cattrs`` (its runtime
    dependencies alone), each in a fresh interpreter, median of 10 (goal ≤ 1.3×); openai and stripe, when
    installed, as ratios to ``import billingos``. The notes list the modules that ``import billingos``
    loads beyond its dependencies (candidates for a lazy import)."""
    peers = [p for p in PEERS if importlib.util.find_spec(p) is not None and not ctx.smoke]
    targets = {"billingos": "billingos", "deps": ", ".join(DEPENDENCIES)} | {p: p for p in peers}
    batches = {name: lambda m=modules: _time_import(m) for name, modules in targets.items()}
    times = interleave(batches, reps=ctx.pick(10, 3, 1), warmup=not ctx.smoke)
    ms = {name: fmt(sorted(samples)[len(samples) // 2] * 1e3) for name, samples in times.items()}
    extra: list[str] = run_child(["-c", _EXTRA.format(deps=", ".join(DEPENDENCIES))])
    roots = sorted({m.split(".")[0] for m in extra if not m.startswith("_")})
    rows = [
        Row.measured(
            "import billingos / its dependencies alone",
            ratios(times["billingos"], times["deps"]),
            goal=Goal("<=", 1.3),
            note=f"billingos {ms['billingos']} ms, dependencies {ms['deps']} ms; billingos adds {len(extra)} "
            f"modules of its own ({', '.join(roots)})",
        )
    ]
    for peer in PEERS:
        name = f"peer: import {peer} / import billingos"
        if peer in times:
            rows.append(
                Row.measured(name, ratios(times[peer], times["billingos"]), note=f"{peer} {ms[peer]} ms")
            )
        else:
            rows.append(
                Row.skipped(name, "not measured in a smoke run" if ctx.smoke else f"{peer} not installed")
            )
    return rows
