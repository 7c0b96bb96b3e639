"""The package's shape, read from its source with `ast` (nothing is imported, no TensorFlow): small
modules, no import cycles, and stages that meet only in the run directory (ARCHITECTURE.md).

Imports count wherever they are written (module level or inside a function): a function-level
import is still a dependency, only a later one.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edgekit"
MAX_LINES = 400   # house style (STYLE.md): no module over 400 lines

STAGES = ("edgekit.train", "edgekit.export", "edgekit.bench", "edgekit.report", "edgekit.check")
# Modules split out of a stage belong to it: they may import each other, no other stage may
# import them, and they may not import another stage.
STAGE_PARTS = {
    "edgekit.export_job": "edgekit.export",       # the per-model hand-off of export
    "edgekit.export_qat": "edgekit.export",       # the QAT model export makes and reuses
    "edgekit.export_variant": "edgekit.export",   # make, validate and judge one variant
    "edgekit.contained": "edgekit.export",        # export of a trusted user model in a subprocess
    "edgekit.bench_plan": "edgekit.bench",        # files, test sets and worker jobs
    "edgekit.bench_records": "edgekit.bench",     # results records from worker events
    "edgekit.bench_worker": "edgekit.bench",      # the worker subprocess
}
ORCHESTRATORS = ("edgekit.cli", "edgekit.pipeline")   # the only modules that may import stages

# Import cycles present when this test was written, in modules outside the export/bench split.
# Listed, not hidden: a new cycle, or one of these growing, fails; once one is gone, the test
# asks for its entry to be deleted.
KNOWN_CYCLES = (
    # scan imports scan_savedmodel inside a function; scan_savedmodel imports scan's Finding
    frozenset({"edgekit.scan", "edgekit.scan_savedmodel"}),
    # export_model dispatches to contained; contained's worker entry runs export_model
    frozenset({"edgekit.export", "edgekit.contained"}),
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The package module an imported name lives in (edgekit.a.b.c -> edgekit.a.b if that is a module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for mod, path in MODULES.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(_resolve(a.name) for a in node.names if a.name.split(".")[0] == "edgekit")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import: from the module's own package upwards
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] != "edgekit":
                    continue
                for a in node.names:  # `from edgekit import rundir` imports the module edgekit.rundir
                    full = f"{base}.{a.name}"
                    deps.add(full if full in MODULES else _resolve(base))
        deps.discard(None)
        deps.discard(mod)
        graph[mod] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative enough for ~50 nodes)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _stage_of(mod: str) -> str | None:
    return mod if mod in STAGES else STAGE_PARTS.get(mod)


def test_the_graph_sees_the_imports_it_must():
    """Guards the reader itself: known edges, one module-level, one function-level, one `from edgekit import x`."""
    graph = _import_graph()
    assert "edgekit.rundir" in graph["edgekit.export"]          # from edgekit import rundir (module level)
    assert "edgekit.convert" in graph["edgekit.export_variant"]  # from edgekit.convert import ... (in a function)
    assert "edgekit.bench" in graph["edgekit.cli"]              # from edgekit.bench import bench_run (in a function)
    assert all(s in MODULES for s in STAGES) and all(p in MODULES for p in STAGE_PARTS)


def test_no_module_over_the_line_limit():
    too_long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines (split them by job): {too_long}"


def test_no_new_import_cycles():
    cycles = _cycles(_import_graph())
    new = [sorted(c) for c in cycles if not any(c <= known for known in KNOWN_CYCLES)]
    assert not new, f"import cycles among edgekit modules: {new}"
    gone = [sorted(k) for k in KNOWN_CYCLES if not any(len(c & k) > 1 for c in cycles)]
    assert not gone, f"these cycles are gone: delete them from KNOWN_CYCLES: {gone}"


def test_stages_meet_only_in_the_run_directory():
    """No stage imports another stage; only cli and pipeline import stages at all."""
    bad = []
    for mod, deps in _import_graph().items():
        mine = _stage_of(mod)
        for dep in deps:
            theirs = _stage_of(dep)
            if theirs is None or theirs == mine or mod in ORCHESTRATORS:
                continue
            bad.append(f"{mod} imports {dep} (stage {theirs})" if mine is None
                       else f"{mod} (stage {mine}) imports {dep} (stage {theirs})")
    assert not bad, "stages talk through the run directory; cli and pipeline orchestrate: " + "; ".join(sorted(bad))
