"""The one chart of the report: each main ratio as a bar, its spread as an error bar, its goal as a mark.

Headless (matplotlib's Agg backend); matplotlib is a bench dependency only. Without it the report is
written without the chart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ._harness import Row

CLIP = 10.0
_NUMBER = re.compile(r"[-+]?\d[\d ]*(?:\.\d+)?(?:e[-+]?\d+)?")


def goal_limit(goal: str | None) -> float | None:
    """The number in a goal string: ``"≤ 1.25"`` -> 1.25, ``"≥ 50"`` -> 50."""
    if not goal:
        return None
    match = _NUMBER.search(goal)
    return float(match.group().replace(" ", "")) if match else None


def draw(rows: Sequence[Row], path: Path, title: str = "") -> bool:
    """Write the chart of ``rows`` to ``path``; False (and nothing written) without matplotlib or rows."""
    if not rows:
        return False
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{row.scenario}. {row.name}" for row in rows]
    values = [float(row.figure or 0) for row in rows]
    limits = [goal_limit(row.goal) for row in rows]
    spreads = [row.spread or (v, v) for row, v in zip(rows, values, strict=True)]
    # One outlier (the cache's ~1000x speed-up) would squash every other bar: the axis covers the
    # ratios up to CLIP, and a bar beyond it is drawn to the edge with its value written out.
    shown = [x for v, lim, (lo, hi) in zip(values, limits, spreads, strict=True) for x in (v, hi, lim or v)]
    right = max([x for x in shown if x <= CLIP] or [2.0]) * 1.6
    left = (
        min([x for v, (lo, _) in zip(values, spreads, strict=True) for x in (v, lo) if x > 0] or [1.0]) / 1.6
    )
    colours = ["#2e7d32" if row.met else "#c62828" if row.met is False else "#757575" for row in rows]

    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.6), dpi=110)
    y = list(range(len(rows)))[::-1]
    for yi, row, value, limit, (lo, hi), colour in zip(
        y, rows, values, limits, spreads, colours, strict=True
    ):
        clipped = value > right
        ax.barh(yi, min(value, right), color=colour, alpha=0.85, height=0.6)
        if not clipped and (lo, hi) != (value, value):
            ax.plot([lo, hi], [yi, yi], color="#212121", linewidth=1)
            ax.plot([lo, lo], [yi - 0.12, yi + 0.12], color="#212121", linewidth=1)
            ax.plot([hi, hi], [yi - 0.12, yi + 0.12], color="#212121", linewidth=1)
        if limit is not None and left < limit < right:
            ax.plot([limit], [yi], marker="D", color="#1565c0", markersize=6, zorder=3)
        label = f"{row.figure_text()}" + (f"  (goal {row.goal})" if clipped else "")
        if clipped:
            ax.text(right / 1.03, yi, label + " ▶", va="center", ha="right", fontsize=8, color="white")
        else:
            ax.text(max(value, hi, limit or 0) * 1.06, yi, label, va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    ticks = [t for t in (0.1, 0.25, 0.5, 0.8, 1, 1.25, 1.5, 2, 3, 5, 10, 20) if left <= t <= right]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.axvline(1.0, color="#9e9e9e", linewidth=0.8, linestyle=":")
    ax.set_xlabel("ratio (log scale).  bar: median;  line: lowest to highest repetition;  blue diamond: goal")
    ax.set_title(f"{title}: green met, red missed, grey no goal".strip(": "), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
