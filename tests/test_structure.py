"""The source tree's shape: no import cycles between modules, no module longer than 400 lines.

Every import counts, wherever it stands: a function-local import that closes a loop still ties the
modules together (each needs the other to be understood, tested or moved), it only hides the loop from
Python at start. A module over the limit may stay only when its first lines say it is generated.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
MAX_LINES = 400
GENERATED = re.compile(r"\bgenerated\b", re.IGNORECASE)


@dataclass(frozen=True)
class Edge:
    target: str
    line: int


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under root (a package is its __init__.py)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts:
            names[".".join(parts)] = path
    return names


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> dict[str, Edge]:
    """The modules of the tree that ``module`` imports (anywhere in it), each with its first line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, Edge] = {}

    def add(name: str, line: int) -> None:
        while name and name not in modules:  # `import a.b.attr` or an outside module: the nearest ours
            name = name.rpartition(".")[0]
        if name and name != module and name not in found:
            found[name] = Edge(name, line)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: level 1 is this package, each further dot one package up
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}" if base else alias.name
                add(submodule if submodule in modules else base, node.lineno)
    return found


def import_graph(root: Path) -> tuple[dict[str, Path], dict[str, dict[str, Edge]]]:
    modules = module_names(root)
    return modules, {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, dict[str, Edge]]) -> list[list[str]]:
    """One concrete loop per strongly connected group of modules (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
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
    return [loop_in(graph, set(group)) for group in groups]


def loop_in(graph: dict[str, dict[str, Edge]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, through the group only."""
    first = min(group)
    paths = {first: [first]}
    frontier = [first]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node]):
                if succ == first:
                    return paths[node] + [first]
                if succ in group and succ not in paths:
                    paths[succ] = paths[node] + [succ]
                    following.append(succ)
        frontier = following
    raise AssertionError(f"no loop through {first}")  # a strongly connected group always has one


def describe(loop: list[str], graph: dict[str, dict[str, Edge]]) -> str:
    steps = [f"{a} (line {graph[a][b].line}) -> {b}" for a, b in zip(loop, loop[1:], strict=False)]
    return "import cycle: " + "; ".join(steps)


def too_long(modules: dict[str, Path], max_lines: int = MAX_LINES) -> list[str]:
    out = []
    for name, path in sorted(modules.items()):
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > max_lines and not any(GENERATED.search(line) for line in lines[:3]):
            out.append(f"{name}: {len(lines)} lines (at most {max_lines}, unless its first 3 lines say generated)")
    return out


# --- the tree's own checks -------------------------------------------------------------------------


def test_no_import_cycles_in_src() -> None:
    modules, graph = import_graph(SRC)
    assert len(modules) > 50  # the walk found the tree
    found = [describe(loop, graph) for loop in cycles(graph)]
    assert not found, "\n".join(found)


def test_no_module_over_400_lines_in_src() -> None:
    long = too_long(module_names(SRC))
    assert not long, "\n".join(long)


# --- the checks themselves, on a small tree -------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_closed_by_a_function_local_relative_import_is_found(tmp_path: Path) -> None:
    write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import thing\n",
        "pkg/b.py": "import os\n\n\ndef thing():\n    from .sub import c\n    return c\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\n",
        "pkg/d.py": "from pkg import a\nimport pkg.sub.c\n",  # imports into the loop, not part of it
    })
    _, graph = import_graph(tmp_path)
    assert graph["pkg.b"] == {"pkg.sub.c": Edge("pkg.sub.c", 5)}
    assert graph["pkg.sub.c"] == {"pkg.a": Edge("pkg.a", 3)}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    assert describe(cycles(graph)[0], graph) == (
        "import cycle: pkg.a (line 1) -> pkg.b; pkg.b (line 5) -> pkg.sub.c; pkg.sub.c (line 3) -> pkg.a")


def test_a_tree_without_loops_has_none(tmp_path: Path) -> None:
    write(tmp_path, {"pkg/__init__.py": "from . import a\n", "pkg/a.py": "from pkg import b\n",
                     "pkg/b.py": "import json\n"})
    assert cycles(import_graph(tmp_path)[1]) == []


def test_only_a_generated_module_may_be_long(tmp_path: Path) -> None:
    body = "x = 1\n" * (MAX_LINES + 1)
    write(tmp_path, {"long.py": body, "table.py": '"""Lookup table."""\n# Generated by scripts/make_table.py\n'
                     + body, "short.py": "x = 1\n"})
    assert too_long(module_names(tmp_path)) == [
        f"long: {MAX_LINES + 1} lines (at most {MAX_LINES}, unless its first 3 lines say generated)"]
