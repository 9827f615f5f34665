"""A run's data: its examples from the ``run`` dict of its trainer state, encoded, and their verifiers.

    train, held = load_run_data(state["run"], "sft_data")   # the same examples on every resume
    enc = encode(train, tokenizer, 64, 64, "training", log) # a note when some were truncated

The ``run`` dict (:mod:`minillm.runfolder.state_file`) names the built-in suite
(sizes, tasks, weights, seed) or the ``--data`` / ``--eval-data`` files; so a
resumed run, and ``minillm eval`` of a run, read exactly the data it started with.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from minillm.data import Example, encode_examples, load_jsonl, split_held_out
from minillm.data.tasks import TASKS, builtin_dataset
from minillm.workflows.checks import Log

RL_MAX_TARGET_LEN = 64  # REINFORCE keeps this much of the reference outputs (rewards compare with them)


def load_run_data(run: dict[str, Any], train_stream: str) -> tuple[list[Example], list[Example]]:
    """(train, held-out) examples of a run, from the ``run`` dict of its trainer state.

    The built-in suite: ``n_train`` examples of the train split on ``train_stream``
    ("sft_data" or "rl_data") and ``n_eval`` of the eval split (the "eval_data"
    stream), of ``run["tasks"]`` (all when absent), the training examples mixed by
    ``run["task_weights"]`` (a preset's; balanced when absent), the held-out ones
    balanced. ``--data``: the file, and
    ``--eval-data`` or else 5% of ``--data`` (1 to 500 examples, the "held_out"
    stream) held out; then the first ``n_eval`` held-out examples when it is set.
    """
    seed = run["seed"]
    if run["data"] is None:
        tasks = run.get("tasks")
        train = builtin_dataset(run["n_train"], seed, "train", tasks, stream=train_stream,
                                weights=run.get("task_weights"))
        held = builtin_dataset(run["n_eval"], seed, "eval", tasks)
        return train, held
    train = load_jsonl(run["data"])
    if run["eval_data"] is not None:
        held = load_jsonl(run["eval_data"])
    else:
        train, held = split_held_out(train, seed)
    return train, held[: run["n_eval"]] if run["n_eval"] else held


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
