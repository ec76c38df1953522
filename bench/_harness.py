"""The measuring kit every scenario shares: rows, interleaved timing, median and spread, a loopback server.

A scenario is a function ``run(ctx: Context) -> list[Row | dict]``. Each row is one figure::

    Row(name="check_entitlement: SDK / raw httpx2", figure=1.18, unit="×", goal="≤ 1.25", met=True,
        spread=(1.12, 1.31))

A plain dict with the same keys is accepted too (``Row.coerce``). Figures are ratios measured in one run
whenever the scenario allows it: the two sides are timed in alternating batches (A B, B A, A B, ...),
one ratio per repetition, and the row shows the median of those ratios with their range as the spread.
Absolute times on a shared 2-core machine are noise; the ratio of two neighbouring batches is not.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent

Mode = Literal["full", "quick", "smoke"]

# ---------------------------------------------------------------------------------------------
# Rows and goals


@dataclass(frozen=True)
class Goal:
    """A target for a figure: ``Goal("<=", 1.25)``, ``Goal(">=", 50)``, ``Goal("==", 1)``."""

    op: Literal["<=", ">=", "==", "<"]
    limit: float

    def met(self, value: float | None) -> bool | None:
        if value is None or math.isnan(value):
            return None
        if self.op == "<=":
            return value <= self.limit
        if self.op == "<":
            return value < self.limit
        if self.op == ">=":
            return value >= self.limit
        return value == self.limit

    def __str__(self) -> str:
        symbol = {"<=": "≤", ">=": "≥", "==": "=", "<": "<"}[self.op]
        return f"{symbol} {self.limit:g}"


@dataclass(frozen=True)
class Row:
    """One reported figure: what it is, its value, its goal and whether that is met, and its spread.

    ``spread`` is the (lowest, highest) value over the repetitions the figure is the median of.
    ``chart`` puts the row in the PNG; by default every ratio (unit ``×``) with a goal goes there.
    """

    name: str
    figure: float | None
    unit: str = "×"
    goal: str | None = None
    met: bool | None = None
    spread: tuple[float, float] | None = None
    note: str = ""
    chart: bool | None = None
    scenario: str = ""

    @classmethod
    def measured(
        cls,
        name: str,
        samples: Sequence[float],
        unit: str = "×",
        goal: Goal | None = None,
        note: str = "",
        chart: bool | None = None,
    ) -> Row:
        """The median of ``samples`` with their range as the spread, checked against ``goal``."""
        figure = statistics.median(samples) if samples else None
        return cls(
            name=name,
            figure=figure,
            unit=unit,
            goal=None if goal is None else f"{goal} {'' if unit == '×' else unit}".rstrip(),
            met=None if goal is None else goal.met(figure),
            spread=(min(samples), max(samples)) if len(samples) > 1 else None,
            note=note,
            chart=chart,
        )

    @classmethod
    def skipped(cls, name: str, why: str, unit: str = "×", goal: Goal | None = None) -> Row:
        return cls(name=name, figure=None, unit=unit, goal=None if goal is None else str(goal), note=why)

    @classmethod
    def coerce(cls, obj: Row | Mapping[str, Any], scenario: str) -> Row:
        """A :class:`Row` from a Row or a dict with the same keys; ``spread`` may be a pair or a str."""
        if isinstance(obj, Row):
            row = obj
        else:
            data = dict(obj)
            spread = data.get("spread")
            if isinstance(spread, str) or spread is None:
                note = data.get("note", "") or ""
                if isinstance(spread, str) and spread:
                    note = f"{note} (spread {spread})".strip()
                data["note"], data["spread"] = note, None
            else:
                data["spread"] = (float(spread[0]), float(spread[1]))
            if data.get("goal") is not None and not isinstance(data["goal"], str):
                goal = data["goal"]
                data["goal"] = str(goal)
                if data.get("met") is None and isinstance(goal, Goal):
                    data["met"] = goal.met(data.get("figure"))
            known = set(cls.__dataclass_fields__)
            row = cls(**{k: v for k, v in data.items() if k in known})
        if not row.scenario:
            row = Row(**{**row.__dict__, "scenario": scenario})
        return row

    @property
    def in_chart(self) -> bool:
        if self.chart is not None:
            return self.chart and self.figure is not None
        return self.unit == "×" and self.goal is not None and self.figure is not None

    @property
    def status(self) -> str:
        if self.figure is None:
            return "skipped"
        if self.met is None:
            return "-"
        return "met" if self.met else "MISSED"

    def figure_text(self) -> str:
        return "—" if self.figure is None else f"{fmt(self.figure)} {self.unit}".rstrip()

    def spread_text(self) -> str:
        if self.spread is None:
            return ""
        low, high = self.spread
        return f"{fmt(low)}–{fmt(high)}"


def fmt(value: float) -> str:
    """A figure with about three significant digits: 1.18, 12.3, 4 510, 0.00123."""
    if value == 0 or math.isnan(value) or math.isinf(value):
        return str(value)
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}".replace(",", " ")
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}".replace(",", " ")
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


# ---------------------------------------------------------------------------------------------
# The run context


@dataclass
class Context:
    """What a scenario needs to know about this run: how long it may take."""

    mode: Mode = "full"
    log: Callable[[str], None] = field(default=lambda line: print(line, flush=True))

    @property
    def quick(self) -> bool:
        return self.mode != "full"

    @property
    def smoke(self) -> bool:
        return self.mode == "smoke"

    def pick(self, full: int, quick: int, smoke: int) -> int:
        """A count for this mode: ``ctx.pick(full=2000, quick=400, smoke=20)``."""
        return {"full": full, "quick": quick, "smoke": smoke}[self.mode]

    @property
    def reps(self) -> int:
        """Repetitions of each interleaved measurement (the median is reported)."""
        return self.pick(9, 5, 2)


# ---------------------------------------------------------------------------------------------
# Timing


def _order(names: Sequence[str], rep: int) -> list[str]:
    """Rotate the order every repetition (A B, B A, ...) so neither side always runs first."""
    shift = rep % len(names)
    return list(names[shift:]) + list(names[:shift])


def interleave(
    batches: Mapping[str, Callable[[], float]], reps: int, warmup: bool = True
) -> dict[str, list[float]]:
    """Run each batch once per repetition, alternating; each batch returns its figure (e.g. s/call).

    A batch is run once more before the first repetition, unrecorded, when ``warmup`` is set.
    """
    names = list(batches)
    if warmup:
        for name in names:
            batches[name]()
    results: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in _order(names, rep):
            gc.collect()
            results[name].append(batches[name]())
    return results


async def interleave_async(
    batches: Mapping[str, Callable[[], Awaitable[float]]], reps: int, warmup: bool = True
) -> dict[str, list[float]]:
    """:func:`interleave` for batches that are coroutines (one event loop for all of them)."""
    names = list(batches)
    if warmup:
        for name in names:
            await batches[name]()
    results: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in _order(names, rep):
            gc.collect()
            results[name].append(await batches[name]())
    return results


def ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Per-repetition ratios of two interleaved series (neighbouring batches share the machine's mood)."""
    return [a / b for a, b in zip(numerator, denominator, strict=True) if b > 0]


