"""The import rule of the house, read from the source (no import is executed):

- ``envs`` (the environments' rules) imports neither ``agents`` nor ``telemetry``;
- ``telemetry`` (client and daemon) never imports ``agents``;
- no import circle among the project's modules, counting imports inside functions too (only
  ``if TYPE_CHECKING:`` imports, which never run, are left out).

``from package import submodule`` counts as importing the submodule, not the package's
``__init__``, since that is what it loads.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agents", "envs", "telemetry", "bench")
#: (importer prefix, forbidden prefixes)
RULES = (("envs", ("agents", "telemetry")), ("telemetry", ("agents",)))


def modules() -> dict[str, Path]:
    """Every module of the project's packages by dotted name (packages by their own name)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _absolute(name: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules that ``name`` imports anywhere but under ``if TYPE_CHECKING:``."""
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                targets.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                module = _absolute(name, path, child)
                submodules = [f"{module}.{alias.name}" for alias in child.names if f"{module}.{alias.name}" in known]
                targets.update(submodules)
                if len(submodules) < len(child.names):
                    targets.add(module)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    resolved = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def test_layers_only_point_down(graph: dict[str, set[str]]) -> None:
    wrong = sorted(f"{name} imports {target}" for name, targets in graph.items() for target in targets
                   for importer, forbidden in RULES
                   if (name + ".").startswith(importer + ".") and any((target + ".").startswith(f + ".") for f in forbidden))
    assert wrong == [], "imports against the layer rule:\n" + "\n".join(wrong)


def test_no_import_circles(graph: dict[str, set[str]]) -> None:
    circles = _strongly_connected(graph)
    assert circles == [], "import circles:\n" + "\n".join(" -> ".join(sorted(c)) for c in circles)


def test_the_checks_see_a_circle_and_a_wrong_layer() -> None:
    """The checks themselves can fail: a made-up graph with both faults is caught."""
    made_up = {"envs.a": {"agents.b"}, "agents.b": {"agents.c"}, "agents.c": {"agents.b"}}
    assert _strongly_connected(made_up) == [["agents.b", "agents.c"]]
    assert any(("envs.a" + ".").startswith(importer + ".") and "agents" in forbidden for importer, forbidden in RULES)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the groups of two or more modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups
