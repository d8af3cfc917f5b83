"""No import cycle anywhere in `src/sgeo`, imports inside functions included: dependencies point down.

The graph is read from the source (every `import` / `from ... import` statement, at any depth), so a cycle
that only closes when some function runs is found as well."""

from __future__ import annotations

import ast
from pathlib import Path

import sgeo

ROOT = Path(sgeo.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The sgeo modules `path` imports (a `from package import name` counts as the module `name` where that
    is a module, else as the package)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                       for alias in node.names]  # fmt: skip
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("sgeo"):
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    graph = {name: _imports(path, modules) for name, path in files.items()}
    # a package's __init__ runs before any of its modules: importing `a.b` imports `a` too, but `a`'s own
    # imports are what matter for cycles, and those are its edges already
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a list of module names."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_reads_function_level_imports():
    graph = import_graph()
    assert "sgeo.model.towers.registry" in graph["sgeo.model.configuration"]
    assert len(graph) > 100


def test_no_import_cycle_in_sgeo():
    found = cycles(import_graph())
    assert not found, f"{len(found)} import cycles: " + "; ".join(" <-> ".join(c) for c in found)


# -- private names stay in their module ------------------------------------------------------------
REPO = ROOT.parent.parent


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


def _defined_privates(tree: ast.AST) -> set[str]:
    """Private names a module defines: its functions, classes and globals, and its classes' attributes
    (class-level, or assigned on `self` / `cls`)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _on_self(node):
            names.add(node.attr)
    return {n for n in names if _private(n)}


def _private_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of every private name a module reaches for elsewhere: imported from a module, or read as
    an attribute of anything but `self` / `cls`."""
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            uses += [(node.lineno, a.name) for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Attribute) and _private(node.attr) and not _on_self(node):
            uses.append((node.lineno, node.attr))
    return uses


def private_reaches() -> list[str]:
    """Uses of a private name sgeo defines, outside the module that defines it (in src/sgeo, tests/, bench/).
    Private names of other libraries (`os._exit`, transformers' `_name_or_path`) are not sgeo's to judge."""
    trees = {p: ast.parse(p.read_text()) for p in ROOT.rglob("*.py")}
    defined = {p: _defined_privates(tree) for p, tree in trees.items()}
    sgeo_privates = set().union(*defined.values())
    others = [p for folder in ("tests", "bench") for p in (REPO / folder).rglob("*.py")]
    found = []
    for path in [*trees, *others]:
        tree = trees.get(path) or ast.parse(path.read_text())
        own = defined.get(path, _defined_privates(tree) if path not in trees else set())
        for line, name in _private_uses(tree):
            if name in sgeo_privates and name not in own:
                found.append(f"{path.relative_to(REPO)}:{line} {name}")
    return found


def test_no_module_reaches_for_another_modules_private_names():
    found = private_reaches()
    assert not found, f"{len(found)} uses of another module's private name: " + "; ".join(found)
