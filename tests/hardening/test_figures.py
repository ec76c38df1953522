"""The hardening figures: in a file after every run, in the terminal summary only when asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import conftest


class Reporter:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def section(self, title: str) -> None:
        self.lines.append(f"== {title} ==")

    def write_line(self, line: str) -> None:
        self.lines.append(line)


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def mkdir(self, name: str) -> Path:
        path = self.root / "d" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


class Config:
    def __init__(self, cache: Cache | None, *, show: bool) -> None:
        self.cache = cache
        self.show = show

    def getoption(self, name: str) -> Any:
        assert name == "hardening_figures"
        return self.show


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines = ["test_a: 1 000 events in 0.5 s", "test_b: p99 2 ms"]
    monkeypatch.setattr(conftest, "_FIGURES", lines)
    return lines


def test_a_default_run_writes_the_figures_to_a_file_and_prints_nothing(
    figures: list[str], tmp_path: Path
) -> None:
    reporter = Reporter()

    conftest.pytest_terminal_summary(reporter, Config(Cache(tmp_path), show=False))

    assert reporter.lines == []
    assert (tmp_path / "d" / "billingos" / "hardening-figures.txt").read_text() == "".join(
        f"{line}\n" for line in figures
    )


def test_the_flag_prints_them_in_a_section_of_the_summary(figures: list[str]) -> None:
    reporter = Reporter()

    conftest.pytest_terminal_summary(reporter, Config(None, show=True))

    assert reporter.lines == ["== hardening figures ==", *figures]


def test_the_option_is_registered(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.getoption("hardening_figures") in (False, True)
