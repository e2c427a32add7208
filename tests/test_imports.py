"""The package's import structure: no module-level import cycles, and every module importable on its own.

A cycle between modules (``engine`` importing ``video`` importing ``engine``) works only as long as the import order
happens to be right; it breaks the day someone imports the other module first. Imports inside functions are allowed
(they are how optional, heavy dependencies stay lazy) and are not edges of the module-level graph; ``if
TYPE_CHECKING:`` blocks are never edges.

The function-level graph counts the imports inside functions too: the modules' logical dependencies. A cycle there
(a stage calling up into the module that calls it) is what made the pipeline hard to follow before #19; the known
ones are listed in :data:`KNOWN_FUNCTION_LEVEL_CYCLES` with who removes them, and any other fails the test. A
module-level ``__getattr__`` that forwards a moved name to its new home (``rscore.engine.run``, the ``rscore``
package's lazy API) is not a dependency of the module's own code and is not an edge.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"rscore": ROOT / "rscore", "rscore_flows": ROOT / "flows" / "rscore_flows"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for p in folder.rglob("*.py"):
            if "scaffold" in p.relative_to(folder).parts[:1]:
                continue  # the plugin template is copied out, not imported
            parts = (pkg, *p.relative_to(folder).with_suffix("").parts)
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name or None


def _import_nodes(tree: ast.Module, function_level: bool) -> list[ast.stmt]:
    if not function_level:
        return [n for n in tree.body if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))]
    skip: set[int] = set()
    for n in tree.body:
        if (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)) or (
            isinstance(n, ast.FunctionDef) and n.name == "__getattr__"  # a forwarder of moved names
        ):
            skip |= {id(m) for m in ast.walk(n)}
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skip]


def import_graph(*, function_level: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level (relative imports resolved); with
    ``function_level`` also inside functions and methods (but not in a module's forwarding ``__getattr__``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deps: set[str] = set()
        for node in _import_nodes(tree, function_level):
            if isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # ``from pkg import sub`` (a submodule) depends on ``sub``; the package itself is an ancestor that
                # every submodule import loads anyway, not an edge. ``from pkg import name`` depends on ``pkg``.
                candidates = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
            else:
                continue
            for c in candidates:
                target = _resolve(c, modules)
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_module_level_imports_only(tmp_path):
    graph = import_graph()
    assert "rscore.errors" in graph["rscore.engine.scene"]  # opening imports the error tree at module level
    assert "rscore.types" in graph["rscore.sdk"]


def test_no_module_level_import_cycles():
    found = cycles(import_graph())
    assert found == [], "import cycles: " + "; ".join(" -> ".join(c) for c in found)


# Function-level cycles that exist, each with why it stays. A cycle found must lie inside one of these (one that shrinks
# or disappears passes); anything else - a new cycle, or one of these grown by a module - fails.
KNOWN_FUNCTION_LEVEL_CYCLES: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"rscore.types", "rscore.notebook", "rscore.io.images", "rscore.sdk", "rscore.tiling"}),
     "kept on purpose: Result's notebook conveniences (_repr_html_, to_geodataframe, ...) call rscore.notebook, which "
     "renders with the modules below types; to go, the conveniences would have to live above the vocabulary"),
)


def test_function_level_graph_sees_imports_inside_functions():
    graph = import_graph(function_level=True)
    assert "rscore.video.engine" in graph["rscore.runner"]  # imported inside run(), lazily
    assert "rscore.video.engine" not in import_graph()["rscore.runner"]
    assert "rscore.runner" not in graph["rscore.engine"]  # rscore.engine.run is a forwarding __getattr__
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]


def test_no_function_level_import_cycles_but_the_known_ones():
    known = [allowed for allowed, _ in KNOWN_FUNCTION_LEVEL_CYCLES]
    new = [c for c in cycles(import_graph(function_level=True)) if not any(set(c) <= allowed for allowed in known)]
    assert new == [], "function-level import cycles: " + "; ".join(" <-> ".join(c) for c in new)


def test_engine_does_not_import_video_or_the_dispatch():
    """The image engine is below the video engine and the run dispatch (#19): no module of rscore.engine imports
    rscore.video or rscore.runner, not even inside a function."""
    graph = import_graph(function_level=True)
    engine = [m for m in graph if m == "rscore.engine" or m.startswith("rscore.engine.")]
    assert len(engine) > 10
    wrong = {m: sorted(d for d in graph[m] if d.startswith("rscore.video") or d == "rscore.runner") for m in engine}
    assert not {m: d for m, d in wrong.items() if d}


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    failures = []
    for name in sorted(_modules()):
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120)
        if proc.returncode:
            failures.append(f"{name}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    assert not failures, "\n".join(failures)
