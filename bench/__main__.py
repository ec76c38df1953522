"""``python -m bench``: run the scenarios, print each figure with its goal, write docs/performance.md.

    python -m bench                  # the full run (under 10 minutes), then the report and chart
    python -m bench --quick          # fewer repetitions (under a minute); still writes the report
    python -m bench --only cache,7   # some scenarios, by name or number (no report unless --report)
    python -m bench --smoke          # tiny counts: checks the harness runs (the test suite does this)

The exit status is 0 whether goals are met or not (a slow machine must not fail CI); it is 1 only when a
scenario crashed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import sys
import time
import traceback
from collections.abc import Sequence

from . import SCENARIOS, Scenario
from ._harness import ROOT, Context, Mode, Result, Row, write_report


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="fewer repetitions: under a minute")
    speed.add_argument("--smoke", action="store_true", help="tiny counts: only checks that it runs")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="scenario names or numbers, comma-separated",
    )
    parser.add_argument("--no-report", action="store_true", help="do not write docs/performance.{md,png}")
    parser.add_argument("--report", action="store_true", help="write the report even with --only or --smoke")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser.parse_args(argv)


def _selected(only: list[str]) -> list[Scenario]:
    wanted = {w.strip() for item in only for w in item.split(",") if w.strip()}
    if not wanted:
        return list(SCENARIOS)
    unknown = wanted - {s.name for s in SCENARIOS} - {s.number for s in SCENARIOS}
    if unknown:
        names = ", ".join(f"{s.number}/{s.name}" for s in SCENARIOS)
        sys.exit(f"unknown scenario(s) {sorted(unknown)}; known: {names}")
    return [s for s in SCENARIOS if s.name in wanted or s.number in wanted]


def _load(scenario: Scenario) -> tuple[object | None, str]:
    """The scenario function, or ``None`` and why it is skipped (its module or a dependency is absent)."""
    module_name, _, function = scenario.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        return None, f"not available ({exc.name} is not installed or not written yet)"
    run = getattr(module, function, None)
    if run is None:
        return None, f"{module_name} has no {function}()"
    return run, ""


def run_scenario(scenario: Scenario, ctx: Context) -> Result:
    started = time.perf_counter()
    run, why = _load(scenario)
    if run is None:
        print(f"   skipped: {why}", flush=True)
        return Result(scenario, [], skipped=why)
    assert callable(run)
    doc = inspect.getdoc(run) or ""
    try:
        takes_ctx = bool(inspect.signature(run).parameters)
        produced = run(ctx) if takes_ctx else run()
        rows = [Row.coerce(r, scenario.number) for r in produced or []]
    except Exception:
        error = traceback.format_exc()
        print(error, file=sys.stderr, flush=True)
        return Result(scenario, [], error=error.strip().splitlines()[-1], doc=doc)
    seconds = time.perf_counter() - started
    for row in rows:
        print(_line(row), flush=True)
    print(f"   ({seconds:.1f} s)", flush=True)
    return Result(scenario, rows, seconds=seconds, doc=doc)


def _line(row: Row) -> str:
    spread = f"  [{row.spread_text()}]" if row.spread else ""
    goal = f"  goal {row.goal}" if row.goal else ""
    note = f"  ({row.note})" if row.note else ""
    return f"   {row.name:<52} {row.figure_text():>12}{spread}{goal}  {row.status}{note}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.list:
        for s in SCENARIOS:
            print(f"{s.number}  {s.name:<12} {s.title}  ({s.target})")
        return 0
    mode: Mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    ctx = Context(mode=mode)
    scenarios = _selected(args.only)
    started = time.perf_counter()
    stamp = datetime.datetime.now(datetime.UTC)
    print(f"billingos benchmarks: {mode} run, {len(scenarios)} scenario(s)", flush=True)
    results = []
    for scenario in scenarios:
        print(f"\n{scenario.number}. {scenario.title}", flush=True)
        results.append(run_scenario(scenario, ctx))
    wall = time.perf_counter() - started

    rows = [row for result in results for row in result.rows]
    met = sum(1 for r in rows if r.status == "met")
    missed = [r for r in rows if r.status == "MISSED"]
    crashed = [r.scenario.name for r in results if r.error]
    print(f"\n{met} goal(s) met, {len(missed)} missed, in {wall:.0f} s ({mode} run)")
    for row in missed:
        print(f"   missed: [{row.scenario}] {row.name}: {row.figure_text()} (goal {row.goal})")
    if crashed:
        print(f"   crashed: {', '.join(crashed)}")

    complete = not args.only and mode != "smoke"
    if not args.no_report and (complete or args.report):
        md, png = write_report(results, mode=mode, wall=wall, stamp=stamp, root=ROOT)
        print(f"\nwrote {md.relative_to(ROOT)}" + (f" and {png.relative_to(ROOT)}" if png else " (no chart)"))
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
