"""What a run folder holds besides the checkpoint files: the log, its pictures, the settings.

    DIR/metrics.jsonl       one JSON record per line: "train" every log_every steps, "eval" /
                            "final_eval" (and REINFORCE's "initial_eval") at each evaluation
    DIR/loss.svg            the loss curve (SFT; minillm.training.plot)
    DIR/tasks.svg           the held-out exact match of each task against the step (SFT)
    DIR/trainer_state.json  the settings (:class:`JSONSettings`) and the state of the step's
                            Generator (:func:`restore_generator`), beside the step and data position

See :mod:`minillm.training.checkpoint` for the files a checkpoint commits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import numpy as np

from minillm.storage.fileio import write_text
from minillm.training.checkpoint import FILE_MODE, STATE_NAME, read_state
from minillm.training.state_file import BIT_GENERATORS

METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "loss.svg"
TASKS_PLOT_NAME = "tasks.svg"
# every picture a run folder may hold (loss.png: drawn with matplotlib by earlier versions)
PLOT_NAMES = (PLOT_NAME, TASKS_PLOT_NAME, "loss.png")


class JSONSettings:
    """JSON round trip for a frozen settings dataclass (trainer_state.json keeps it).

    ``betas`` is a tuple in Python and a list in JSON; unknown keys are an error
    naming them (``_label`` says whose settings they are).
    """

    _label = "setting"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if "betas" in d:
            d["betas"] = list(d["betas"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls._label}(s): {', '.join(unknown)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


def restore_generator(rng_state: dict) -> np.random.Generator:
    """The Generator whose ``bit_generator.state`` was saved as ``rng_state`` (trainer_state.json).

    Only the bit generators of :data:`BIT_GENERATORS` are restored: the name in the
    file picks a class from that table, never an attribute looked up by name.
    """
    name = rng_state.get("bit_generator") if isinstance(rng_state, dict) else None
    if not isinstance(name, str) or name not in BIT_GENERATORS:
        raise ValueError(f"{STATE_NAME}: rng_state.bit_generator is {name!r}; "
                         f"a run's Generator is one of {', '.join(BIT_GENERATORS)}")
    rng = np.random.Generator(BIT_GENERATORS[name]())
    rng.bit_generator.state = rng_state
    return rng


def read_metrics(path: str) -> list[dict]:
    """The records of a metrics.jsonl (a missing file gives none; a torn last line is dropped)."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def write_metrics(path: str, records: list[dict]) -> None:
    """Rewrite metrics.jsonl with ``records`` (atomically), readable by all as the folder's files are."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in records), mode=FILE_MODE)


def saved_step(out_dir: str) -> str:
    """The step of the checkpoint in ``out_dir``, for messages ("?" when unreadable)."""
    try:
        return str(read_state(out_dir)["step"])
    except (OSError, ValueError, KeyError):
        return "?"


def plot_metrics(out_dir: str, records: list[dict]) -> dict[str, str]:
    """Write loss.svg and tasks.svg of ``records`` into ``out_dir``; {"loss"/"tasks": path written}.

    A chart with nothing to draw is not written; a failure is one line on stderr
    (a picture never fails the run).
    """
    from minillm.training.plot import plot_loss, plot_tasks

    written = {}
    for key, name, plot in (("loss", PLOT_NAME, plot_loss), ("tasks", TASKS_PLOT_NAME, plot_tasks)):
        path = os.path.join(out_dir, name)
        try:
            if plot(records, path):
                written[key] = path
        except Exception as e:  # noqa: BLE001 - a plot must not end a training run
            print(f"minillm: {path} not written ({e})", file=sys.stderr)
    return written
