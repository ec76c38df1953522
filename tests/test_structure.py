"""The package's import graph has no circles: every module depends only on what it calls.

Every ``import`` counts, at module level, under ``TYPE_CHECKING`` and inside functions (a lazy import
is still a dependency). A circle means two modules cannot be understood, tested or changed apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

import billingos

PACKAGE = Path(billingos.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The billingos modules ``path`` imports (relative imports resolved; ``from . import x`` counted)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("billingos"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("billingos"):
                continue
            found.add(target)
            for alias in node.names:  # `from . import _errors` imports a module
                if (PACKAGE.parent / (target.replace(".", "/") + "/" + alias.name + ".py")).exists():
                    found.add(f"{target}.{alias.name}")
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    # A package's __init__ re-exporting its own submodules is how a public surface is made, not a circle.
    return {
        name: {
            t
            for t in _imports(path)
            if t in modules and not (path.name == "__init__.py" and t.startswith(name + "."))
        }
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_client_the_recorder_and_the_blocking_facade_form_no_circle() -> None:
    graph = _graph()
    assert "billingos._client" not in graph["billingos._recorder"]
    assert "billingos._sync" not in graph["billingos._recorder"]
    assert "billingos._recorder" in graph["billingos._client"]  # the client makes recorders: one direction


def test_no_module_of_the_package_imports_itself_back() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
