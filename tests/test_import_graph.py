"""No import cycles in tasty_oneshot: read from the source with `ast`, nothing imported.

Every import of a tasty_oneshot module counts, at the top of a module or inside a function
(a lazy import still ties two modules together); only those under `if TYPE_CHECKING:` do not.
`from tasty_oneshot.x import name` goes to `tasty_oneshot.x` (it runs that module, or that
package's __init__), and to the module `tasty_oneshot.x.name` too when there is one.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tasty_oneshot"
ROOT = PACKAGE.name


def module_names() -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its __init__.py)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The import statements under `node`, leaving out the body of `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            found.append(child)
        elif isinstance(child, ast.If) and _type_checking(child.test):
            for other in child.orelse:
                found.extend(_imports(ast.Module(body=[other], type_ignores=[])))
        else:
            found.extend(_imports(child))
    return found


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports."""
    is_package = path.name == "__init__.py"
    edges = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            # `from a.b import c` runs a.b (its __init__ for a package) even when c is a
            # module of it: both count.
            targets = [base] + [
                f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules
            ]
        for target in targets:
            while target and target not in modules and target.startswith(ROOT + "."):
                target = target.rpartition(".")[0]  # `import a.b.c` of a name, not a module
            if target in modules:
                edges.add(target)
    edges.discard(name)
    return edges


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def tangles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that import each other, directly or not (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each group of modules that import each other."""
    return [_cycle_in(graph, group) for group in tangles(graph)]


def _cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest cycle through the first module of `group` (breadth first, within it)."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in {sorted(group)}")


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    assert "tasty_oneshot.runner" in graph and "tasty_oneshot.ledger.sqlite" in graph
    assert "tasty_oneshot.ledger" in graph["tasty_oneshot.runner"]
    assert "tasty_oneshot.ledger.sqlite" in graph["tasty_oneshot.ledger"]  # a lazy import


def test_relative_and_type_checking_imports_are_read_as_the_rules_say(tmp_path):
    package = tmp_path / ROOT
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from . import b\nfrom .sub import c\n",
        "b.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tasty_oneshot import a\n"
            "else:\n    import tasty_oneshot.sub.c\n"
        ),
        "sub/__init__.py": "from .c import NAME\n",
        "sub/c.py": "def f():\n    from ..b import thing\nNAME = 1\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    modules = {
        name: package / file
        for name, file in [
            (ROOT, "__init__.py"),
            (f"{ROOT}.a", "a.py"),
            (f"{ROOT}.b", "b.py"),
            (f"{ROOT}.sub", "sub/__init__.py"),
            (f"{ROOT}.sub.c", "sub/c.py"),
        ]
    }
    graph = {name: imported(name, path, modules) for name, path in modules.items()}
    assert graph == {
        ROOT: set(),
        # `from . import b` runs the package too, `from .sub import c` the subpackage too
        f"{ROOT}.a": {ROOT, f"{ROOT}.b", f"{ROOT}.sub", f"{ROOT}.sub.c"},
        f"{ROOT}.b": {f"{ROOT}.sub.c"},
        f"{ROOT}.sub": {f"{ROOT}.sub.c"},
        f"{ROOT}.sub.c": {f"{ROOT}.b"},
    }
    assert cycles(graph) == [[f"{ROOT}.b", f"{ROOT}.sub.c", f"{ROOT}.b"]]


def test_no_module_of_the_package_imports_itself_back():
    graph = import_graph()
    found = tangles(graph)
    shown = "\n".join(
        f"{' -> '.join(_cycle_in(graph, group))}  (tangled: {', '.join(sorted(group))})"
        for group in found
    )
    assert not found, f"import cycles:\n{shown}"
