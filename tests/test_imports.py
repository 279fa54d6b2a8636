"""The `autoresearch` package has no import cycles: its modules depend on each other one way only.

Every module of the package is parsed with `ast` (nothing is imported) and each `import` and
`from ... import` statement anywhere in it is an edge: at module level, inside a function (an
import placed there only to dodge a cycle is still the cycle), under `if TYPE_CHECKING:`, absolute
or relative. `from autoresearch import x` is an edge to the module `autoresearch.x` when x is one,
else to the package `autoresearch`. An edge goes to the module named, not to the packages above
it (Python runs their `__init__` too, but that is their own dependency, checked as theirs).

What this does NOT catch: imports built at run time (`importlib.import_module(name)`, `__import__`,
`runpy`), which the package uses only for the trial's own files, not for its own modules.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "autoresearch"


@dataclass(frozen=True)
class Edge:
    """`importer` imports `imported` at `line` (inside a function when `in_function`)."""

    importer: str
    imported: str
    line: int
    in_function: bool

    def describe(self) -> str:
        where = "in a function" if self.in_function else "at module level"
        return f"{self.importer} -> {self.imported} (line {self.line}, {where})"


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package (a package is its __init__)."""
    root = package_dir.parent
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _absolute(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute name a (possibly relative) `from` statement refers to."""
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, importer: str, is_package: bool, known: set[str]) -> None:
        self.importer, self.is_package, self.known = importer, is_package, known
        self.edges: list[Edge] = []
        self._function_depth = 0

    def _add(self, name: str, line: int) -> None:
        if name in self.known:
            self.edges.append(Edge(self.importer, name, line, self._function_depth > 0))

    def _nested(self, node: ast.AST) -> None:
        self._function_depth += 1
        self.generic_visit(node)
        self._function_depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _absolute(node.module, node.level, self.importer, self.is_package)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.known else base, node.lineno)


def import_edges(package_dir: Path) -> list[Edge]:
    """Every import between two modules of the package, in file and line order."""
    modules = module_names(package_dir)
    edges = []
    for name, path in modules.items():
        collector = _ImportCollector(name, path.name == "__init__.py", set(modules))
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        edges.extend(edge for edge in collector.edges if edge.imported != name)
    return edges


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle (as its edges, in order) through each strongly connected group of modules."""
    graph: dict[str, list[Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, []).append(edge)
        graph.setdefault(edge.imported, [])

    # Tarjan's strongly connected components, iterative so a deep chain cannot hit the recursion limit.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            successors = graph[node]
            if position < len(successors):
                work.append((node, position + 1))
                target = successors[position].imported
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])

    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # Breadth-first from `start` inside the component back to `start`: the shortest cycle through it.
        previous: dict[str, Edge] = {}
        frontier = [start]
        found: Edge | None = None
        while frontier and found is None:
            next_frontier = []
            for node in frontier:
                for edge in graph[node]:
                    if edge.imported == start:
                        found = edge
                        break
                    if edge.imported in members and edge.imported not in previous:
                        previous[edge.imported] = edge
                        next_frontier.append(edge.imported)
                if found:
                    break
            frontier = next_frontier
        assert found is not None  # a strongly connected group always has a cycle through each member
        path = [found]
        while path[0].importer != start:
            path.insert(0, previous[path[0].importer])
        cycles.append(path)
    return cycles


def _report(cycles: list[list[Edge]]) -> str:
    return "\n".join("import cycle:\n  " + "\n  ".join(edge.describe() for edge in cycle) for cycle in cycles)


def test_the_package_has_no_import_cycles():
    edges = import_edges(PACKAGE_DIR)
    assert len(edges) > 50, "the parser found almost no imports: it is not reading the package"
    cycles = find_cycles(edges)
    assert not cycles, _report(cycles)


def test_the_known_layers_are_seen(tmp_path):
    """Edges this test relies on are really collected (a parser that saw nothing would pass above)."""
    edges = {(edge.importer, edge.imported) for edge in import_edges(PACKAGE_DIR)}
    assert ("autoresearch.cli", "autoresearch.loop") in edges  # function-level `from autoresearch.loop import`
    assert ("autoresearch.cli", "autoresearch.render") in edges  # function-level `from autoresearch import render`
    assert ("autoresearch.agent.dry", "autoresearch.agent.factory") in edges
    assert ("autoresearch.agent", "autoresearch.agent.factory") in edges  # the package's __init__


def _write(package: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_function_level_cycle_is_found_and_named(tmp_path):
    package = tmp_path / "pkg"
    _write(package, {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "import os\n\ndef late():\n    from pkg.a import thing\n    return thing\n",
        "c.py": "from pkg import a, b\n",  # depends on the cycle but is not part of it
    })
    cycles = find_cycles(import_edges(package))
    assert len(cycles) == 1
    described = _report(cycles)
    assert "pkg.a -> pkg.b (line 1, at module level)" in described
    assert "pkg.b -> pkg.a (line 4, in a function)" in described
    assert "pkg.c" not in described


def test_relative_and_longer_cycles_are_found(tmp_path):
    package = tmp_path / "pkg"
    _write(package, {
        "__init__.py": "",
        "sub/__init__.py": "from .x import value\n",
        "sub/x.py": "from ..y import other\nvalue = 1\n",
        "y.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.z\nother = 2\n",
        "z.py": "from . import sub\n",
    })
    cycles = find_cycles(import_edges(package))
    assert [[edge.importer for edge in cycle] for cycle in cycles] == [["pkg.sub", "pkg.sub.x", "pkg.y", "pkg.z"]]


def test_a_package_without_cycles_passes(tmp_path):
    package = tmp_path / "pkg"
    _write(package, {
        "__init__.py": "from pkg import a\n",
        "a.py": "from pkg import b\n",
        "b.py": "import pkg.c\n",
        "c.py": "x = 1\n",
    })
    assert find_cycles(import_edges(package)) == []
