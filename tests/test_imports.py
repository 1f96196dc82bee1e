"""The package's import graph has no cycles: its floors run settings/validation -> data -> models/training ->
orchestration (pretrained, explorers, experiments) -> plots/widgets/cli."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ptft_helpers"


def imports_of(path: Path) -> set[str]:
    """The package modules that ``path`` imports (relative imports, at any depth in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import x, y
                found.update(alias.name for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {p.stem: imports_of(p) & modules for p in PACKAGE.glob("*.py")}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_in_the_package():
    edges = graph()
    assert {"data", "training", "pretrained", "explorers", "widgets"} <= set(edges)
    assert "training" in edges["pretrained"]  # the graph is really read
    assert find_cycle({k: v - {"__init__"} for k, v in edges.items()}) is None


def test_init_docstring_names_every_module():
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    missing = [m for m in sorted(graph()) if m not in ("__init__", "__main__") and f"``{m}``" not in doc]
    assert not missing, f"ptft_helpers/__init__.py does not list: {missing}"
