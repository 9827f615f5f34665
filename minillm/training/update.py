"""The tail of every optimizer step, SFT's and REINFORCE's alike: clip, check, step, check.

    g      = g * min(1, max_norm / (|g| + 1e-6))       clipping by the global norm (torch's
                                                      clip_grad_norm_, minillm.optim.clip_grad_norm)
    stop     when the loss or |g| is NaN or inf        TrainingDiverged; nothing changed yet
    params = AdamW(params, g, lr)                      in place
    stop     when a parameter or moment is NaN or inf  TrainingDiverged; the model is changed, so
                                                      the run must not checkpoint it (the loop does not)

The trainers form the loss and the gradient (summed over micro-batches and ranks) and
the step's learning rate; :func:`apply_update` does the rest.
"""

from __future__ import annotations

import math

import numpy as np

from minillm.optim import clip_grad_norm, nonfinite_state


class TrainingDiverged(RuntimeError):
    """The loss, the gradient, or (after the update) a parameter or moment became NaN or inf."""


def apply_update(params: dict, grads: dict, optimizer, loss: float, lr: float,
                 max_grad_norm: float, where: str) -> float:
    """Clip ``grads`` in place, check the loss and the norm, take the optimizer step, check the state.

    ``where`` names the step in the message (e.g. "step 12", "step 3 (update 2 of 4)").
    Returns the gradient norm before clipping.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported just below
        norm = clip_grad_norm(grads, max_grad_norm)
    if not math.isfinite(loss):
        raise TrainingDiverged(f"{where}: the loss is {loss} (not finite)")
    if not math.isfinite(norm):
        raise TrainingDiverged(f"{where}: the gradient norm is {norm} (not finite)")
    checked_update(params, grads, optimizer, lr, where)
    return norm


def checked_update(params: dict, grads: dict, optimizer, lr: float, where: str) -> None:
    """``optimizer.step(params, grads, lr)`` in place, then TrainingDiverged (naming ``where``)
    when a parameter or moment is not finite: the run must not save them."""
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        optimizer.step(params, grads, lr)
    bad = nonfinite_state(params, optimizer)
    if bad is not None:
        raise TrainingDiverged(f"{where}: after the update (lr {lr:.3g}) {bad} is not finite "
                               "(NaN or inf)")
