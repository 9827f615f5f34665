"""A run's data: its examples from the ``run`` dict of its trainer state, encoded, and their verifiers.

    train, held = load_run_data(state["run"], "sft_data")   # the same examples on every resume
    enc = encode(train, tokenizer, 64, 64, "training", log) # a note when some were truncated

The ``run`` dict (:mod:`minillm.runfolder.state_file`) names the built-in suite
(sizes, tasks, weights, seed) or the ``--data`` / ``--eval-data`` files; so a
resumed run, and ``minillm eval`` of a run, read exactly the data it started with.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import minillm.seeds as seeds
from minillm.data import Example, encode_examples
from minillm.data.batching import held_out_positions
from minillm.data.jsonl_index import first_examples, index_lines, read_examples
from minillm.data.tasks import TASKS, builtin_dataset
from minillm.workflows.checks import Log

RL_MAX_TARGET_LEN = 64  # REINFORCE keeps this much of the reference outputs (rewards compare with them)


def load_run_data(run: dict[str, Any], train_stream: str) -> tuple[list[Example], list[Example]]:
    """(train, held-out) examples of a run, from the ``run`` dict of its trainer state.

    The built-in suite: ``n_train`` examples of the train split on ``train_stream``
    ("sft_data" or "rl_data") and ``n_eval`` of the eval split (the "eval_data"
    stream), of ``run["tasks"]`` (all when absent), the training examples mixed by
    ``run["task_weights"]`` (a preset's; balanced when absent) with the preset's
    ``run["instruction_dropout"]`` (none when absent), the held-out ones balanced and
    whole. ``--data``: the file, and ``--eval-data`` or else 5% of ``--data`` (1 to
    500 examples, the "held_out" stream) held out; then the first ``n_eval`` held-out
    examples when it is set. ``run["data_sample"]`` (when set, and below the training
    examples the file holds): only that many of them, drawn on the "data_sample" stream
    and kept in file order, are read (:func:`data_sample`).
    """
    seed = run["seed"]
    if run["data"] is None:
        tasks = run.get("tasks")
        train = builtin_dataset(run["n_train"], seed, "train", tasks, stream=train_stream,
                                weights=run.get("task_weights"),
                                instruction_dropout=run.get("instruction_dropout") or 0.0)
        held = builtin_dataset(run["n_eval"], seed, "eval", tasks)
        return train, held
    index = _index(run["data"])
    if run["eval_data"] is not None:
        train_pos, held_pos = np.arange(len(index)), np.arange(0)
    else:
        train_pos, held_pos = held_out_positions(len(index), seed)
    sample = run.get("data_sample")
    if sample is not None and sample < len(train_pos):
        drawn = seeds.generator(seed, "data_sample").choice(len(train_pos), sample, replace=False)
        train_pos = train_pos[np.sort(drawn)]
    n_eval = run["n_eval"] or None
    if run["eval_data"] is not None:
        held = first_examples(run["eval_data"], n_eval)
    else:
        held = read_examples(index, held_pos[:n_eval])
    return read_examples(index, train_pos), held


def _index(path: str):
    """:func:`index_lines` of ``path``, kept for the file as it is (its size, time and inode): the
    count before the settings and the read after them make one pass."""
    st = os.stat(path)
    return _cached_index(path, st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=2)
def _cached_index(path: str, size: int, mtime_ns: int, inode: int):
    return index_lines(path)


def count_train(run: dict[str, Any]) -> int:
    """The training examples of a run: ``n_train`` for the built-in suite; for ``--data``, the file's
    non-blank lines (less the 5% held out without ``--eval-data``), counted, not parsed."""
    if run["data"] is None:
        return run["n_train"]
    n = len(_index(run["data"]))
    return n if run["eval_data"] is not None else len(held_out_positions(n, 0)[0])


def data_sample(run: dict[str, Any], per_run: int) -> int | None:
    """How many of ``--data``'s training examples a run that draws ``per_run`` in all reads: None
    when that is all of them (or for the built-in suite).

    A run that draws fewer examples than the file holds sees each drawn one once, in a
    random order, as it would see the first ``per_run`` of a shuffled epoch of the whole
    file: it reads only those (:func:`load_run_data`'s ``run["data_sample"]``).
    """
    if run["data"] is None or per_run >= count_train(run):
        return None
    return per_run


def builtin_verifiers() -> dict[str, Callable]:
    """Each built-in task's verifier, by task name (for exact match by the task's own check)."""
    return {name: task.verify for name, task in TASKS.items()}


def encode(examples: Sequence[Example], tokenizer, max_source_len: int, max_target_len: int,
           what: str | None = None, log: Log | None = None):
    """The EncodedDataset of ``examples``; with ``what``, say (via ``log``) how many were truncated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        enc, stats = encode_examples(examples, tokenizer, max_source_len, max_target_len)
    if what and log and (stats.truncated_sources or stats.truncated_targets):
        log(f"{what} data: {stats.summary()} (--max-source-len {max_source_len}, "
            f"--max-target-len {max_target_len})")
    return enc
