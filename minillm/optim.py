"""AdamW (and ScaledAdamW, its variant for T5's position tables), gradient clipping by
global norm, and learning-rate schedules.

The optimizer zips the params and grads dicts (same keys); its state is a
dict of arrays too, so it saves through safetensors like the weights.

AdamW (Loshchilov & Hutter; torch.optim.AdamW), at step t with rate lr:

    p <- p - lr * wd * p                         (decoupled weight decay)
    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from minillm.backend import as_rows, blockwise, get_xp, sum_of_squares


@dataclass
class AdamW:
    """AdamW over a dict of arrays. ``step`` updates params in place and returns them.

    ``no_decay``: a predicate on parameter names that are not decayed
    (by default the RMS-norm gains, as is usual for T5 fine-tuning).
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    no_decay: object = field(default=lambda name: "layer_norm" in name)
    t: int = 0
    m: dict = field(default_factory=dict)
    v: dict = field(default_factory=dict)

    def step(self, params: dict, grads: dict, lr: float | None = None) -> dict:
        """One update of every parameter that has a gradient; lr overrides self.lr."""
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.t += 1
        # bias corrections folded into the step size and eps (as torch does)
        bc1 = 1.0 - b1**self.t
        bc2_sqrt = math.sqrt(1.0 - b2**self.t)
        step_size = lr / bc1
        for name, g in grads.items():
            p = params[name]
            xp = get_xp(p)
            if name not in self.m:
                self.m[name] = xp.zeros_like(p)
                self.v[name] = xp.zeros_like(p)
            decay = 1.0 - lr * self.weight_decay if self.weight_decay and not self.no_decay(name) else 1.0
            m, v = self.m[name], self.v[name]
            if not p.flags.c_contiguous:  # rows of p would be a copy, not a view to update
                self._update(p, g, m, v, decay, step_size, bc2_sqrt)
                continue
            # block by block: the chain of passes over p, g, m, v stays in cache
            update = functools.partial(self._update, decay=decay, step_size=step_size, bc2_sqrt=bc2_sqrt)
            blockwise(update, as_rows(p), as_rows(g), as_rows(m), as_rows(v))
        return params

    def _update(self, p, g, m, v, decay: float, step_size: float, bc2_sqrt: float) -> None:
        """The AdamW update of one block of a parameter, in place (p, m, v are views)."""
        xp = get_xp(p)
        b1, b2 = self.betas
        if decay != 1.0:
            p *= decay  # p <- p - lr wd p
        m *= b1
        m += (1.0 - b1) * g  # m <- b1 m + (1 - b1) g
        v *= b2
        v += (1.0 - b2) * (g * g)  # v <- b2 v + (1 - b2) g^2
        denom = xp.sqrt(v)
        denom /= bc2_sqrt
        denom += self.eps  # sqrt(v_hat) + eps
        p -= step_size * (m / denom)  # p <- p - lr m_hat / (sqrt(v_hat) + eps)

    def state_dict(self) -> dict:
        """Arrays ("m.NAME", "v.NAME") for safetensors, and the scalar step count."""
        arrays = {f"m.{k}": v for k, v in self.m.items()} | {f"v.{k}": v for k, v in self.v.items()}
        return {"t": self.t, "arrays": arrays}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        arrays = state["arrays"]
        self.m = {k[2:]: v for k, v in arrays.items() if k.startswith("m.")}
        self.v = {k[2:]: v for k, v in arrays.items() if k.startswith("v.")}


POSITION_BIAS = "relative_attention_bias"


