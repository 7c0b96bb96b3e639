"""The package's shape, read from its source with `ast` (only the TensorFlow-free registries are imported, for their names): small
modules, no import cycles, and stages that meet only in the run directory (ARCHITECTURE.md).

Names: a variant, runtime or network name is spelled only in its registry.

Imports count wherever they are written (module level or inside a function): a function-level
import is still a dependency, only a later one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import importlib.util
import sys

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("package_graph", ROOT / "scripts" / "package_graph.py")
package_graph = importlib.util.module_from_spec(_spec)
sys.modules["package_graph"] = package_graph
_spec.loader.exec_module(package_graph)

PACKAGE = package_graph.PACKAGE
MAX_LINES = 400   # house style (STYLE.md): no module over 400 lines
MODULES = package_graph.modules()
ORCHESTRATORS = ("edgekit.cli", "edgekit.pipeline")   # the only modules that may import stages

# Import cycles present when this test was written. Listed, not hidden: a new cycle, or one of
# these growing, fails; once one is gone, the test asks for its entry to be deleted.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()


def _import_graph() -> dict[str, set[str]]:
    return package_graph.import_graph()


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


def test_the_graph_sees_the_imports_it_must():
    """Guards the reader itself: known edges, one module-level, one function-level, one `from edgekit.core import x`."""
    graph = _import_graph()
    assert "edgekit.core.rundir" in graph["edgekit.export.stage"]          # from edgekit.core import rundir
    assert "edgekit.convert.converters" in graph["edgekit.export.variant"]  # (in a function)
    assert "edgekit.bench" in graph["edgekit.cli"]                          # from edgekit.bench import bench_run
    assert all(package_graph.package_of(m) in package_graph.RANK for m in MODULES), \
        "every package has a layer in scripts/package_graph.py LAYERS"


def test_no_module_over_the_line_limit():
    too_long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines (split them by job): {too_long}"


def test_no_new_import_cycles():
    cycles = _cycles(_import_graph())
    new = [sorted(c) for c in cycles if not any(c <= known for known in KNOWN_CYCLES)]
    assert not new, f"import cycles among edgekit modules: {new}"
    gone = [sorted(k) for k in KNOWN_CYCLES if not any(len(c & k) > 1 for c in cycles)]
    assert not gone, f"these cycles are gone: delete them from KNOWN_CYCLES: {gone}"


def test_packages_only_import_downwards():
    """errors imports nothing of edgekit; core only errors; security < runtimes < convert < verify in
    that order; stages import libraries, never another stage; only cli and pipeline import stages
    (scripts/package_graph.py LAYERS)."""
    up = package_graph.upward_edges(_import_graph())
    assert not up, "imports that point up or across stages: " + "; ".join(up)


def test_the_layering_rule_sees_an_upward_import():
    """Guards the rule itself: core importing a stage, and one stage importing another, are caught."""
    graph = {"edgekit.core.rundir": {"edgekit.bench.stage"}, "edgekit.gate.check": {"edgekit.bench.latency"},
             "edgekit.verify.parity": {"edgekit.runtimes"}}
    assert package_graph.upward_edges(graph) == [
        "edgekit.core.rundir (core) imports edgekit.bench.stage (bench)",
        "edgekit.gate.check (gate) imports edgekit.bench.latency (bench)"]


def test_package_figures_stay_within_the_layout_budget():
    """ARCHITECTURE.md's figures, recounted: no circle, and at most 40 package pairs with an import
    besides imports of `errors`, the leaf every package may use (33 when the layout landed)."""
    f = package_graph.figures()
    assert f["depth"] > 0, "the packages form a circle"
    assert f["package_pairs_besides_errors"] <= 40, f["graph"]


def test_every_package_says_what_lives_there():
    """Each subpackage's __init__ opens with a docstring whose first paragraph (at most two lines)
    says what lives there."""
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split("\n\n")[0].splitlines()) <= 2, f"{init}: two lines saying what lives there"


# ---------------------------------------------------------------- names live in their registries

# The registries: the only modules that may spell a variant, runtime or network name.
REGISTRIES = ("edgekit.core.variants", "edgekit.runtimes", "edgekit.core.networks")
# The same strings where they name something else (a PyPI distribution, a Python package, a file
# serialization), each with why: a new entry needs a reason a reviewer can check.
NOT_A_REGISTRY_NAME = {
    ("edgekit.verify.emulation", "onnxruntime"): "PyPI wheel the arm64 sysroot pins (setup_arm64.sh)",
    ("edgekit.export.variant", "onnxruntime"): "PyPI distribution whose version the record keeps",
    ("edgekit.security.scan", "keras"): "the Python package `keras` and the .keras file serialization",
}


def _registry_names() -> set[str]:
    """Every registered variant, runtime and network name (the registries import no TensorFlow)."""
    from edgekit.core.networks import NETWORKS
    from edgekit.runtimes import RUNTIMES
    from edgekit.core.variants import VARIANTS

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
