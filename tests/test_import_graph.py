"""The import structure of src/: no import cycle among the modules of the library and the harness,
function-local imports included; the library never imports the harness; the library imports
only torch, numpy and the standard library; and ``import newton_losses`` loads nothing of the
harness (no argparse, tqdm, matplotlib or scipy of its own).

The graph is read from the source with ``ast`` (every ``import`` anywhere in a file, so a cycle
hidden in a function body counts), not from ``sys.modules`` after an import, which sees only
what one import order happens to execute. Edges, for a module M:

- ``import a.b.c`` and ``from a.b.c import x``: M → a.b.c, and M → a, M → a.b (a submodule
  is loaded after its packages) except for the packages M itself lies in, which Python has
  begun loading before M runs — counting those would make every package that imports its own
  submodules look cyclic.
- ``from pkg import name`` where pkg.name is a module, and ``import pkg.name as alias``: as
  ``import pkg.name`` — the import system loads the submodule (and binds it in pkg) even while
  pkg's ``__init__`` is still running, so M depends on the submodule, not on what pkg's
  ``__init__`` has defined so far.
- ``from pkg import name`` where name is not a module (a function, a class, a re-export): M → pkg,
  even when M lies in pkg — the name is read from pkg's namespace, which its ``__init__``
  must have filled before M runs.
- relative imports are resolved against M's package.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import deque
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LIBRARY, HARNESS = "newton_losses", "newton_lab"
# `python -m newton_losses` is a documented alias of `python -m newton_lab`; `import newton_losses`
# never loads __main__.
HARNESS_ALLOWED_IN = {f"{LIBRARY}.__main__"}
LIBRARY_DEPENDENCIES = {"torch", "numpy"}
# Optional packages may be used here, imported inside functions so that importing the
# subpackage does not need them.
OPTIONAL_DEPENDENCIES_IN = f"{LIBRARY}.integrations"


def _modules(root: Path, packages=(LIBRARY, HARNESS)) -> dict[str, Path]:
    """Dotted module name → file, for every module of ``packages`` under ``root``."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports(modules: dict, module: str):
    """(line, named module) for every import statement anywhere in ``module``'s file: the module
    an ``import`` names, or for ``from X import a, b``: X.a for a submodule a (of ``modules``),
    X for any other name (relative imports resolved)."""
    path = modules[module]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                if node.level > len(package):
                    raise ValueError(f"{path}:{node.lineno}: relative import beyond the top-level package")
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            for name in subs:
                yield node.lineno, name
            if len(subs) < len(node.names):
                yield node.lineno, base


def _edges(modules: dict) -> dict[tuple[str, str], list[int]]:
    """(importer, imported) → the lines of the importer that create that edge; modules outside
    ``modules`` (torch, the standard library) are left out."""
    edges: dict[tuple[str, str], list[int]] = {}
    for module in modules:
        own_packages = set(_ancestors(module))
        for line, name in _imports(modules, module):
            implied = [p for p in _ancestors(name) if p not in own_packages]
            for target in [name] + implied:
                if target in modules and target != module:
                    edges.setdefault((module, target), []).append(line)
    return edges


def _components(nodes, edges) -> list[set]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph = {v: sorted(b for a, b in edges if a == v) for v in nodes}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(v):  # recursion depth ≤ the number of modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while not component or v not in component:
                component.add(stack.pop())
            on_stack.difference_update(component)
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _shortest_cycle(component: set, edges) -> list[str]:
    """A shortest cycle within ``component``, as a chain that ends on its first module."""
    best = None
    for start in sorted(component):
        parent, queue, last = {start: None}, deque([start]), None
        while queue and last is None:
            v = queue.popleft()
            for w in sorted(b for a, b in edges if a == v and b in component):
                if w == start:
                    last = v
                    break
                if w not in parent:
                    parent[w] = v
                    queue.append(w)
        path = [last]
        while parent[path[-1]] is not None:
            path.append(parent[path[-1]])
        if best is None or len(path) + 1 < len(best):
            best = path[::-1] + [start]
    return best


def _describe(component: set, edges, modules: dict, root: Path) -> str:
    """The cycle as a chain a → b → c → a, then every import line inside the component (each of
    them is a candidate to cut)."""
    cycle = _shortest_cycle(component, edges)
    lines = [" → ".join(cycle) + f"   ({len(component)} modules: {', '.join(sorted(component))})"]
    for (a, b), numbers in sorted(edges.items()):
        if a in component and b in component:
            where = ", ".join(f"{modules[a].relative_to(root.parent)}:{n}" for n in sorted(set(numbers)))
            lines.append(f"    {a} → {b}: {where}")
    return "\n".join(lines)


MODULES = _modules(SRC)


def test_no_import_cycle():
    edges = _edges(MODULES)
    found = _components(MODULES, edges)
    assert not found, ("import cycles, each with the import lines (file:line) inside it:\n"
                       + "\n".join(_describe(c, edges, MODULES, SRC) for c in found))


def _tree(root: Path, files: dict) -> dict:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return _modules(root, ("pkg",))


