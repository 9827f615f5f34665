"""The package reads in pieces a reader can hold: no module over 300 lines, no function over 60;
the reference tier (ops/, model/) has no keyword that decides what memory is kept, freed,
recomputed or written into, and no cache that is an anonymous tuple (issue 26)."""

from __future__ import annotations

import ast
import pathlib

import minillm

ROOT = pathlib.Path(minillm.__file__).parent
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 60
REFERENCE_TIER = ("ops", "model")
MEMORY_KEYWORDS = {"spend", "keep_input", "dw_into", "embedding_into", "recompute", "out", "inplace"}


def modules():
    return sorted(ROOT.rglob("*.py"))


def functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def function_lines(node) -> int:
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    return node.end_lineno - first + 1


def test_no_module_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_60_lines():
    long = [f"{p.relative_to(ROOT)}:{f.lineno} {f.name} ({function_lines(f)} lines)"
            for p in modules() for f in functions(ast.parse(p.read_text(encoding="utf-8")))
            if function_lines(f) > MAX_FUNCTION_LINES]
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def reference_modules():
    return [p for part in REFERENCE_TIER for p in sorted((ROOT / part).rglob("*.py"))]


def test_the_reference_tier_has_no_memory_keywords():
    found = []
    for p in reference_modules():
        for f in functions(ast.parse(p.read_text(encoding="utf-8"))):
            names = {a.arg for a in f.args.args + f.args.kwonlyargs}
            found += [f"{p.relative_to(ROOT)}: {f.name}({k})" for k in sorted(names & MEMORY_KEYWORDS)]
    assert not found, "memory keywords in the reference tier:\n" + "\n".join(found)


def test_the_reference_tiers_caches_are_named():
    """A forward returns (out, cache) with the cache a named type, never a tuple literal."""
    anonymous = []
    for p in reference_modules():
        for f in functions(ast.parse(p.read_text(encoding="utf-8"))):
            if not f.name.endswith("_forward"):
                continue
            for node in ast.walk(f):
                if (isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple)
                        and len(node.value.elts) == 2 and isinstance(node.value.elts[1], ast.Tuple)):
                    anonymous.append(f"{p.relative_to(ROOT)}:{node.lineno} {f.name}")
    assert not anonymous, "forwards whose cache is an anonymous tuple:\n" + "\n".join(anonymous)


def test_the_checks_see_what_they_check():
    """A long function, a memory keyword and a tuple cache in a made-up source are each found."""
    source = ("def f_forward(x, params, spend=False):\n" + "    y = x\n" * 61
              + "    return y, (x, params)\n")
    tree = ast.parse(source)
    (f,) = functions(tree)
    assert function_lines(f) > MAX_FUNCTION_LINES
    assert {a.arg for a in f.args.args + f.args.kwonlyargs} & MEMORY_KEYWORDS == {"spend"}
    ret = [n for n in ast.walk(f) if isinstance(n, ast.Return)][0]
    assert isinstance(ret.value.elts[1], ast.Tuple)
