"""The package's shape, read from its source with `ast` (only the TensorFlow-free registries are imported, for their names): small
modules, no import cycles, and stages that meet only in the run directory (ARCHITECTURE.md).

Names: a variant, runtime or network name is spelled only in its registry.

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
    "edgekit.contained_worker": "edgekit.export", # the contained export's subprocess entry
    "edgekit.bench_plan": "edgekit.bench",        # files, test sets and worker jobs
    "edgekit.bench_records": "edgekit.bench",     # results records from worker events
    "edgekit.bench_worker": "edgekit.bench",      # the worker subprocess
    "edgekit.bench_job": "edgekit.bench",         # the typed job planner and worker share
}
ORCHESTRATORS = ("edgekit.cli", "edgekit.pipeline")   # the only modules that may import stages

# Import cycles present when this test was written, in modules outside the export/bench split.
# Listed, not hidden: a new cycle, or one of these growing, fails; once one is gone, the test
# asks for its entry to be deleted.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()


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


# ---------------------------------------------------------------- names live in their registries

# The registries: the only modules that may spell a variant, runtime or network name.
REGISTRIES = ("edgekit.variants", "edgekit.runtimes", "edgekit.models")
# The same strings where they name something else (a PyPI distribution, a Python package, a file
# serialization), each with why: a new entry needs a reason a reviewer can check.
NOT_A_REGISTRY_NAME = {
    ("edgekit.emulation", "onnxruntime"): "PyPI wheel the arm64 sysroot pins (setup_arm64.sh)",
    ("edgekit.export_variant", "onnxruntime"): "PyPI distribution whose version the record keeps",
    ("edgekit.scan", "keras"): "the Python package `keras` and the .keras file serialization",
}


def _registry_names() -> set[str]:
    """Every registered variant, runtime and network name (the registries import no TensorFlow)."""
    from edgekit.models import NETWORKS
    from edgekit.runtimes import RUNTIMES
    from edgekit.variants import VARIANTS

    return set(VARIANTS) | set(RUNTIMES) | set(NETWORKS)


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, kinds) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def test_no_behaviour_chosen_by_a_name_literal_outside_the_registries():
    """A string equal to a variant/runtime/network name outside its registry means behaviour chosen
    by name (or a second list of names): look the row up by its fields (role, format, class) instead."""
    names = _registry_names()
    found = []
    for mod, path in MODULES.items():
        if mod in REGISTRIES:
            continue
        tree = ast.parse(path.read_text(), str(path))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
                    and id(node) not in docs and (mod, node.value) not in NOT_A_REGISTRY_NAME):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.value!r}")
    assert not found, "name literals outside the registries: " + "; ".join(found)


def test_the_name_rule_sees_a_name_literal():
    """Guards the rule itself: a module comparing against a variant name is caught."""
    tree = ast.parse('def f(v):\n    """keras-fp32 in a docstring is fine"""\n    return v == "keras-fp32"\n')
    docs = _docstrings(tree)
    hits = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in _registry_names()
            and id(n) not in docs]
    assert hits == ["keras-fp32"]
