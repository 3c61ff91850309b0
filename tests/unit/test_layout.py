"""The layout rules of the whole project, checked on the source with :mod:`ast`.

- The edge's product code (``edge_node`` but its local wing ``edge_node/local`` and
  ``edge_node/__main__.py``, which is the ``edge-relay`` launcher) imports neither
  ``origin`` nor ``bench``, nor the local wing.
- The origin reaches the edge only through :mod:`edge_node.contract`, the Redis
  helpers (``edge_node.redis_io``) and the process helpers (``edge_node.runtime``).
- No runtime import cycle anywhere in ``client_sdk``, ``edge_node``, ``origin`` and
  ``bench``: the strongly connected components of the import graph are single
  modules.  Imports under ``if TYPE_CHECKING:`` are not run, so they do not count;
  imports inside functions are run, so they do.
- Sizes: a module of the SDK, the edge or the origin stays under 600 lines and a
  class under 400.  The few that are over today are listed with the size they have
  now; they may shrink, never grow, and a new one may not join them.

Each checker is shown to fail on a bad input first.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

from test_layering import _files, _resolve, module_name, violations

ROOT = Path(__file__).resolve().parents[2]
TOPS = ("client_sdk", "edge_node", "origin", "bench")

#: What the origin may import of the edge (prefixes).
ORIGIN_MAY_USE = ("edge_node.contract", "edge_node.redis_io", "edge_node.runtime")

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400
#: Over the limits today: (path or path::Class) -> its size now.  Shrink, never grow.
OVERSIZE: dict[str, int] = {
}


# -- the checkers -----------------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_targets(source: str, importer: str, is_package: bool,
                    modules: Iterable[str]) -> set[str]:
    """The modules of ``modules`` that running ``source`` (module ``importer``) imports:
    every import statement but those under ``if TYPE_CHECKING:``; ``from p import m``
    counts as importing the module ``p.m`` when there is one, else ``p``."""
    known = set(modules)
    found: set[str] = set()

    def nearest(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module, node.level, importer, is_package)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for t in targets:
            m = nearest(t)
            if m and m != importer:
                found.add(m)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def import_graph(root: Path, tops: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules it imports at run time, over the packages ``tops``."""
    paths = {module_name(p, root): p for top in tops if (root / top).is_dir()
             for p in _files(root / top)}
    return {m: runtime_targets(p.read_text(encoding="utf-8"), m, p.name == "__init__.py",
                               paths) for m, p in paths.items()}


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, todo = work[-1]
            if todo:
                w = todo.pop()
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, sorted(graph[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def origin_violations(source: str, importer: str = "origin.x") -> list[str]:
    """Names of the edge that ``source`` (an origin module) imports outside the contract."""
    return [n for n in sorted(violations(source, frozenset({"edge_node"}), importer))
            if not any(n == ok or n.startswith(ok + ".") for ok in ORIGIN_MAY_USE)]


def sizes(root: Path, tops: Iterable[str]) -> dict[str, int]:
    """``path`` -> lines and ``path::Class`` -> lines, for every module and class."""
    out: dict[str, int] = {}
    for top in tops:
        for p in _files(root / top):
            text = p.read_text(encoding="utf-8")
            rel = p.relative_to(root).as_posix()
            out[rel] = len(text.splitlines())
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                    out[f"{rel}::{node.name}"] = node.end_lineno - node.lineno + 1
    return out


def size_problems(found: Mapping[str, int], allowed: Mapping[str, int]) -> list[str]:
    problems = []
    for key, n in sorted(found.items()):
        limit = MAX_CLASS_LINES if "::" in key else MAX_MODULE_LINES
        if n > max(limit, allowed.get(key, 0)):
            problems.append(f"{key}: {n} lines (limit {max(limit, allowed.get(key, 0))})")
    return problems


def _tree(tmp: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp


# -- the rules --------------------------------------------------------------------


def _outside_product(rel: Path) -> bool:
    """The local wing and the launcher's ``python -m edge_node`` door."""
    return rel.parts[0] == "local" or rel.as_posix() == "__main__.py"


def test_edge_product_code_imports_neither_origin_nor_bench_nor_the_local_wing() -> None:
    edge = ROOT / "edge_node"
    forbidden = frozenset({"origin", "bench", "edge_node.local"})
    problems = [
        f"{p.relative_to(ROOT)}: imports {name}"
        for p in _files(edge) if not _outside_product(p.relative_to(edge))
        for name in violations(p.read_text(encoding="utf-8"), forbidden, module_name(p),
                               p.name == "__init__.py")
    ]
    assert problems == []
    assert (edge / "local" / "launcher.py").is_file()  # the wing exists, and is skipped


def test_origin_reaches_the_edge_only_through_the_contract() -> None:
    problems = [f"{p.relative_to(ROOT)}: imports {name}"
                for p in _files(ROOT / "origin")
                for name in origin_violations(p.read_text(encoding="utf-8"), module_name(p))]
    assert problems == []


def test_no_runtime_import_cycle() -> None:
    graph = import_graph(ROOT, TOPS)
    assert len(graph) > 150  # it read the project
    assert "edge_node.fanout.hub" in graph["edge_node.server"]
    assert cycles(graph) == []


def test_modules_and_classes_stay_small() -> None:
    found = sizes(ROOT, ("client_sdk", "edge_node", "origin"))
    assert size_problems(found, OVERSIZE) == []
    # The list only shrinks: an entry that is back under the limit must leave it.
    stale = [k for k in OVERSIZE if found.get(k, 0) <= (MAX_CLASS_LINES if "::" in k
                                                        else MAX_MODULE_LINES)]
    assert stale == []


# -- the checkers can fail --------------------------------------------------------


def test_cycle_checker_finds_a_cycle_and_ignores_type_checking(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import x\n",
        "pkg/b.py": "def f():\n    from pkg import c\n",
        "pkg/c.py": "from . import a\n",
        "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
        "pkg/e.py": "from pkg.d import y\n",
    })
    graph = import_graph(root, ("pkg",))
    assert graph["pkg.d"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    (root / "pkg" / "c.py").write_text("import json\n")
    assert cycles(import_graph(root, ("pkg",))) == []


def test_origin_checker_flags_the_edge_outside_the_contract() -> None:
    assert origin_violations("from edge_node.fanout.hub import Hub") != []
    assert origin_violations("from edge_node import server") != []
    assert origin_violations("import edge_node.uplink.wire") != []
    assert origin_violations("from edge_node.contract import KINDS") == []
    assert origin_violations("from edge_node.redis_io import conn as c") == []
    assert origin_violations("import json\nfrom origin.keys import x") == []


def test_size_checker_flags_growth_and_newcomers(tmp_path: Path) -> None:
    big_class = "class Big:\n" + "    x = 1\n" * 450
    root = _tree(tmp_path, {"pkg/a.py": big_class, "pkg/b.py": "y = 1\n" * 700})
    found = sizes(root, ("pkg",))
    assert found["pkg/a.py::Big"] == 451
    assert size_problems(found, {}) == ["pkg/a.py::Big: 451 lines (limit 400)",
                                        "pkg/b.py: 700 lines (limit 600)"]
    assert size_problems(found, {"pkg/a.py::Big": 451, "pkg/b.py": 700}) == []
    assert size_problems(found, {"pkg/a.py::Big": 450, "pkg/b.py": 700}) != []
