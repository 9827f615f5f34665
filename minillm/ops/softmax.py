"""Softmax over the last axis.

    y_i = exp(x_i - max x) / sum_j exp(x_j - max x)        x, y: (..., N)

Subtracting max x changes nothing in exact arithmetic and keeps exp from overflowing.
"""

from __future__ import annotations

from minillm.backend import get_xp


def softmax_forward(x, params=None):
    """x: (..., N) -> y: (..., N), each row summing to 1. The cache is y itself."""
    xp = get_xp(x)
    e = xp.exp(x - x.max(axis=-1, keepdims=True))  # (..., N)
    y = e / e.sum(axis=-1, keepdims=True)
    return y, y


def softmax_backward(dy, cache):
    """dy: (..., N) -> (dx (..., N), {})."""
    y = cache
    # y = softmax(x)  =>  dx = (dy - sum(dy * y)) * y
    dx = (dy - (dy * y).sum(axis=-1, keepdims=True)) * y
    return dx, {}
