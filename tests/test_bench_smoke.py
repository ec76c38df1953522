"""The benchmark harness runs (its figures are not checked here: goals never fail a test or CI).

``python -m bench --smoke`` runs every scenario with tiny counts (about 20 s); ``--quick`` (under a
minute) would double the suite's time for no more coverage of the harness itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_run_exits_zero_and_reports_every_scenario() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-report"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "goal(s) met" in proc.stdout
    assert "crashed" not in proc.stdout
