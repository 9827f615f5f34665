"""A JSONL file's non-blank lines, found without parsing them, and the examples of some of them.

    index = index_lines("train.jsonl")            # where each non-blank line starts, and its number
    examples = read_examples(index, [0, 5, 9])    # those lines parsed (an Example each), in order
    examples = first_examples("val.jsonl", 200)   # the first 200 examples, the rest never read

A run that needs fewer examples than a large file holds reads only those
(:func:`minillm.workflows.run_data.load_run_data`): the index is one pass over the
bytes, keeping 16 bytes a line, and only the lines drawn are parsed and kept. A line
is blank when it holds only JSON's whitespace (space, tab, CR, LF), as
:func:`minillm.data.examples.load_jsonl` skips it; every line is read by the one
rule of :mod:`minillm.storage.reading` (a regular file, lines of at most 1 MiB).
"""

from __future__ import annotations

import itertools
import os
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from minillm.data.examples import BLANK, Example, iter_jsonl, parse_line
from minillm.storage.reading import MAX_LINE, open_input, read_lines


@dataclass(frozen=True)
class LineIndex:
    """The non-blank lines of a JSONL file: byte offset ``starts[i]`` and 1-based ``numbers[i]``."""

    path: str
    starts: np.ndarray  # (N,) int64
    numbers: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.starts)


def index_lines(path: str | os.PathLike) -> LineIndex:
    """Every non-blank line of ``path``, in one pass over its bytes (a line over 1 MiB: ValueError
    naming it; an empty file: ValueError, it has no examples)."""
    path = os.fspath(path)
    starts, numbers, at = array("q"), array("q"), 0
    with open_input(path) as f:
        for lineno, raw in read_lines(f, path):
            if raw.strip(BLANK):
                starts.append(at)
                numbers.append(lineno)
            at += len(raw)
    if not starts:
        raise ValueError(f"{path}: no examples (the file is empty or has only blank lines)")
    return LineIndex(path, np.frombuffer(starts, dtype=np.int64), np.frombuffer(numbers, dtype=np.int64))


def read_examples(index: LineIndex, positions: Sequence[int]) -> list[Example]:
    """The examples of the indexed lines ``positions`` (0-based among the non-blank ones), in that
    order; a bad line is a ValueError naming the file and its line number."""
    order = np.argsort(np.asarray(positions, dtype=np.int64), kind="stable")
    out: list[Example | None] = [None] * len(order)
    with open_input(index.path) as f:  # read in file order, each line once
        for k in order:
            i = int(positions[k])
            f.seek(int(index.starts[i]))
            raw = f.readline(MAX_LINE + 1)
            example = parse_line(raw, f"{index.path}, line {int(index.numbers[i])}")
            if example is None:  # the file changed since it was indexed
                raise ValueError(f"{index.path}, line {int(index.numbers[i])}: blank now; the file "
                                 "changed while it was read")
            out[k] = example
    return out


def first_examples(path: str | os.PathLike, n: int | None) -> list[Example]:
    """The first ``n`` examples of a JSONL file (None: all), reading no further than the last."""
    path = os.fspath(path)
    with open_input(path) as f:
        examples = [ex for _, ex in itertools.islice(iter_jsonl(f, path), n)]
    if not examples:
        raise ValueError(f"{path}: no examples (the file is empty or has only blank lines)")
    return examples
