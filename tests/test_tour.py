"""docs/tour.md, the guided reading, runs top to bottom: its ```python blocks, in order, in one namespace.

Each block is compiled with the page's own line numbers, so a failing assert's traceback
names docs/tour.md and the line. The tour writes its picture into MINILLM_TOUR_OUT (a
temporary folder here); the copy committed beside the page, docs/tour-attention.svg, is held
to the one the tour draws. ``python tests/test_tour.py`` runs the tour with docs/ as the
folder, which refreshes the committed picture.

The page's shape is checked too: sections 1-8 each run code and assert, no stretch of prose
runs longer than a screen before its code, and code lines keep the project's length.
"""

from __future__ import annotations

import os
import pathlib
import re
import traceback

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
TOUR = DOCS / "tour.md"
PICTURE = "tour-attention.svg"
SCREEN = 40  # lines of prose (blank lines included) before the next code block, at most
LINE_LENGTH = 110  # pyproject.toml's [tool.ruff] line-length
FENCE = re.compile(r"^```(\w*)\s*$")


def blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number of the block's first line of code, language, source) of each fenced block."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, i = i + 1, i + 1
        while not lines[i].startswith("```"):
            i += 1
        out.append((start + 1, m.group(1), "\n".join(lines[start:i]) + "\n"))
        i += 1
    return out


def run_page(text: str, filename: str, namespace: dict) -> dict:
    """Execute each ```python block of ``text`` in order in ``namespace``, keeping the page's line numbers."""
    for line, lang, source in blocks(text):
        if lang == "python":
            exec(compile("\n" * (line - 1) + source, filename, "exec"), namespace)
    return namespace


def run_tour(out: pathlib.Path) -> dict:
    """The tour, its picture written into ``out``; returns the namespace its blocks shared."""
    old = os.environ.get("MINILLM_TOUR_OUT")
    os.environ["MINILLM_TOUR_OUT"] = str(out)
    try:
        return run_page(TOUR.read_text(encoding="utf-8"), str(TOUR), {"__name__": "tour"})
    finally:
        if old is None:
            del os.environ["MINILLM_TOUR_OUT"]
        else:
            os.environ["MINILLM_TOUR_OUT"] = old


def sections(text: str) -> dict[str, str]:
    """{"1": the text of section "## 1. ...", ...}: each numbered section, up to the next "## " heading."""
    parts = re.split(r"^## ", text, flags=re.M)
    return {m.group(1): part for part in parts[1:] if (m := re.match(r"(\d+)\. ", part))}


# ------------------------------------------------------------------ the page runs


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    out = tmp_path_factory.mktemp("tour")
    return run_tour(out), out


def test_the_tour_runs_top_to_bottom(tour):
    namespace, out = tour
    assert (out / PICTURE).exists()
    # the last section ran to its end: the bug it plants was found
    assert "gradient of weight has shape" in namespace["failure"]


def picture_contents(svg: str) -> tuple[list[str], list[float]]:
    """The labels (every <text>) and the opacities (every <rect>) of an attention picture."""
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    opacities = [float(v) for v in re.findall(r'fill-opacity="([0-9.]+)"', svg)]
    return texts, opacities


def test_the_committed_picture_is_the_one_the_tour_draws(tour):
    _, out = tour
    drawn_labels, drawn = picture_contents((out / PICTURE).read_text(encoding="utf-8"))
    committed_labels, committed = picture_contents((DOCS / PICTURE).read_text(encoding="utf-8"))
    assert drawn_labels == committed_labels
    assert len(drawn) == len(committed) > 100
    # the weights are printed to 3 decimals; another BLAS may round the last one the other way
    assert max(abs(a - b) for a, b in zip(drawn, committed, strict=True)) <= 0.002


# ------------------------------------------------------------------ the page's shape


def test_sections_one_to_eight_each_run_code_that_asserts():
    found = sections(TOUR.read_text(encoding="utf-8"))
    assert list(found) == [str(i) for i in range(1, 9)]
    for number, text in found.items():
        code = [src for _, lang, src in blocks(text) if lang == "python"]
        assert code, f"section {number} has no python block"
        asserts = any(re.search(r"^\s*assert", src, flags=re.M) for src in code)
        assert asserts, f"section {number} asserts nothing"


def test_no_more_than_a_screen_of_prose_before_code():
    prose, in_code = 0, False
    for number, line in enumerate(TOUR.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            in_code, prose = not in_code, 0
        elif not in_code:
            prose += 1
            assert prose <= SCREEN, f"docs/tour.md:{number}: more than {SCREEN} lines of prose without code"


def test_code_lines_keep_the_projects_line_length():
    text = TOUR.read_text(encoding="utf-8")
    long = [f"docs/tour.md:{line + i}" for line, lang, src in blocks(text) if lang == "python"
            for i, code in enumerate(src.splitlines()) if len(code) > LINE_LENGTH]
    assert not long, f"code lines over {LINE_LENGTH} characters: {long}"


def test_the_runner_runs_python_blocks_in_order_and_names_the_failing_line():
    page = "prose\n```python\nx = 1\n```\nmore\n```bash\nexit 1\n```\n```python\ny = x + 1\ny / 0\n```\n"
    assert [(line, lang) for line, lang, _ in blocks(page)] == [(3, "python"), (7, "bash"), (10, "python")]
    namespace: dict = {}
    with pytest.raises(ZeroDivisionError) as info:
        run_page(page, "page.md", namespace)
    assert namespace["y"] == 2  # the bash block did not run; the python ones ran in order
    where = traceback.extract_tb(info.value.__traceback__)[-1]
    assert (where.filename, where.lineno) == ("page.md", 11)


if __name__ == "__main__":  # refresh docs/tour-attention.svg
    run_tour(DOCS)