def per_call(call: Callable[[], object], n: int) -> float:
    """Seconds per call of ``n`` calls in a row."""
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


async def per_call_async(call: Callable[[], Awaitable[object]], n: int) -> float:
    """Seconds per call of ``n`` awaited calls in a row."""
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - start) / n


def us(seconds: float) -> str:
    return f"{fmt(seconds * 1e6)} µs"


def median_us(samples: Sequence[float]) -> str:
    """``"212 µs"``: the median of per-call seconds, for a row's note."""
    return us(statistics.median(samples))


# ---------------------------------------------------------------------------------------------
# Memory


def rss_bytes() -> int:
    """The resident set size of this process now (Linux: /proc; elsewhere the peak, for lack of better)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The highest resident set size this process reached.

    On Linux, ``VmHWM`` from /proc: ``ru_maxrss`` survives ``exec``, so a child started by a big parent
    would report the parent's size.
    """
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
            return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# ---------------------------------------------------------------------------------------------
# Child processes: fresh interpreters, and the embedded server in its own process


# Children keep their bytecode in a cache outside the repository (no __pycache__ left in the tree):
# every module, ours and the dependencies alike, is compiled once and then loaded from .pyc, as from
# an installed wheel (pip compiles at install). Without it an editable billingos was recompiled from
# source in every fresh interpreter while site-packages loaded .pyc, inflating scenario 7 by ~15 ms.
_CHILD_ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "billingos-bench-pycache"),
}


