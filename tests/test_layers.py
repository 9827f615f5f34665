"""The package is layered: imports go down only, never in a cycle (imports inside functions count).

The graph is built from the source with ``ast``: every ``import`` and ``from ...
import`` anywhere in a module (top level, functions, methods) is an edge to the
minillm module it names (``from minillm.x import y`` is an edge to ``minillm.x.y``
when that is a module, else to ``minillm.x``). An import that names a package
itself (``from minillm.training import loop``, ``import minillm.training``) runs
and reads that package's ``__init__``: it is an edge to the ``__init__`` too, so a
loop through a package's ``__init__`` is seen. A module may import from its own
part of the package or from a part of a lower layer; never from a part of its
own layer or above; never its own package's ``__init__`` (inside a package, name
the module: ``from minillm.training.loop import run``); and the graph has no cycle.
The recipes (one module per command, :data:`RECIPES`) import no other recipe.
"""

from __future__ import annotations

import ast
import pathlib

import minillm

ROOT = pathlib.Path(minillm.__file__).parent

# The package's parts by layer, lowest first. A part is a top-level module or subpackage.
LAYERS = [
    {"backend", "blas", "config", "seeds", "launcher"},  # leaves: arrays and devices, BLAS threads,
    # T5Config, streams, the watchdog of an MPI rank's launcher
    {"ops", "storage", "optim", "metrics", "parallel"},  # pure ops; file formats; optimizers; text
    # metrics; data-parallel ranks (mpi4py, lazily)
    {"model", "data", "plots"},  # the T5 model, the reference; examples, tokenizer, batching,
    # tasks; a run's pictures (SVG, from its records)
    {"engine"},  # the lean engine beside the reference: fused loss, freed caches, decoding's KV cache
    {"generation", "testing", "runfolder"},  # decoding; gradient checks and strategies (for tests);
    # run folders (checkpoints, trainer state, journal, metrics, lock, the folder's rules)
    {"evaluation"},  # decoding and scoring a model; rewards
    {"training"},  # SFT, REINFORCE and the run loop they share
    {"workflows"},  # each command as one call
    {"cli"},  # argument parsing and printing
    {"__init__", "__main__"},  # the package's face: ``import minillm``, ``python -m minillm``
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}
# One module per command: each reads as its command's steps, sharing only the modules beside it.
RECIPES = {f"minillm.workflows.{name}" for name in ("train", "rl", "evaluate", "generate", "data",
                                                   "pretrain")}


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def part_of(module: str) -> str:
    """The top-level part a module belongs to ("__init__" for the package itself)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def imports_in(source: str, me: str, is_package: bool, modules) -> set[str]:
    """The minillm modules that the module ``me`` (source text) imports anywhere in its body."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = me.split(".") if is_package else me.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            names.append(base)  # the module named runs first: a package's __init__ (or the module)
        else:
            continue
        out |= {n for n in names if n == "minillm" or n.startswith("minillm.")}
    out.discard(me)
    return out


def imports_of(path: pathlib.Path, modules) -> set[str]:
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py",
                      modules)


def find_cycles(g: dict[str, set[str]]) -> list[str]:
    """Every cycle a depth-first search meets, as "a -> b -> a"."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node, path):
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep):], dep]))
            elif dep in g and dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    return cycles


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {m: imports_of(p, modules) for m, p in modules.items()}


def test_every_part_has_a_layer():
    parts = {part_of(m) for m in all_modules()}
    assert parts - set(RANK) == set(), "give each new part of the package a layer in LAYERS"


def test_imports_go_down_only():
    bad = []
    for mod, deps in graph().items():
        for dep in deps:
            a, b = part_of(mod), part_of(dep)
            if a != b and not RANK[b] < RANK[a]:
                bad.append(f"{mod} (layer {RANK[a]}) imports {dep} (layer {RANK[b]})")
    assert not bad, "imports that do not go down:\n" + "\n".join(sorted(bad))


def test_no_module_imports_its_own_package_init():
    """Inside a package, modules import each other by name, never through the package's ``__init__``."""
    bad = [f"{mod} imports {dep}" for mod, deps in graph().items() for dep in deps
           if mod.startswith(dep + ".")]
    assert not bad, "imports of the module's own package (name the module instead):\n" + "\n".join(
        sorted(bad))


def test_recipes_import_no_recipe():
    """A recipe (one command's module) imports none of the others; what they share sits beside them."""
    g = graph()
    assert RECIPES - {"minillm.workflows.pretrain"} <= set(g), "a recipe was renamed: update RECIPES"
    bad = [f"{mod} imports {dep}" for mod, deps in g.items() if mod in RECIPES
           for dep in deps if dep in RECIPES]
    assert not bad, "recipes importing recipes:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    cycles = find_cycles(graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_function_level_imports_and_cycles():
    """An import inside a function is an edge, and a cycle through it is found."""
    modules = {"minillm.a", "minillm.b", "minillm.b.c"}
    a = "import numpy\ndef f():\n    from minillm.b import c\n"
    b = "class K:\n    def m(self):\n        from minillm import a\n"
    g = {"minillm.a": imports_in(a, "minillm.a", False, modules),
         "minillm.b.c": imports_in(b, "minillm.b.c", False, modules)}
    # (each import names a package too: minillm.b's and minillm's __init__, not in g here)
    assert g == {"minillm.a": {"minillm.b", "minillm.b.c"}, "minillm.b.c": {"minillm", "minillm.a"}}
    assert find_cycles(g) == ["minillm.a -> minillm.b.c -> minillm.a"]
    assert find_cycles({"minillm.a": {"minillm.b.c"}, "minillm.b.c": set()}) == []


def test_the_checker_sees_loops_through_a_package_init():
    """``from minillm.p import ck`` in p's own module is an edge to p's ``__init__``: the loop
    p/__init__ -> p.loop -> p/__init__ is found, and p.loop is named as importing its own package."""
    modules = {"minillm.p", "minillm.p.loop", "minillm.p.ck"}
    init = "from minillm.p.loop import run\n"
    loop = "def run():\n    from minillm.p import ck\n"
    g = {"minillm.p": imports_in(init, "minillm.p", True, modules),
         "minillm.p.loop": imports_in(loop, "minillm.p.loop", False, modules),
         "minillm.p.ck": set()}
    assert g["minillm.p"] == {"minillm.p.loop"}
    assert g["minillm.p.loop"] == {"minillm.p", "minillm.p.ck"}
    assert find_cycles(g) == ["minillm.p -> minillm.p.loop -> minillm.p"]
    # naming the module instead: no edge to the __init__, no loop
    fixed = imports_in("def run():\n    from minillm.p.ck import f\n", "minillm.p.loop", False, modules)
    assert fixed == {"minillm.p.ck"}
    assert find_cycles({**g, "minillm.p.loop": fixed}) == []
    # ``import minillm.p`` names the package too; a relative ``from . import ck`` resolves to it
    assert imports_in("import minillm.p\n", "minillm.p.loop", False, modules) == {"minillm.p"}
    assert imports_in("from . import ck\n", "minillm.p.loop", False, modules) == {"minillm.p",
                                                                                  "minillm.p.ck"}
