"""The test suite's own rules: pure tests stay pure, test modules do not import each
other, and the helpers in conftest.py are right."""

from __future__ import annotations

import ast
import math

import numpy as np
import pytest

from tests.conftest import REFERENCE, REFERENCE_LIBRARIES, TESTS, chi_square_p_value, gammaincc

PURE_MODULES = sorted(p for p in TESTS.glob("*.py") if p.name != "__init__.py")


def imported_modules(path) -> list[tuple[int, str]]:
    """(line, module) for every import anywhere in a file, and every ``pytest.importorskip("name")``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "importorskip" and node.args
              and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, node.args[0].value))
    return found


def test_pure_tests_import_no_reference_library():
    """torch, transformers, sacrebleu, rouge-score: only under tests/reference/."""
    offenders = [f"{path.name}:{line}: {module}" for path in PURE_MODULES
                 for line, module in imported_modules(path)
                 if module.split(".")[0] in REFERENCE_LIBRARIES]
    assert not offenders, "move these tests to tests/reference/:\n" + "\n".join(offenders)


def test_test_modules_do_not_import_each_other():
    """Shared helpers live in a conftest.py; a test module is never imported by another."""
    offenders = []
    for path in [*PURE_MODULES, *sorted(REFERENCE.glob("*.py"))]:
        for line, module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "tests" and parts[-1] not in ("conftest", "tests", "reference"):
                offenders.append(f"{path.relative_to(TESTS)}:{line}: {module}")
    assert not offenders, "import helpers from tests.conftest instead:\n" + "\n".join(offenders)


def test_the_import_scanner_sees_imports_anywhere(tmp_path):
    path = tmp_path / "t.py"
    path.write_text("import os\ndef f():\n    import torch.nn\n    from transformers import T5Config\n"
                    "    sb = pytest.importorskip('sacrebleu')\nfrom . import x\n")
    assert imported_modules(path) == [(1, "os"), (3, "torch.nn"), (4, "transformers"), (5, "sacrebleu")]


def test_gammaincc_closed_forms():
    """Q(1, x) = exp(-x), Q(1/2, x) = erfc(sqrt x), Q(n, x) = exp(-x) sum_{k<n} x^k / k!, both branches."""
    for x in (1e-3, 0.3, 1.0, 2.5, 7.0, 30.0, 200.0):
        assert gammaincc(1.0, x) == pytest.approx(math.exp(-x), rel=1e-13)
        assert gammaincc(0.5, x) == pytest.approx(math.erfc(math.sqrt(x)), rel=1e-12, abs=1e-300)
        for n in (2, 5, 17):
            expected = math.exp(-x) * sum(x**k / math.factorial(k) for k in range(n))
            assert gammaincc(float(n), x) == pytest.approx(expected, rel=1e-12), (n, x)
    assert gammaincc(3.0, 0.0) == 1.0


def test_chi_square_p_value_by_hand():
    """Two equally likely categories, 60 of 100 in the first: stat = 4, df = 1, p = erfc(sqrt 2)."""
    p = chi_square_p_value(np.array([60.0, 40.0]), np.array([0.5, 0.5]))
    assert p == pytest.approx(math.erfc(math.sqrt(2.0)), rel=1e-12)
    assert chi_square_p_value(np.array([50.0, 50.0]), np.array([0.5, 0.5])) == 1.0
