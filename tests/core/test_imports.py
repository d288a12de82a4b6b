"""How the modules of cnnvis_core import each other: no import cycles, and no Streamlit.

The import graph is read from the source with :mod:`ast`, so every import counts: at the top of a
module, inside a function (a lazy import) and under ``if TYPE_CHECKING:``. An import names the most
specific module that exists: ``from .cam import compute`` in ``cnnvis_core/engine.py`` is an edge to
``cnnvis_core.cam`` (the package's ``__init__``), ``from . import demo`` one to ``cnnvis_core.demo``,
``from ..errors import X`` in ``cnnvis_core/cam/base.py`` one to ``cnnvis_core.errors``, and
``from cnnvis_core import X`` (X not a submodule) one to ``cnnvis_core``. Importing a submodule also
runs the ``__init__`` of every package on its way, so ``from .optimize.run import X`` in
``cnnvis_core/engine.py`` is an edge to ``cnnvis_core.optimize.run`` and to ``cnnvis_core.optimize`` —
except to the importing module's own packages, which are being imported already: an edge to one's own
package exists only where it is written (``from . import NAME`` with NAME no submodule, ``from
cnnvis_core import NAME``, ``import cnnvis_core``).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "cnnvis_core"
TOP = PACKAGE.name


def _modules() -> dict[str, Path]:
    """Every module of cnnvis_core (a package by its ``__init__.py``) by dotted name."""
    modules: dict[str, Path] = {}
    for init in PACKAGE.rglob("__init__.py"):
        folder = init.parent
        parts = folder.relative_to(ROOT).parts
        # a folder is a package only if every folder above it up to cnnvis_core is one too
        if "__pycache__" in parts or not all((ROOT.joinpath(*parts[:i]) / "__init__.py").is_file()
                                             for i in range(1, len(parts) + 1)):
            continue
        modules[".".join(parts)] = init
        for path in folder.glob("*.py"):
            if path.name != "__init__.py":
                modules[".".join((*parts, path.stem))] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _ancestors(name: str) -> list[str]:
    """``a.b.c`` → ``["a", "a.b"]``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _named(target: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``target`` that is a cnnvis_core module (``cnnvis_core.cam.compute`` →
    ``cnnvis_core.cam``), or None for an import from outside cnnvis_core."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def _resolve_from(node: ast.ImportFrom, name: str, path: Path) -> str:
    """The absolute module name of ``from <...> import``: relative imports resolved against the
    importing module's package."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if _is_package(path) else name.split(".")[:-1]
    if node.level - 1 > len(package) - 1:
        raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top-level package")
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, dict[str, int]]:
    """``{module: {imported cnnvis_core module: first line that imports it}}``."""
    modules = _modules() if modules is None else modules
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        own = {*_ancestors(name), name}  # packages being imported already when this module runs
        explicit: list[tuple[str, int]] = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                explicit += [(alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_from(node, name, path)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    explicit.append((submodule if submodule in modules else base, node.lineno))
        for target, line in explicit:
            module = _named(target, modules)
            if module is None:
                continue
            # the module written, and the packages on its way that are not the importer's own
            for reached in [*(a for a in _ancestors(module) if a not in own), module]:
                graph[name].setdefault(reached, line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for child in edges:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return sorted(components)


def _shortest_path(graph: dict[str, dict[str, int]], start: str, goal: str, inside: set[str]) -> list[str]:
    """The shortest path start → … → goal through the modules of ``inside`` (breadth first)."""
    before: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while before[path[-1]] is not None:
                path.append(before[path[-1]])
            return path[::-1]
        for child in sorted(graph[node]):
            if child in inside and child not in before:
                before[child] = node
                queue.append(child)
    raise AssertionError(f"no path {start} → {goal} in a strongly connected component")


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The cycles, as lists of modules that each import the next (and the last the first): for each
    import edge inside a strongly connected component, the shortest cycle through it, without
    repeats. Together they contain every import that takes part in a cycle."""
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for component in strongly_connected(graph):
        inside = set(component)
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        for module in component:
            for target in sorted(graph[module]):
                if target not in inside:
                    continue
                cycle = [module] if target == module else [module, *_shortest_path(graph, target, module, inside)[:-1]]
                turn = cycle.index(min(cycle))
                canonical = tuple(cycle[turn:] + cycle[:turn])
                if canonical not in seen:
                    seen.add(canonical)
                    cycles.append(list(canonical))
    return sorted(cycles, key=lambda c: (len(c), c))


def _describe(cycle: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    steps = []
    for module, target in zip(cycle, [*cycle[1:], cycle[0]]):
        where = modules[module].relative_to(ROOT).as_posix()
        steps.append(f"{module} ({where}:{graph[module][target]})")
    return " → ".join([*steps, cycle[0]])


def test_no_import_cycles_in_cnnvis_core():
    modules = _modules()
    graph = import_graph(modules)
    cycles = import_cycles(graph)
    groups = [c for c in strongly_connected(graph) if len(c) > 1 or c[0] in graph[c[0]]]
    lines = [f"{len(cycles)} import cycle(s) among the modules of {TOP}, in {len(groups)} strongly connected "
             f"group(s); each module imports the next at the line shown (lazy and TYPE_CHECKING imports count):"]
    for number, group in enumerate(groups, 1):
        lines.append(f"group {number} ({len(group)} modules): {', '.join(group)}")
        lines += [f"  {_describe(cycle, graph, modules)}" for cycle in cycles if set(cycle) <= set(group)]
    if cycles:
        pytest.fail("\n".join(lines), pytrace=False)


def test_the_graph_reader_resolves_imports_as_documented(tmp_path):
    """The resolution rules on a made-up package (``from . import NAME``, ``..``, a lazy import, a
    TYPE_CHECKING import, a package's own ``__init__``), and the cycles found in it."""
    files = {
        "__init__.py": "from .engine import Engine\n",
        "engine.py": "from . import demo\nfrom .errors import E\n\ndef f():\n    from .cam import compute\n",
        "errors.py": "",
        "demo/__init__.py": "from ..errors import E\n",
        "cam/__init__.py": "from .registry import compute\n",
        "cam/base.py": ("from typing import TYPE_CHECKING\nfrom ..errors import E\nfrom . import registry\n"
                        "if TYPE_CHECKING:\n    from cnnvis_core.engine import Engine\n"),
        "cam/registry.py": "import numpy\nfrom .base import X\nfrom cnnvis_core import Engine\n",
        "opt/__init__.py": "",
        "opt/run.py": "from . import loop\n",
        "opt/loop.py": "",
        "far.py": "from .opt.run import go\n",
    }
    top = tmp_path / TOP
    for relative, text in files.items():
        (top / relative).parent.mkdir(parents=True, exist_ok=True)
        (top / relative).write_text(text)
    modules = {}
    for relative in files:
        parts = [TOP, *Path(relative).with_suffix("").parts]
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = top / relative
    graph = {name: set(targets) for name, targets in import_graph(modules).items()}
    c = TOP
    assert graph == {
        c: {f"{c}.engine"},
        f"{c}.engine": {f"{c}.demo", f"{c}.errors", f"{c}.cam"},
        f"{c}.errors": set(),
        f"{c}.demo": {f"{c}.errors"},
        f"{c}.cam": {f"{c}.cam.registry"},
        f"{c}.cam.base": {f"{c}.errors", f"{c}.cam.registry", f"{c}.engine"},
        f"{c}.cam.registry": {f"{c}.cam.base", c},
        f"{c}.opt": set(),
        f"{c}.opt.run": {f"{c}.opt.loop"},
        f"{c}.opt.loop": set(),
        f"{c}.far": {f"{c}.opt", f"{c}.opt.run"},
    }
    cycles = import_cycles(import_graph(modules))
    assert cycles == [
        [f"{c}.cam.base", f"{c}.cam.registry"],
        [c, f"{c}.engine", f"{c}.cam", f"{c}.cam.registry"],
        [f"{c}.cam", f"{c}.cam.registry", f"{c}.cam.base", f"{c}.engine"],
    ]


def _clean_env() -> dict[str, str]:
    kept = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TMP", "TEMP", "SYSTEMROOT")
    return {key: os.environ[key] for key in kept if key in os.environ}


def test_cnnvis_core_imports_no_streamlit():
    modules = _modules()
    # written anywhere, lazily too
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not any(n.split(".")[0] in ("streamlit", "dashboard") for n in names), \
                f"{name} imports {names} ({path.relative_to(ROOT)}:{node.lineno})"
    # and not pulled in by a dependency: every module imported in a fresh interpreter
    probe = ("import importlib, sys\n"
             f"for name in {sorted(modules)!r}:\n"
             "    importlib.import_module(name)\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('streamlit', 'dashboard')))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=_clean_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
