"""edgekit's package graph, counted from the imports (ast only: nothing is imported or run).

    python scripts/package_graph.py          # the table ARCHITECTURE.md shows, and the figures

An import counts wherever it is written (module level or inside a function). tests/test_architecture.py
enforces the layering below with the same functions.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edgekit"

# Lowest first: a package may import only packages on lower layers (and itself). Stages share a
# layer, so no stage imports another; only cli and pipeline import stages.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("core",),
    ("security",),
    ("runtimes",),
    ("convert",),
    ("verify",),
    ("train", "export", "bench", "gate", "report"),
    ("pipeline",),
    ("cli",),
    ("edgekit", "__main__"),   # the package root (public API, lazy) and `python -m edgekit`
)
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
STAGES = LAYERS[6]


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the edgekit modules it imports."""
    mods = modules(package)
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps.update(_resolve(a.name, mods) for a in node.names if a.name.split(".")[0] == "edgekit")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] != "edgekit":
                    continue
                for a in node.names:
                    full = f"{base}.{a.name}"
                    deps.add(full if full in mods else _resolve(base, mods))
        deps.discard(None)
        deps.discard(mod)
        graph[mod] = {d for d in deps if d}
    return graph


def package_of(mod: str) -> str:
    """edgekit.core.rundir -> core; edgekit.cli -> cli; edgekit -> edgekit."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_graph(graph: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    graph = import_graph() if graph is None else graph
    out: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        a = package_of(mod)
        out.setdefault(a, set()).update(package_of(d) for d in deps if package_of(d) != a)
    return out


def upward_edges(graph: dict[str, set[str]] | None = None) -> list[str]:
    """Module imports that point up (or sideways between stages): each one a broken rule."""
    graph = import_graph() if graph is None else graph
    bad = []
    for mod, deps in sorted(graph.items()):
        a = package_of(mod)
        for d in sorted(deps):
            b = package_of(d)
            if a != b and RANK.get(b, 99) >= RANK.get(a, -1):
                bad.append(f"{mod} ({a}) imports {d} ({b})")
    return bad


def depth(pkgs: dict[str, set[str]]) -> int:
    """Longest chain of package imports (edges); -1 where the packages form a circle."""
    memo: dict[str, int] = {}

    def d(p: str, seen: frozenset[str] = frozenset()) -> int:
        if p in seen:
            raise ValueError(f"package circle through {p}")
        if p not in memo:
            memo[p] = max((1 + d(q, seen | {p}) for q in pkgs.get(p, ())), default=0)
        return memo[p]

    try:
        return max((d(p) for p in pkgs), default=0)
    except ValueError:
        return -1   # a circle: upward_edges names it


def figures() -> dict:
    graph = import_graph()
    pkgs = package_graph(graph)
    per_package: dict[str, int] = {}
    for mod in graph:
        per_package[package_of(mod)] = per_package.get(package_of(mod), 0) + 1
    return {"modules": len(graph), "modules_per_package": per_package,
            "package_pairs": sum(len(v) for v in pkgs.values()),
            "package_pairs_besides_errors": sum(len(v - {"errors"}) for v in pkgs.values()), "depth": depth(pkgs),
            "module_pairs": sum(len(v) for v in graph.values()), "module_depth": depth(graph), "upward": upward_edges(graph), "graph": pkgs}


def main() -> None:
    f = figures()
    print("| layer | package | modules | imports |\n|---|---|---|---|")
    for i, layer in enumerate(LAYERS):
        for pkg in layer:
            if pkg in f["modules_per_package"]:
                deps = sorted(f["graph"].get(pkg, ()), key=lambda p: (RANK.get(p, 99), p))
                print(f"| {i} | `{pkg}` | {f['modules_per_package'][pkg]} | {', '.join(deps) or '-'} |")
    print(f"\n{f['modules']} modules; {f['module_pairs']} module pairs with an import on {f['module_depth']} levels; "
          f"{f['package_pairs']} package pairs ({f['package_pairs_besides_errors']} besides imports of errors); "
          f"package depth {f['depth']}; "
          f"upward arrows: {len(f['upward'])}")
    for line in f["upward"]:
        print("  UP:", line)


if __name__ == "__main__":
    main()