def test_edge_rules_on_a_made_up_package(tmp_path):
    """Function-local imports count; relative imports resolve; a submodule's import of a sibling
    (``from .. import _util`` as much as ``from .._util import g``) does not depend on the package
    it lies in, a ``from pkg import name`` of a non-module name does; a package is loaded with
    its submodules."""
    modules = _tree(tmp_path, {
        "pkg/__init__.py": "from .a import f\n",
        "pkg/a.py": "import os\n\n\ndef f():\n    from .sub import deep\n    return deep\n",
        "pkg/_util.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/deep.py": "from .._util import g\nfrom .. import _util, f\n",
    })
    edges = _edges(modules)
    assert edges == {("pkg", "pkg.a"): [1], ("pkg.a", "pkg.sub"): [5], ("pkg.a", "pkg.sub.deep"): [5],
                     ("pkg.sub.deep", "pkg._util"): [1, 2], ("pkg.sub.deep", "pkg"): [2]}
    (component,) = _components(modules, edges)  # through `from .. import f`
    assert component == {"pkg", "pkg.a", "pkg.sub.deep"}
    text = _describe(component, edges, modules, tmp_path)
    assert text.splitlines()[0].startswith("pkg → pkg.a → pkg.sub.deep → pkg   (3 modules")
    assert f"    pkg.a → pkg.sub.deep: {Path(tmp_path.name, 'pkg', 'a.py')}:5" in text.splitlines()
    # Without the import of the package itself, no cycle: deep's own packages are not edges.
    (tmp_path / "pkg/sub/deep.py").write_text("from .._util import g\n")
    edges = _edges(modules)
    assert ("pkg.sub.deep", "pkg") not in edges and not _components(modules, edges)
    (tmp_path / "pkg/_util.py").write_text("import pkg.sub.deep as d\nimport pkg.sub\n")
    assert {k: v for k, v in _edges(modules).items() if k[0] == "pkg._util"} == {
        ("pkg._util", "pkg.sub"): [1, 2], ("pkg._util", "pkg.sub.deep"): [1]}
    (tmp_path / "pkg/_util.py").write_text("from pkg import a\n")  # a submodule: not pkg's __init__
    assert {k: v for k, v in _edges(modules).items() if k[0] == "pkg._util"} == {("pkg._util", "pkg.a"): [1]}


def test_the_library_does_not_import_the_harness():
    found = [f"{MODULES[m].relative_to(SRC.parent)}:{line}: {name}"
             for m in MODULES if m.split(".")[0] == LIBRARY and m not in HARNESS_ALLOWED_IN
             for line, name in _imports(MODULES, m) if name.split(".")[0] == HARNESS]
    assert not found, "the library imports the harness:\n" + "\n".join(found)


def _absolute_imports(path: Path):
    """(line, top-level package, whether inside a function) of every absolute import in ``path``."""

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield child.lineno, alias.name.split(".")[0], in_function
            elif isinstance(child, ast.ImportFrom) and not child.level:
                yield child.lineno, child.module.split(".")[0], in_function
            yield from visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), False)


def test_the_library_imports_only_torch_numpy_and_the_standard_library():
    allowed = LIBRARY_DEPENDENCIES | set(sys.stdlib_module_names) | {LIBRARY}
    found = []
    for m, path in MODULES.items():
        if m.split(".")[0] != LIBRARY or m in HARNESS_ALLOWED_IN:
            continue
        optional = m == OPTIONAL_DEPENDENCIES_IN or m.startswith(OPTIONAL_DEPENDENCIES_IN + ".")
        for line, top, in_function in _absolute_imports(path):
            if top not in allowed and not (optional and in_function):
                hint = " (an optional package: import it inside the function that needs it)" if optional else ""
                found.append(f"{path.relative_to(SRC.parent)}:{line}: {top}{hint}")
    assert not found, "the library imports beyond torch, numpy and the standard library:\n" + "\n".join(found)


def test_importing_the_library_loads_nothing_of_the_harness():
    """In a fresh interpreter, what ``import newton_losses`` loads beyond what torch and numpy
    load themselves (torch imports argparse and tqdm) is the library and the standard library."""
    code = ("import sys, json; import torch, numpy; before = set(sys.modules); import newton_losses; "
            "print(json.dumps([sorted(m for m in sys.modules if m.startswith('newton_lab')), "
            "sorted(set(sys.modules) - before)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    harness, added = json.loads(out.stdout.splitlines()[-1])
    assert harness == []
    tops = {m.split(".")[0] for m in added}
    assert not tops & {"argparse", "tqdm", "matplotlib", "scipy", HARNESS}, sorted(added)
    assert tops <= set(sys.stdlib_module_names) | {LIBRARY}, sorted(tops - set(sys.stdlib_module_names))


def test_two_distributions_one_way():
    """The library's distribution ships newton_losses alone; the harness's (lab/) ships
    newton_lab, depends on the library and owns the command."""
    tomllib = __import__("pytest").importorskip("tomllib")  # Python >= 3.11
    root = SRC.parent
    lib = tomllib.loads((root / "pyproject.toml").read_text())
    lab = tomllib.loads((root / "lab" / "pyproject.toml").read_text())
    assert lib["tool"]["setuptools"]["packages"]["find"]["include"] == [f"{LIBRARY}*"]
    assert {d.split(">")[0].split("=")[0] for d in lib["project"]["dependencies"]} == LIBRARY_DEPENDENCIES
    assert "scripts" not in lib["project"]
    assert lab["tool"]["setuptools"]["packages"]["find"] == {"where": ["../src"], "include": [f"{HARNESS}*"]}
    assert any(d.startswith("newton-losses>=") for d in lab["project"]["dependencies"])
    assert lab["project"]["scripts"] == {"newton-losses": f"{HARNESS}.cli:main"}
