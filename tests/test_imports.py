"""The package's import graph has no cycle.

Every ``import`` statement in ``contrastseg/**/*.py`` counts: at module level, inside functions and under
``if TYPE_CHECKING:``. Importing ``a.b.c`` also runs the ``__init__`` of ``a.b`` (unless the importer lives inside
``a.b``, whose ``__init__`` is then already running), so it adds an edge to that package too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "contrastseg"


def _modules(package: Path) -> dict[str, Path]:
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, int]]:
    """Module name -> {imported module of ``package``: line of the first statement that imports it}."""
    modules = _modules(package)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                # `from pkg import sub` imports the submodule pkg.sub; `from pkg import name` imports pkg.
                found = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in found:
                if target not in modules or target == name:
                    continue
                own = set(_ancestors(name))
                for module in [*_ancestors(target), target]:
                    if module != name and (module not in own or module == target):
                        targets.setdefault(module, node.lineno)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of ``graph`` as [m0, m1, ..., m0], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_every_kind_of_import(tmp_path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from typing import TYPE_CHECKING\nfrom . import b\nif TYPE_CHECKING:\n    from pkg.c import C\n",
        "b.py": "def f():\n    import pkg.sub.d\n",
        "c.py": "from pkg.sub import E\n",
        "sub/__init__.py": "from .d import E\n",
        "sub/d.py": "import pkg.a\nE = 1\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.b": 2, "pkg.c": 4}  # module level and under TYPE_CHECKING
    assert graph["pkg.b"] == {"pkg.sub": 2, "pkg.sub.d": 2}  # in a function, and the __init__ it runs
    assert graph["pkg.c"] == {"pkg.sub": 1}
    assert graph["pkg.sub"] == {"pkg.sub.d": 1}  # its own package's __init__ is not an edge
    assert graph["pkg.sub.d"] == {"pkg.a": 1}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub", "pkg.sub.d", "pkg.a"]
    assert find_cycle({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None


def test_no_import_cycle() -> None:
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        steps = [f"{a} -> {b} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
        raise AssertionError("import cycle:\n  " + "\n  ".join(steps))