class ScaledAdamW:
    """AdamW with a larger learning rate for T5's relative position tables.

        lr_p = lr * position_bias_lr_scale    p = *.relative_attention_bias.weight  (NB, H)
        lr_p = lr                             every other parameter

    Why: Adam moves a parameter by about lr per step whatever its gradient's
    size, so a bias entry needs about b / lr steps to reach b. Attending sharply
    to one offset (the digit before, the word after) needs b of several units:
    thousands of steps at lr = 1e-3, during which the model cannot tell the
    order of its input ("161" comes out as "six hundred sixty-one"). The tables
    hold NB * H numbers per stack, so a larger rate there is cheap and safe. They
    are not weight-decayed. Two AdamW instances, stepped together (equal ``t``);
    the state dict is AdamW's format over all parameters.
    """

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01, position_bias_lr_scale: float = 1.0):
        self.scale = float(position_bias_lr_scale)
        self.main = AdamW(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        self.bias = AdamW(lr=lr * self.scale, betas=tuple(betas), eps=eps, weight_decay=0.0)

    @classmethod
    def from_config(cls, config) -> ScaledAdamW:
        """From a settings object with lr, betas, eps, weight_decay, position_bias_lr_scale."""
        return cls(config.lr, config.betas, config.eps, config.weight_decay,
                   config.position_bias_lr_scale)

    @property
    def t(self) -> int:
        return self.main.t

    def step(self, params: dict, grads: dict, lr: float) -> dict:
        """One AdamW step: rate lr for most parameters, lr * scale for the position tables."""
        bias = {k: g for k, g in grads.items() if POSITION_BIAS in k}
        self.main.step(params, {k: g for k, g in grads.items() if k not in bias}, lr)
        if bias:
            self.bias.step(params, bias, lr * self.scale)
        return params

    def state_dict(self) -> dict:
        """{"t", "arrays": {"m.NAME", "v.NAME"}} over all parameters (AdamW's format)."""
        a, b = self.main.state_dict(), self.bias.state_dict()
        return {"t": a["t"], "arrays": {**a["arrays"], **b["arrays"]}}

    def load_state_dict(self, state: dict) -> None:
        arrays = state["arrays"]
        is_bias = {k: POSITION_BIAS in k for k in arrays}
        self.main.load_state_dict({"t": state["t"],
                                   "arrays": {k: v for k, v in arrays.items() if not is_bias[k]}})
        self.bias.load_state_dict({"t": state["t"],
                                   "arrays": {k: v for k, v in arrays.items() if is_bias[k]}})


def global_norm(grads: dict) -> float:
    """sqrt(sum over every gradient of its squared entries).

    Each gradient's sum is (g * g).sum() bit for bit (``sum_of_squares``: NumPy's pairwise
    order, piece by piece, so no (V, C) temporary is made). The order matters: the main
    job's result turns on these last bits (another order moved a seed by 0.9-6 points).
    """
    total = 0.0
    for g in grads.values():
        total += float(sum_of_squares(g))
    return math.sqrt(total)


def first_nonfinite(arrays: dict) -> str | None:
    """The name of the first array holding a NaN or an inf; None when every entry is finite.

    All finite  <=>  isfinite(max(a)) and isfinite(min(a)) for every array a (max and
    min propagate NaN; an inf is itself the max or the min): two reductions per
    array, no temporary array, one host sync in all (the flags are combined on the
    arrays' device first). Only on failure are the arrays visited again for the name.
    """
    if not arrays:
        return None
    ok = True
    with np.errstate(invalid="ignore"):
        for a in arrays.values():
            if a.size:
                xp = get_xp(a)
                ok = ok & xp.isfinite(a.max()) & xp.isfinite(a.min())
    if bool(ok):
        return None
    with np.errstate(invalid="ignore"):
        return next(name for name, a in arrays.items()
                    if a.size and not (math.isfinite(float(a.max())) and math.isfinite(float(a.min()))))


def nonfinite_state(params: dict, optimizer: AdamW | ScaledAdamW) -> str | None:
    """What first holds a NaN or an inf after an update: "parameter NAME" or "AdamW moment
    m.NAME" / "v.NAME"; None when the parameters and the moments are all finite."""
    name = first_nonfinite(params)
    if name is not None:
        return f"parameter {name}"
    name = first_nonfinite(optimizer.state_dict()["arrays"])
    return None if name is None else f"AdamW moment {name}"


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale grads in place so their global norm is at most max_norm; return the norm before.

    As torch.nn.utils.clip_grad_norm_: scale = max_norm / (norm + 1e-6) when below 1.
    """
    norm = global_norm(grads)
    scale = max_norm / (norm + 1e-6)
    if scale < 1.0:
        for g in grads.values():
            g *= scale
    return norm


SCHEDULES = ("cosine", "linear", "constant", "wsd")  # lr_schedule's kinds


def lr_schedule(step: int, *, lr: float, total_steps: int, warmup_steps: int = 0,
                kind: str = "cosine", min_lr_ratio: float = 0.0, decay_fraction: float = 0.25) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Linear warmup from 0 to lr over warmup_steps, then decay to lr * min_lr_ratio
    at total_steps: "cosine" (half a cosine), "linear", "constant" (no decay), or
    "wsd" (warmup-stable-decay: lr held until the last ``decay_fraction`` of the
    steps, then linear, as MiniCPM's schedule; Hu et al. 2024)::

        wsd:  lr_t = lr                                    t <  D,  D = total_steps (1 - decay_fraction)
              lr_t = lr (m + (1 - m) (1 - (t - D) / (total_steps - D)))   t >= D,  m = min_lr_ratio
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; expected one of {', '.join(map(repr, SCHEDULES))}")
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if kind == "constant":
        return lr
    if kind == "wsd":
        start = total_steps * (1.0 - decay_fraction)
        if step < start:
            return lr
        frac = max(0.0, 1.0 - (step - start) / max(1.0, total_steps - start))
        return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * frac)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if kind == "cosine":
        frac = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:  # linear
        frac = 1.0 - progress
    return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * frac)
