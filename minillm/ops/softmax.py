"""Softmax over the last axis.

    y_i = exp(x_i - max x) / sum_j exp(x_j - max x)
"""

from __future__ import annotations

from minillm.backend import get_xp


def softmax_forward(x, params=None):
    """x: (..., N) -> y: (..., N), rows summing to 1."""
    xp = get_xp(x)
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    y = e / e.sum(axis=-1, keepdims=True)
    return y, y


def softmax_backward(dy, cache):
    y = cache
    # y = softmax(x)  =>  dx = y * (dy - sum(dy * y))
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True)), {}
