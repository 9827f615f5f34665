"""Inverted dropout, drawing its mask from an explicit Generator.

    y = x * m * scale,   m ~ Bernoulli(1 - p),   scale = 1 / (1 - p)

With ``rng=None`` (evaluation) or p == 0 it is the identity. The mask is drawn as
16-bit random integers, four per 64-bit draw of the generator (``random_bits16``):
m = [bits >= round(p * 2^16)], so the drop probability is p to 2^-16
(p = 0.1 drops with probability 0.100006).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minillm.backend import random_bits16


class DropoutCache(NamedTuple):
    """What ``dropout_backward`` needs: the keep-mask m (None: dropout was off) and the scale."""

    keep: Any  # (...) bool, or None
    scale: Any  # 1 / (1 - p), in x's dtype


def dropout_forward(x, params=None, p: float = 0.0, rng=None):
    """x: (...) -> y: (...)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
    if rng is None or p == 0.0:
        return x, DropoutCache(None, 1.0)
    keep = random_bits16(rng, x.shape, like=x) >= round(p * 65536)  # (...) m, drawn on the host
    scale = x.dtype.type(1.0 / (1.0 - p))
    return x * keep * scale, DropoutCache(keep, scale)


def dropout_backward(dy, cache: DropoutCache):
    """dy: (...) -> (dx (...), {})."""
    keep, scale = cache
    if keep is None:
        return dy, {}
    # y = x * m * scale  =>  dx = dy * m * scale
    return dy * keep * scale, {}
