"""The engine's elementwise passes, row block by row block: softmax, RMS norm, dropout.

Each computes the reference op's numbers (:mod:`minillm.ops.softmax`, ``norm``,
``dropout``), bit for bit: the same operations in the same order, on blocks of rows
(``backend.blockwise``) so that a chain of passes over one block stays in the L2
cache, with ``out=`` buffers instead of temporaries. tests/test_engine.py holds
each to its reference. A row's result depends only on that row, so the block
size changes nothing.

The inference forms (``softmax``, ``rms_norm``) run the same kernel once over
every row and keep nothing for a backward (decoding's few rows).
"""

from __future__ import annotations

from minillm.backend import as_rows, blockwise, get_xp, random_bits16
from minillm.ops.dropout import DropoutCache
from minillm.ops.norm import RMSNormCache

# ------------------------------------------------------------------ softmax


def _softmax_block(x, y):
    """y = softmax(x) over the last axis; y may be x itself."""
    xp = get_xp(x)
    xp.subtract(x, x.max(axis=-1, keepdims=True), out=y)  # x - max x
    xp.exp(y, out=y)
    y /= y.sum(axis=-1, keepdims=True)


def _softmax_backward_block(dy, y, dx):
    xp = get_xp(y)
    xp.multiply(dy, y, out=dx)
    # y = softmax(x)  =>  dx = (dy - sum(dy * y)) * y
    s = dx.sum(axis=-1, keepdims=True)  # (n, 1) sum(dy * y)
    xp.subtract(dy, s, out=dx)
    dx *= y


def softmax_forward(x):
    """x: (..., N) -> y: (..., N); the cache is y (``ops.softmax_forward``'s)."""
    y = get_xp(x).empty(x.shape, dtype=x.dtype)  # C-contiguous, so its rows are a view
    blockwise(_softmax_block, as_rows(x), as_rows(y))
    return y, y


def softmax(x, out=None):
    """softmax(x) for inference: one kernel call, no cache; ``out`` may be x (in place)."""
    y = get_xp(x).empty(x.shape, dtype=x.dtype) if out is None else out
    _softmax_block(x, y)
    return y


def softmax_backward(dy, y):
    """dy, y: (..., N) -> dx (..., N)."""
    dx = get_xp(y).empty(y.shape, dtype=y.dtype)
    blockwise(_softmax_backward_block, as_rows(dy), as_rows(y), as_rows(dx))
    return dx


# ------------------------------------------------------------------ RMS norm


def _rms_norm_block(x, w, eps, y, xhat):
    """y = xhat * w, xhat = x * r, r = 1 / sqrt(sum(x^2) / C + eps), over rows x (n, C); returns r.

    y's memory holds x^2 first; xhat may be y itself (inference keeps no xhat).
    """
    xp = get_xp(x)
    x2 = xp.multiply(x, x, out=y)  # (n, C) x^2, in y's memory
    r = 1.0 / xp.sqrt(x2.sum(axis=-1, keepdims=True) / x.shape[-1] + eps)  # (n, 1)
    xp.multiply(x, r, out=xhat)
    xp.multiply(xhat, w, out=y)
    return r


def rms_norm_forward(x, w, eps):
    """x: (..., C), w: (C,) -> (y (..., C), RMSNormCache(xhat, r, w))."""
    xp = get_xp(x)
    y, xhat = xp.empty(x.shape, dtype=x.dtype), xp.empty(x.shape, dtype=x.dtype)
    r = xp.empty((*x.shape[:-1], 1), dtype=x.dtype)

    def block(xb, yb, hb, rb):
        rb[:] = _rms_norm_block(xb, w, eps, yb, hb)
    blockwise(block, as_rows(x), as_rows(y), as_rows(xhat), as_rows(r))
    return y, RMSNormCache(xhat, r, w)


def rms_norm_output(cache: RMSNormCache):
    """y = xhat * w, the forward's output remade from its cache by the forward's own product.

    The same numbers as the forward returned, bit for bit, so a layer keeps xhat alone,
    not also y, and hands y to the op after the norm in its backward.
    """
    return get_xp(cache.xhat).multiply(cache.xhat, cache.w)  # (..., C)


def rms_norm(x, w, eps):
    """The norm for inference: x (..., C), w (C,) -> y (..., C), keeping no xhat or r."""
    y = get_xp(x).empty(x.shape, dtype=x.dtype)
    _rms_norm_block(x, w, eps, y, y)  # xhat lives in y, then y = xhat * w
    return y


def _rms_norm_backward_block(dy, xhat, r, w, dx):
    xp = get_xp(dy)
    # y = xhat * w  =>  dxhat = dy * w, written into dx's memory
    xp.multiply(dy, w, out=dx)
    # xhat = x r  =>  dx = (dxhat - xhat mean(dxhat * xhat)) r
    mean = (dx * xhat).mean(axis=-1, keepdims=True)  # (n, 1)
    dx -= xhat * mean
    dx *= r


def rms_norm_backward(dy, cache: RMSNormCache):
    """dy: (..., C) -> (dx (..., C), dw (C,))."""
    xhat, r, w = cache
    # y = xhat * w  =>  dw = the sum of dy * xhat over every leading position
    dw = (as_rows(dy) * as_rows(xhat)).sum(axis=0)  # (C,)
    dx = get_xp(dy).empty(xhat.shape, dtype=xhat.dtype)
    blockwise(lambda db, hb, rb, xb: _rms_norm_backward_block(db, hb, rb, w, xb),
              as_rows(dy), as_rows(xhat), as_rows(r), as_rows(dx))
    return dx, dw


# ------------------------------------------------------------------ dropout


def _keep_block(bits, x, threshold, scale, keep, y):
    xp = get_xp(x)
    xp.greater_equal(bits, threshold, out=keep)  # m
    xp.multiply(x, keep, out=y)
    y *= scale  # y = x * m * scale


def _scale_block(dy, keep, scale, dx):
    xp = get_xp(dy)
    xp.multiply(dy, keep, out=dx)
    dx *= scale


def dropout_forward(x, p: float, rng):
    """y = x * m * scale (the identity with rng None or p 0) -> (y, DropoutCache(keep, scale))."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
    if rng is None or p == 0.0:
        return x, DropoutCache(None, 1.0)
    xp = get_xp(x)
    threshold = round(p * 65536)  # drop where bits < threshold
    scale = x.dtype.type(1.0 / (1.0 - p))
    bits = random_bits16(rng, x.shape, like=x)  # (...) uint16
    keep, y = xp.empty(x.shape, dtype=bool), xp.empty(x.shape, dtype=x.dtype)
    blockwise(lambda b, xb, kb, yb: _keep_block(b, xb, threshold, scale, kb, yb),
              as_rows(bits), as_rows(x), as_rows(keep), as_rows(y))
    return y, DropoutCache(keep, scale)


def dropout_apply(t, cache: DropoutCache):
    """t * m * scale with the forward's mask: the backward (t = dy), and dropout(x) remade (t = x).

    Dropout is the linear map x -> x m scale and its backward applies that same map, so
    the forward's output is remade from its input and the mask, bit for bit, not kept.
    """
    keep, scale = cache
    if keep is None:
        return t
    out = get_xp(t).empty(keep.shape, dtype=t.dtype)
    blockwise(lambda tb, kb, ob: _scale_block(tb, kb, scale, ob), as_rows(t), as_rows(keep), as_rows(out))
    return out
