"""Checks of the trainers' settings (TrainConfig, RLConfig): each field's type and range.

Each check raises a ValueError of one line naming the field, e.g.
``weight_decay must be a finite number >= 0, got nan``. A bool is not a number
here (``True`` is not a step count), NaN and inf are never a setting, and a
setting read back from trainer_state.json goes through the same checks.
"""

from __future__ import annotations

import math
from typing import Any

from minillm.optim import SCHEDULES

MAX_INT = 2**53  # any integer setting: exact as a JSON number, so a saved run resumes with it
# The largest value of each count, by field name (TrainConfig's and RLConfig's alike): far
# beyond any run this code can do, yet small enough that nothing sized or looped by it runs
# away (a step keeps its grad_accum micro-batches; a rollout holds batch_size x k samples).
MAXIMA = {"steps": 1 << 30, "warmup_steps": 1 << 30, "eval_every": 1 << 30, "save_every": 1 << 30,
          "log_every": 1 << 30, "batch_size": 1 << 16, "eval_batch_size": 1 << 16,
          "grad_accum": 1 << 12, "k": 1 << 12, "num_iterations": 1 << 10,
          "max_new_tokens": 1 << 16, "top_k": 1 << 30}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_int(name: str, v: Any, low: int = 0) -> None:
    """``v`` is an int (not a bool) >= ``low`` and at most ``MAXIMA[name]`` (else :data:`MAX_INT`)."""
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {kind}, got {v!r}")
    high = MAXIMA.get(name, MAX_INT)
    if v > high:
        raise ValueError(f"{name} must be at most {high:,}, got {v:,}")


def check_number(name: str, v: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    """``v`` is a finite int or float (not a bool) within the interval given.

    ``low`` / ``high``: the bounds (None: none); ``*_open``: the bound itself excluded.
    """
    ok = _is_number(v) and math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        raise ValueError(f"{name} must be {_describe(low, high, low_open, high_open)}, got {v!r}")


def _describe(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return "a finite number"


def check_choice(name: str, v: Any, choices) -> None:
    """``v`` is one of ``choices``."""
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {v!r}")


def check_bool(name: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be true or false, got {v!r}")


def check_betas(name: str, betas: Any) -> None:
    """Two numbers in [0, 1) (AdamW's moment decays)."""
    if not (isinstance(betas, tuple | list) and len(betas) == 2):
        raise ValueError(f"{name} must be two numbers in [0, 1), got {betas!r}")
    for i, b in enumerate(betas):
        check_number(f"{name}[{i}]", b, low=0, high=1, high_open=True)


def check_optimizer(config) -> None:
    """The AdamW fields: lr > 0, weight_decay >= 0, betas in [0, 1)^2, eps > 0, max_grad_norm > 0,
    min_lr_ratio in [0, 1], decay_fraction in (0, 1], the schedule's name; all finite."""
    check_number("lr", config.lr, low=0, low_open=True)
    check_number("weight_decay", config.weight_decay, low=0)
    check_betas("betas", config.betas)
    check_number("eps", config.eps, low=0, low_open=True)
    check_number("max_grad_norm", config.max_grad_norm, low=0, low_open=True)
    check_number("min_lr_ratio", config.min_lr_ratio, low=0, high=1)
    check_number("decay_fraction", config.decay_fraction, low=0, high=1, low_open=True)
    check_choice("schedule", config.schedule, SCHEDULES)


def check_run_counts(config, positive: tuple[str, ...], non_negative: tuple[str, ...]) -> None:
    """The integer fields, and ``save_every`` (None or an integer >= 0)."""
    for name in positive:
        check_int(name, getattr(config, name), low=1)
    for name in non_negative:
        check_int(name, getattr(config, name), low=0)
    if config.save_every is not None:
        check_int("save_every", config.save_every, low=0)
