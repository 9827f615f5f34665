"""What the subcommands share: their settings from the parsed flags, number and thread flags, notes.

    settings = settings_from(TrainSettings, args)          # one settings field per flag
    group.add_argument("--lr", type=finite)                # a finite float, else a one-line error
    add_threads_flag(group)                                # --threads N|auto
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys


def settings_from(cls, args: argparse.Namespace, **given):
    """The settings dataclass ``cls`` from parsed ``args``: each field from the flag of its name.

    ``given`` fields are taken as they are instead; lists (``nargs``) become tuples.
    """
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name not in given}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**values, **given)


def say(msg: str) -> None:
    """A note on stderr (stdout carries the command's result)."""
    print(msg, file=sys.stderr, flush=True)


def finite(text: str) -> float:
    """A flag's number: a float that is finite (``inf`` and ``nan`` are refused)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def threads(text: str) -> int | str:
    """--threads: a positive count, or 'auto'."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a thread count or 'auto', got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return n


def add_threads_flag(group) -> None:
    """The --threads flag of the commands that compute (train, rl, generate, eval)."""
    group.add_argument(
        "--threads", type=threads, default=None, metavar="N|auto",
        help="BLAS threads on the CPU. auto: the cores other processes leave idle, re-measured "
        "every second (much faster on a shared machine; the last bits of a result then depend on "
        "the load, since OpenBLAS's sums depend on its thread count, so runs are no longer "
        "reproducible bit for bit). Default: OpenBLAS's own (every core, or OPENBLAS_NUM_THREADS)")