def run_child(args: Sequence[str], timeout: float = 300) -> Any:
    """Run ``python <args>`` from the repository root and return the JSON its last stdout line holds."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_CHILD_ENV,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Server:
    """A seeded ``FakeBillingOS`` serving on loopback from its own process (its own GIL).

    Every customer ``user_<i>`` is subscribed to one plan granting each feature 10¹² units.
    ``count(route)`` and ``total(feature)`` ask the server process what it received.
    """

    def __init__(self, proc: subprocess.Popen[str], url: str, secret_key: str) -> None:
        self._proc = proc
        self.url = url
        self.secret_key = secret_key

    def _ask(self, line: str) -> Any:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        return json.loads(self._proc.stdout.readline())

    def count(self, route: str) -> int:
        """Requests received so far on ``route`` (``"GET /v1/usage/check"``)."""
        return int(self._ask(f"count {route}"))

    def total(self, feature: str) -> float:
        """Units of ``feature`` counted so far, summed over every customer."""
        return float(self._ask(f"total {feature}"))


@contextlib.contextmanager
def loopback_server(customers: int = 1, features: Sequence[str] = ("api_calls",)) -> Iterator[Server]:
    """Start :class:`Server` in a child process; stop it when the block exits."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._harness", "serve", str(customers), ",".join(features)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        hello = proc.stdout.readline()
        if not hello:
            raise RuntimeError("the loopback server did not start")
        info = json.loads(hello)
        yield Server(proc, info["url"], info["secret_key"])
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _serve_main(customers: int, features: list[str]) -> None:
    """The server process: seed, serve, answer ``count``/``total`` questions on stdin until EOF."""
    from billingos.testing import FakeBillingOS

    fake = FakeBillingOS(rate_limits=None)
    for feature in features:
        fake.add_feature(feature, "usage_quota")
    plan = fake.add_product("Bench", features=dict.fromkeys(features, 10**12))
    for i in range(customers):
        fake.add_customer(f"user_{i}")
        fake.subscribe(f"user_{i}", plan.price_id)
    with fake.serve() as url:
        print(json.dumps({"url": url, "secret_key": fake.secret_key}), flush=True)
        for line in sys.stdin:
            command, _, arg = line.strip().partition(" ")
            if command == "count":
                answer: float = len(fake.requests_to(arg))
            elif command == "total":
                answer = sum(fake.usage_of(f"user_{i}", arg) for i in range(customers))
            else:
                answer = -1
            print(json.dumps(answer), flush=True)


# ---------------------------------------------------------------------------------------------
# The machine


VERSIONED = (
    "billingos",
    "httpx2",
    "httpcore2",
    "anyio",
    "tenacity",
    "attrs",
    "cattrs",
    "uvicorn",
    "starlette",
    "openai",
    "stripe",
    "aiohttp",
    "matplotlib",
)


