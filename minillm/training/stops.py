"""How a run stops short, in one line that names only a checkpoint that exists.

    raise stopped(error, out_dir, world)        # "...; stopped. The last checkpoint (step 3) is kept in DIR"
    check_figures(record, "the held-out evaluation at step 4")   # TrainingDiverged for NaN / inf

A run stops on a non-finite loss, gradient, parameter or figure
(:class:`TrainingDiverged`), or when a write to its folder fails, the disk full or
the folder read-only (:class:`RunStopped`); both exit with status 1 from the CLI,
the last committed checkpoint intact. The message names that checkpoint's step,
read from the folder, or says that none was written yet.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from minillm.parallel import SINGLE, Single, mark_agreed
from minillm.runfolder import checkpoint as ckpt
from minillm.training.update import TrainingDiverged


class RunStopped(RuntimeError):
    """A run stopped before its end for want of its folder (a write failed: disk full, read-only)."""


def kept(out_dir: str, world: Single = SINGLE, last: str = "last") -> str:
    """The checkpoint a stopped run leaves, in words: its step, or that none was written.

    Read on rank 0 (the one that writes the folder); every rank gets the same words.
    """
    step = ckpt.saved_step(out_dir) if world.is_root else None
    if world.size > 1:  # (a collective: every rank calls this at the same point)
        step = world.gather_texts(json.dumps(step))[0]  # rank 0's, on every rank
        step = json.loads(step)
    return words(step, out_dir, last)


def words(step: str | None, out_dir: str, last: str = "last") -> str:
    """What a folder keeps, in words, from :func:`minillm.runfolder.checkpoint.saved_step`
    (``last``: "last good" after a divergence)."""
    if step is None:
        return f"no checkpoint was written in {out_dir} yet"
    if step == "?":
        return f"the {last} checkpoint is kept in {out_dir}"
    return f"the {last} checkpoint (step {step}) is kept in {out_dir}"


def stopped(error: BaseException, out_dir: str, world: Single = SINGLE) -> RuntimeError:
    """The error a run stops with, said with what it keeps (marked as raised on every rank).

    A failed write to the folder (an OSError on rank 0, or another rank's report of one)
    is a :class:`RunStopped`; a divergence stays a :class:`TrainingDiverged`.
    """
    what = (f"{error.filename or out_dir}: {error.strerror}"
            if isinstance(error, OSError) and error.strerror else str(error))
    kind = TrainingDiverged if isinstance(error, TrainingDiverged) else RunStopped
    note = kept(out_dir, world, "last good" if kind is TrainingDiverged else "last")
    stop = kind(f"{what}; stopped. {note[0].upper()}{note[1:]}")
    mark_agreed(stop)
    return stop


def write(world: Single, out_dir: str, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``, a write into the run folder, on rank 0 (``world.on_root``); a write
    that fails (an OSError: disk full, read-only, ...) stops the run with :func:`stopped`."""
    try:
        return world.on_root(fn, *args, **kwargs)
    except Exception as e:
        if not (isinstance(e, OSError) or "OSError" in getattr(e, "kinds", ())):
            raise
        raise stopped(e, out_dir, world) from None


def check_figures(record: dict[str, Any], where: str, out_dir: str, world: Single = SINGLE) -> None:
    """Stop the run (:func:`stopped`, a TrainingDiverged) at the first figure of ``record``
    (numbers, nested dicts) that is NaN or inf: it is never logged, compared or saved as the best."""
    bad = _first_bad(record)
    if bad is not None:
        raise stopped(TrainingDiverged(f"{where}: {bad[0]} is {bad[1]} (not finite)"), out_dir, world)


def _first_bad(record: dict[str, Any], prefix: str = "") -> tuple[str, float] | None:
    """(name, value) of the first non-finite float of ``record``, nested dicts searched."""
    for name, value in record.items():
        if isinstance(value, dict) and (bad := _first_bad(value, f"{prefix}{name}.")) is not None:
            return bad
        if isinstance(value, float) and not math.isfinite(value):
            return f"{prefix}{name}", value
    return None
