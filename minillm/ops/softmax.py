"""Softmax over the last axis.

    y_i = exp(x_i - max x) / sum_j exp(x_j - max x)

Both passes run row block by row block (``blockwise``): each
block's chain of passes stays in the L2 cache. ``softmax`` is the inference
form: the same kernel, called once over the rows (a decode step's scores are
a few rows; the loop would cost more than it saves).
"""

from __future__ import annotations

from minillm.backend import as_rows, blockwise, get_xp


def _softmax_block(x, y):
    """y = softmax(x) over the last axis; y may be x itself."""
    xp = get_xp(x)
    xp.subtract(x, x.max(axis=-1, keepdims=True), out=y)  # x - max x
    xp.exp(y, out=y)
    y /= y.sum(axis=-1, keepdims=True)


def _softmax_backward_block(dy, y, dx):
    xp = get_xp(y)
    xp.multiply(dy, y, out=dx)
    # y = softmax(x)  =>  dx = y * (dy - sum(dy * y))
    s = dx.sum(axis=-1, keepdims=True)  # (n, 1) sum(dy * y)
    xp.subtract(dy, s, out=dx)
    dx *= y


def softmax_forward(x, params=None):
    """x: (..., N) -> y: (..., N), rows summing to 1. The cache is y."""
    xp = get_xp(x)
    y = xp.empty(x.shape, dtype=x.dtype)  # C-contiguous, so its rows are a view
    blockwise(_softmax_block, as_rows(x), as_rows(y))
    return y, y


def softmax(x, out=None):
    """x: (..., N) -> y: (..., N), as ``softmax_forward``, for inference: one kernel call, no cache.

    out: the array y is written to (default a new one; x itself computes in place).
    """
    y = get_xp(x).empty(x.shape, dtype=x.dtype) if out is None else out
    _softmax_block(x, y)
    return y


def softmax_backward(dy, cache):
    y = cache
    xp = get_xp(y)
    dx = xp.empty(y.shape, dtype=y.dtype)
    blockwise(_softmax_backward_block, as_rows(dy), as_rows(y), as_rows(dx))
    return dx, {}