def versions() -> dict[str, str]:
    """Installed versions of the packages the figures depend on (absent ones left out)."""
    found = {}
    for name in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def machine() -> dict[str, str]:
    """CPU, cores, OS, load and Python: what the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "os": platform.platform(),
        "load": load,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        _serve_main(int(sys.argv[2]), sys.argv[3].split(","))
    else:
        sys.exit("usage: python -m bench._harness serve CUSTOMERS FEATURE[,FEATURE...]")


# ---------------------------------------------------------------------------------------------
# The report: docs/performance.md and docs/performance.png


@dataclass
class Result:
    """What one scenario produced: its rows, or why it was skipped, or the error it raised."""

    scenario: Any  # bench.Scenario
    rows: list[Row]
    seconds: float = 0.0
    doc: str = ""
    skipped: str = ""
    error: str = ""


METHOD = """\
Every figure compares the SDK with what a user would otherwise write, measured in the same run: the two
sides run in alternating batches (A B, B A, A B, ...), each batch gives one figure, and each row shows
the median over the repetitions with the lowest and highest value as its spread. Absolute times on a
shared machine are noise; ratios of neighbouring batches are not. Goals are reported, never enforced:
`python -m bench` exits 0 whether they are met or not."""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(
    results: Sequence[Result], *, mode: Mode, wall: float, stamp: Any, root: Path = ROOT
) -> tuple[Path, Path | None]:
    """Write ``docs/performance.md`` (and the chart ``docs/performance.png`` when matplotlib is there)."""
    from .chart import draw

    docs = root / "docs"
    docs.mkdir(exist_ok=True)
    rows = [row for result in results for row in result.rows]
    png = docs / "performance.png"
    drawn = draw([r for r in rows if r.in_chart], png, title=f"billingos {versions().get('billingos', '')}")
    host = machine()
    met = sum(1 for r in rows if r.status == "met")
    missed = sum(1 for r in rows if r.status == "MISSED")
    lines = [
        "# Performance",
        "",
        f"Generated by `python -m bench{' --quick' if mode == 'quick' else ''}` ({mode} run) on "
        f"{stamp:%Y-%m-%d %H:%M} UTC in {wall:.0f} s: {met} goals met, {missed} missed. "
        "Do not edit by hand; regenerate with `nox -s bench` (or `python -m bench`).",
        "",
        METHOD,
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {_cell(v)} |" for k, v in host.items()),
        *(f"| {k} | {v} |" for k, v in versions().items()),
        "",
        "## Summary",
        "",
    ]
    if drawn:
        lines += ["![The main ratios against their goals](performance.png)", ""]
    lines += [
        "Every figure that has a goal; the sections below have them all, with notes.",
        "",
        "| # | Figure | Value | Spread (min–max) | Goal | |",
        "|---|---|---:|---|---|---|",
    ]
    for result in results:
        for row in result.rows:
            if row.goal is None:
                continue
            lines.append(
                f"| {result.scenario.number} | {_cell(row.name)} | {row.figure_text()} | "
                f"{row.spread_text()} | {row.goal or ''} | {row.status if row.status != '-' else ''} |"
            )
        if result.skipped or result.error:
            lines.append(
                f"| {result.scenario.number} | {result.scenario.title} | — | | | "
                f"{'skipped: ' + _cell(result.skipped) if result.skipped else 'error'} |"
            )
    for result in results:
        scenario = result.scenario
        lines += ["", f"## {scenario.number}. {scenario.title}", ""]
        if result.doc:
            lines += [result.doc, ""]
        if result.skipped:
            lines += [f"Skipped: {result.skipped}.", ""]
            continue
        if result.error:
            lines += [f"Failed: `{_cell(result.error)}`.", ""]
            continue
        lines += ["| Figure | Value | Spread (min–max) | Goal | | Notes |", "|---|---:|---|---|---|---|"]
        for row in result.rows:
            lines.append(
                f"| {_cell(row.name)} | {row.figure_text()} | {row.spread_text()} | {row.goal or ''} | "
                f"{row.status if row.status != '-' else ''} | {_cell(row.note)} |"
            )
        lines += ["", f"({result.seconds:.0f} s)"]
    md = docs / "performance.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md, png if drawn else None
