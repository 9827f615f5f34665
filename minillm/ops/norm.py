"""T5's layer norm: RMS norm with a gain, no mean subtraction and no bias.

    r = 1 / sqrt(mean(x^2, over C) + eps)
    y = w * (x * r)

This is ``T5LayerNorm`` exactly (eps inside the square root, biased mean).
Forward and backward run row block by row block (``blockwise``).
"""

from __future__ import annotations

from minillm.backend import as_rows, blockwise, get_xp


def _rms_norm_block(x, w, eps, y, xhat, r):
    xp = get_xp(x)
    xp.multiply(x, x, out=y)  # y as scratch: x^2
    r[:] = 1.0 / xp.sqrt(y.mean(axis=-1, keepdims=True) + eps)  # (n, 1)
    xp.multiply(x, r, out=xhat)
    xp.multiply(xhat, w, out=y)


def _rms_norm_backward_block(dy, xhat, r, w, dx):
    xp = get_xp(dy)
    # y = w * xhat  =>  dxhat = dy * w
    xp.multiply(dy, w, out=dx)  # dx holds dxhat
    # xhat = x * r, r = (mean(x^2) + eps)^(-1/2)
    #   =>  dx = r * (dxhat - xhat * mean(dxhat * xhat))
    mean = (dx * xhat).mean(axis=-1, keepdims=True)  # (n, 1)
    dx -= xhat * mean
    dx *= r


def rms_norm_forward(x, params, eps=1e-6):
    """x: (..., C), params["weight"]: (C,) -> y: (..., C).  Cache: xhat (..., C), r (..., 1), w."""
    xp = get_xp(x)
    w = params["weight"]
    y = xp.empty(x.shape, dtype=x.dtype)  # C-contiguous, so as_rows gives views
    xhat = xp.empty(x.shape, dtype=x.dtype)
    r = xp.empty((*x.shape[:-1], 1), dtype=x.dtype)
    blockwise(lambda xb, yb, hb, rb: _rms_norm_block(xb, w, eps, yb, hb, rb),
              as_rows(x), as_rows(y), as_rows(xhat), as_rows(r))
    return y, (xhat, r, w)


def rms_norm_backward(dy, cache):
    """dy: (..., C) -> dx: (..., C), grads {"weight": (C,)}."""
    xhat, r, w = cache
    xp = get_xp(dy)
    # y = w * xhat  =>  dw = sum of dy * xhat over every leading position
    dw = (as_rows(dy) * as_rows(xhat)).sum(axis=0)  # (C,)
    dx = xp.empty(xhat.shape, dtype=xhat.dtype)
    blockwise(lambda db, hb, rb, xb: _rms_norm_backward_block(db, hb, rb, w, xb),
              as_rows(dy), as_rows(xhat), as_rows(r), as_rows(dx))
    return dx, {"weight": dw}
