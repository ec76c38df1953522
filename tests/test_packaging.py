"""What PyPI shows and installs: the LICENSE, the URLs, the README, the extras and the dependency groups.

The build itself (``python -m build``, ``twine check --strict``, the LICENSE inside the wheel and sdist)
is .ci/check_dist.py, which .ci/run runs; these tests read the sources it builds from.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from billingos._cli._commands import DOCS_URL

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "https://github.com/billingos/billingos-python"
DOCS = "https://billingos.github.io/billingos-python/"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_license_file_is_the_mit_license_the_metadata_names() -> None:
    project = _pyproject()["project"]

    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text


def test_project_urls_name_the_repository_and_the_documentation_site() -> None:
    urls = _pyproject()["project"]["urls"]

    assert urls["Repository"] == REPOSITORY
    assert urls["Homepage"] == REPOSITORY
    assert urls["Issues"] == f"{REPOSITORY}/issues"
    assert urls["Changelog"] == f"{REPOSITORY}/blob/main/CHANGELOG.md"
    assert urls["Documentation"] == DOCS
    mkdocs = (ROOT / "mkdocs.yml").read_text()
    assert f"site_url: {DOCS}\n" in mkdocs
    assert f"repo_url: {REPOSITORY}\n" in mkdocs


def test_contributor_tools_are_dependency_groups_not_a_published_extra() -> None:
    pyproject = _pyproject()
    extras = pyproject["project"]["optional-dependencies"]
    groups = pyproject["dependency-groups"]

    assert "dev" not in extras
    assert set(extras) == {"testing", "fastapi", "aiohttp", "cli", "otel", "redis"}
    included = {item["include-group"] for item in groups["dev"] if isinstance(item, dict)}
    assert included == {"test", "lint", "typecheck"}
    tools = {re.split(r"[<>=\[;]", item)[0] for item in groups["dev"] if isinstance(item, str)}
    assert {"build", "twine", "nox"} <= tools


def test_the_testing_extra_declares_what_python_m_billingos_demo_needs() -> None:
    """The demo is a command of the CLI: click comes with the extra, not by way of uvicorn."""
    extras = _pyproject()["project"]["optional-dependencies"]

    assert set(extras["cli"]) <= set(extras["testing"])
    assert {"starlette>=0.37", "uvicorn>=0.30"} <= set(extras["testing"])


def test_the_readme_has_no_relative_link_and_shows_the_pypi_install_line() -> None:
    readme = (ROOT / "README.md").read_text()

    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert relative == []
    assert all(t.startswith(f"{REPOSITORY}/") for t in targets if "billingos-python/blob" in t)
    assert "\npip install billingos\n" in readme


def test_the_readme_shows_the_exact_test_command_ci_runs() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    command = re.search(r'^TEST_COMMAND="(.+)"$', run, re.MULTILINE)
    assert command is not None

    assert "--group dev" in command.group(1)
    assert command.group(1) in (ROOT / "README.md").read_text()


def test_billingos_help_points_at_the_documentation_site() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "billingos", "--help"], capture_output=True, text=True, timeout=60, check=True
    )

    assert f"{DOCS}cli/" == DOCS_URL
    assert f"Docs: {DOCS_URL}\n" in proc.stdout
    assert "docs/cli.md" not in proc.stdout
    assert (ROOT / "docs" / "cli.md").is_file()  # the page the URL is built from
