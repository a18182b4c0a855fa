"""The package's modules import each other without a cycle, imports inside functions included (only
``if TYPE_CHECKING:`` imports are left out: they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "ernievil_ds"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module name an import statement of ``tree`` names, wherever it stands, except under
    ``if TYPE_CHECKING:``; ``from a import b`` names both ``a`` and ``a.b`` (``b`` may be a module)."""
    names: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if is_type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports by name. (Python runs a package's ``__init__`` before
    any module inside it; that order is not a cycle, and the package's own imports are edges of its own.)"""
    paths = {module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}
    graph = {}
    for module, path in paths.items():
        names = imported_names(ast.parse(path.read_text()), module, path.name == "__init__.py")
        graph[module] = {name for name in names & paths.keys() if name != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a closed path of modules, or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_deferred_imports_and_skips_type_checking_ones():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ernievil_ds.runs import RunFolder\n"
        "def f():\n    from ernievil_ds.hub import push\n    import ernievil_ds.data.sampler\n"
        "from . import errors\n"
    )
    names = imported_names(ast.parse(source), "ernievil_ds.pretraining.pretrain", is_package=False)
    assert {"ernievil_ds.hub.push", "ernievil_ds.data.sampler", "ernievil_ds.pretraining.errors"} <= names
    assert "ernievil_ds.runs" not in names


def test_find_cycle_finds_a_deferred_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_ernievil_ds_has_no_import_cycle():
    graph = import_graph()
    assert {"ernievil_ds.runs", "ernievil_ds.hub.push", "ernievil_ds.pretraining.pretrain"} <= graph.keys()
    assert "ernievil_ds.hub.push" in graph["ernievil_ds.pretraining.pretrain"]  # a deferred import, seen
    cycle = find_cycle(graph)
    if cycle is not None:
        pytest.fail("import cycle: " + " -> ".join(cycle))
