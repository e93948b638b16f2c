"""The package is one layered house: imports point one way, between rooms and inside them."""

import ast
from pathlib import Path

PKG = Path(__file__).parents[1] / "latentbench"

# The rooms in data-flow order; a module may import from its own room and from rooms before it.
ROOMS = ["ground", "data", "nets", "priors", "remedies", "model", "external", "training", "score", "results", "runner",
         "report", "tune", "api", "cli"]
GROUND = {"errors", "latent", "registry", "spec", "atomic", "device", "early_stop", "streams", "fitting",
          "catalog", "__init__", "__main__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py") if "baselines" not in p.parts}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every latentbench module this file imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {n for n in names if n in known and n.startswith("latentbench")}
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        deps = _imports(path, known) - {name}
        # importing a package's submodule is not an import of its own parent package
        graph[name] = {d for d in deps if not name.startswith(d + ".") or d == "latentbench"} - {"latentbench"}
    return graph


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "ground"
    if len(parts) == 2 and parts[1] in GROUND:
        return "ground"
    return parts[1]


def test_there_is_no_import_cycle_inside_the_package():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_rooms_import_only_from_earlier_rooms():
    bad = []
    for mod, deps in _graph().items():
        room = _room(mod)
        if room not in ROOMS or mod in ("latentbench", "latentbench.__main__"):
            continue
        for dep in deps:
            if ROOMS.index(_room(dep)) > ROOMS.index(room):
                bad.append(f"{mod} ({room}) imports {dep} ({_room(dep)})")
    assert not bad, "imports that point back up the data flow:\n" + "\n".join(sorted(bad))


def test_every_module_says_what_its_room_does():
    missing = [m for m, p in _modules().items() if not ast.get_docstring(ast.parse(p.read_text()))
               and m != "latentbench.__main__"]
    assert not missing, f"modules without a docstring: {missing}"


def test_no_module_shadows_the_standard_library():
    import sys

    names = {p.stem for p in PKG.rglob("*.py")}
    assert not names & (set(sys.stdlib_module_names) - {"__init__", "__main__"})
