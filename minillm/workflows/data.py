"""``minillm data`` as one call: examples of the built-in task suite, written as JSONL.

    from minillm.workflows import DataSettings, make_data
    examples = make_data(DataSettings(task="qa", n=5, split="eval"))       # list[Example]
    make_data(DataSettings(n=1000, out="train.jsonl"))                     # also writes the file

The examples are :func:`minillm.data.tasks.builtin_dataset`'s: the train split
on the "sft_data" stream of :mod:`minillm.seeds`, the eval split on "eval_data",
so ``minillm data --n N --seed S`` writes the examples ``minillm train --n-train N
--seed S`` trains on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import minillm.seeds as seeds
from minillm.data import Example, to_jsonl_lines, write_jsonl
from minillm.data.tasks import TASKS, builtin_dataset, resolve_tasks
from minillm.workflows.checks import MAX_INT, check_positive

__all__ = ["DataSettings", "make_data", "task_samples", "to_jsonl_lines"]  # to_jsonl_lines: the CLI's stdout


@dataclass(frozen=True)
class DataSettings:
    """The ``minillm data`` flags but ``--list`` (that is :func:`task_samples`)."""

    task: str | Sequence[str] = "all"
    n: int = 100
    split: str = "train"
    seed: int = 0
    out: str | None = None


def make_data(settings: DataSettings) -> list[Example]:
    """``n`` examples of ``split`` balanced over ``task`` ("all", a name or names); written to ``out``."""
    s = settings
    check_positive(s, ("n",))
    if not 0 <= s.seed <= MAX_INT:
        raise ValueError(f"--seed must be in [0, 2**53], got {s.seed}")
    examples = builtin_dataset(s.n, seed=s.seed, split=s.split, tasks=resolve_tasks(s.task))
    if s.out is not None:
        write_jsonl(examples, s.out)
    return examples


def task_samples(seed: int = 0) -> list[tuple[str, str, Example]]:
    """(name, description, one train example) of every task (``minillm data --list``)."""
    rng = seeds.generator(seed, "sft_data")
    return [(name, task.description, task.sample(rng, "train")) for name, task in TASKS.items()]
