"""T5's layer norm: an RMS norm with a gain, no mean subtraction and no bias.

    r    = 1 / sqrt(mean(x^2, over C) + eps)          (..., 1)
    xhat = x * r                                      (..., C)
    y    = xhat * w                                   (..., C),  w: (C,)

This is ``T5LayerNorm`` exactly: eps inside the square root, the biased mean.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minillm.backend import get_xp


class RMSNormCache(NamedTuple):
    """What ``rms_norm_backward`` needs."""

    xhat: Any  # (..., C) the normalised input x * r
    r: Any  # (..., 1) 1 / sqrt(mean(x^2) + eps)
    w: Any  # (C,) the gain


def rms_norm_forward(x, params, eps=1e-6):
    """x: (..., C), params["weight"]: w (C,) -> y: (..., C)."""
    xp = get_xp(x)
    w = params["weight"]
    # mean(x^2) written as the sum over C divided by C, which is how NumPy's mean computes it
    r = 1.0 / xp.sqrt((x * x).sum(axis=-1, keepdims=True) / x.shape[-1] + eps)  # (..., 1)
    xhat = x * r
    return xhat * w, RMSNormCache(xhat, r, w)


def rms_norm_backward(dy, cache: RMSNormCache):
    """dy: (..., C) -> dx: (..., C), grads {"weight": (C,)}."""
    xhat, r, w = cache
    C = xhat.shape[-1]
    # y = xhat * w  =>  dw = the sum of dy * xhat over every leading position
    dw = (dy * xhat).reshape(-1, C).sum(axis=0)  # (C,)
    # y = xhat * w  =>  dxhat = dy * w
    dxhat = dy * w
    # xhat = x r,  r = (mean(x^2) + eps)^(-1/2)  =>  dx = (dxhat - xhat mean(dxhat * xhat)) r
    dx = (dxhat - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)) * r
    return dx, {"weight": dw}
