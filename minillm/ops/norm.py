"""T5's layer norm: RMS norm with a gain, no mean subtraction and no bias.

    r = 1 / sqrt(mean(x^2, over C) + eps)
    y = w * (x * r)

This is ``T5LayerNorm`` exactly (eps inside the square root, biased mean).
"""

from __future__ import annotations

from minillm.backend import get_xp


def rms_norm_forward(x, params, eps=1e-6):
    """x: (..., C), params["weight"]: (C,) -> y: (..., C)."""
    xp = get_xp(x)
    w = params["weight"]
    r = 1.0 / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)  # (..., 1)
    xhat = x * r  # (..., C)
    return w * xhat, (xhat, r, w)


def rms_norm_backward(dy, cache):
    """dy: (..., C) -> dx: (..., C), grads {"weight": (C,)}."""
    xhat, r, w = cache
    # y = w * xhat  =>  dw = sum of dy * xhat over every leading position
    dw = (dy * xhat).reshape(-1, xhat.shape[-1]).sum(axis=0)  # (C,)
    # y = w * xhat  =>  dxhat = dy * w
    dxhat = dy * w  # (..., C)
    # xhat = x * r, r = (mean(x^2) + eps)^(-1/2)
    #   =>  dx = r * (dxhat - xhat * mean(dxhat * xhat))
    dx = r * (dxhat - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, {"weight": dw}
