"""Inverted dropout with an explicit Generator.

    y = x * m / (1 - p),   m ~ Bernoulli(1 - p)

With ``rng=None`` (evaluation) or p == 0 it is the identity.
"""

from __future__ import annotations

from minillm.backend import random_uniform


def dropout_forward(x, params=None, p: float = 0.0, rng=None):
    """x: (...) -> y: (...). The scaled keep-mask is the cache (None when off)."""
    if rng is None or p == 0.0:
        return x, None
    keep = random_uniform(rng, x.shape, like=x) >= p
    mask = keep * x.dtype.type(1.0 / (1.0 - p))  # (...) scaled keep-mask, x's dtype
    return x * mask, mask


def dropout_backward(dy, cache):
    # y = x * mask  =>  dx = dy * mask
    mask = cache
    return (dy if mask is None else dy * mask), {}
