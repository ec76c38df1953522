"""Developer tasks. ``nox`` runs lint, typecheck and the tests on every Python 3.11-3.14 it finds.

    nox -l                           # list the sessions
    nox                              # lint, typecheck, tests-3.11 ... tests-3.14
    nox -s tests-3.12 -- -k retry    # arguments after -- go to pytest
    nox -s tests_py314 -- -k retry   # 3.14 in a chroot when PATH has no python3.14 (root; not run by default)
    nox -s build                     # build the sdist and wheel, check them (not run by default)
    nox -s bench -- --quick          # the benchmarks and docs/performance.md (not run by default)
    nox -s docs                      # the documentation site, built strict into site/ (not run by default)

A Python that is not installed is skipped locally (nox errors instead when ``CI`` is set). With
pyenv, ``pyenv global 3.11.7 3.12.1 3.13.0`` puts 3.11-3.13 on PATH; pyenv here has no 3.14, so
``tests-3.14`` is skipped and ``tests_py314`` runs the suite in the Debian chroot with CPython 3.14
that .ci/run uses (.ci/pytest-py314). Nox uses uv to make its virtualenvs when uv is installed (the
``dev`` dependency group brings it), else virtualenv. Each session installs the PEP 735 group it runs
(pyproject.toml, ``[dependency-groups]``); ``dev`` includes them all.
"""

from __future__ import annotations

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.download_python = "never"  # only PyPI is reachable here: skip a missing Python, don't fetch one

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)  # from the trove classifiers: 3.11 ... 3.14


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, with the same command as the README and .ci/run."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(venv_backend="none", default=False)
def tests_py314(session: nox.Session) -> None:
    """The test suite on CPython 3.14 in a Debian sid chroot, as .ci/run runs it (needs root, ../shared)."""
    session.run("bash", ".ci/pytest-py314", *session.posargs, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "typecheck"))
    session.run("mypy", "--strict", "billingos")


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Build the sdist and wheel and check them as PyPI will (.ci/check_dist.py, which .ci/run runs too)."""
    session.install("build>=1.2", "twine>=6.1")
    session.run("python", ".ci/check_dist.py")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The benchmarks: every scenario's figure and goal, then docs/performance.md and .png (issue 5).

    nox -s bench                    # the full run, under 10 minutes
    nox -s bench -- --quick         # under a minute; other options: python -m bench --help
    Goals are reported, never enforced: the session fails only if a scenario crashes.
    """
    session.install("-e", ".[testing,aiohttp,redis]", *nox.project.dependency_groups(PYPROJECT, "bench"))
    session.run("python", "-m", "bench", *session.posargs)


@nox.session(default=False)
def docs(session: nox.Session) -> None:
    """Build the documentation site (mkdocs-material + mkdocstrings) in strict mode: a warning fails it.

    nox -s docs                     # builds into site/ (git-ignored)
    nox -s docs -- serve            # or any other mkdocs command: serve the site with live reload
    """
    # ruff (the lint group): mkdocstrings formats the separate signatures with it.
    groups = nox.project.dependency_groups(PYPROJECT, "docs", "lint")
    session.install("-e", ".[testing,fastapi]", *groups)
    quiet = {"NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about its successor, on every build
    if session.posargs:
        session.run("mkdocs", *session.posargs, env=quiet)
    else:
        session.run("mkdocs", "build", "--strict", "--site-dir", "site", env=quiet)
