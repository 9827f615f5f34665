"""T5's layer norm: RMS norm with a gain, no mean subtraction and no bias.

    r = 1 / sqrt(mean(x^2, over C) + eps)
    y = w * (x * r)

This is ``T5LayerNorm`` exactly (eps inside the square root, biased mean).
Forward and backward run row block by row block (``blockwise``); ``rms_norm``
is the inference form: the same kernel called once, keeping no xhat or r.
"""

from __future__ import annotations

from minillm.backend import as_rows, blockwise, get_xp


def _rms_norm_block(x, w, eps, y, xhat):
    """y = w * xhat, xhat = x * r, r = 1 / sqrt(mean(x^2) + eps), over rows x (..., C); returns r (..., 1).

    y's memory holds x^2 first; xhat may be y itself (inference keeps no xhat).
    The mean is written sum / C: the same number as ``mean`` (which divides the
    same sum), without its Python wrapper, which costs more than the sum for a few rows.
    """
    xp = get_xp(x)
    x2 = xp.multiply(x, x, out=y)  # (..., C) x^2, in y's memory
    r = 1.0 / xp.sqrt(x2.sum(axis=-1, keepdims=True) / x.shape[-1] + eps)  # (..., 1)
    xp.multiply(x, r, out=xhat)
    xp.multiply(xhat, w, out=y)
    return r


def _rms_norm_forward_block(x, w, eps, y, xhat, r):
    r[:] = _rms_norm_block(x, w, eps, y, xhat)


def _rms_norm_backward_block(dy, xhat, r, w, dx):
    xp = get_xp(dy)
    # y = w * xhat  =>  dxhat = dy * w
    dxhat = xp.multiply(dy, w, out=dx)  # (n, C), in dx's memory
    # xhat = x * r, r = (mean(x^2) + eps)^(-1/2)
    #   =>  dx = r * (dxhat - xhat * mean(dxhat * xhat))
    mean = (dxhat * xhat).mean(axis=-1, keepdims=True)  # (n, 1)
    dxhat -= xhat * mean
    dxhat *= r  # now dx


def rms_norm_forward(x, params, eps=1e-6):
    """x: (..., C), params["weight"]: (C,) -> y: (..., C).  Cache: xhat (..., C), r (..., 1), w."""
    xp = get_xp(x)
    w = params["weight"]
    y = xp.empty(x.shape, dtype=x.dtype)  # C-contiguous, so as_rows gives views
    xhat = xp.empty(x.shape, dtype=x.dtype)
    r = xp.empty((*x.shape[:-1], 1), dtype=x.dtype)
    blockwise(lambda xb, yb, hb, rb: _rms_norm_forward_block(xb, w, eps, yb, hb, rb),
              as_rows(x), as_rows(y), as_rows(xhat), as_rows(r))
    return y, (xhat, r, w)


def rms_norm_output(cache):
    """y = w * xhat, the forward's output, remade from its cache by the forward's own product.

    The same numbers as the forward returned, bit for bit, so a layer need not keep both y and
    xhat: the op after the norm can be told not to keep its input (``keep_input=False``).
    """
    xhat, _, w = cache
    return get_xp(xhat).multiply(xhat, w)  # (..., C)


def rms_norm(x, weight, eps=1e-6):
    """y = w * x / sqrt(mean(x^2) + eps) for inference: x (..., C), weight (C,) -> (..., C).

    ``rms_norm_forward``'s kernel, called once over every row, without the cache.
    """
    y = get_xp(x).empty(x.shape, dtype=x.dtype)
    _rms_norm_block(x, weight, eps, y, y)  # xhat lives in y, then y = w * xhat
    return y


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
