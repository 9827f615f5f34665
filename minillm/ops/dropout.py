"""Inverted dropout with an explicit Generator.

    y = x * m / (1 - p),   m ~ Bernoulli(1 - p)

With ``rng=None`` (evaluation) or p == 0 it is the identity. The mask is drawn
as 16-bit random integers (m = [bits >= round(p * 2^16)]): four per 64-bit draw
of the generator, about 4x cheaper than uniform floats, so the drop probability
is p to a resolution of 2^-16 (p = 0.1 drops with probability 0.100006).
"""

from __future__ import annotations

from minillm.backend import as_rows, blockwise, get_xp, random_bits16


def _keep_block(bits, x, threshold, scale, keep, y):
    xp = get_xp(x)
    xp.greater_equal(bits, threshold, out=keep)  # m
    xp.multiply(x, keep, out=y)
    y *= scale  # y = x m / (1 - p)


def _scale_block(dy, keep, scale, dx):
    xp = get_xp(dy)
    xp.multiply(dy, keep, out=dx)
    dx *= scale


def dropout_forward(x, params=None, p: float = 0.0, rng=None):
    """x: (...) -> y: (...). The cache is the keep-mask m (bool, like x) and 1 / (1 - p); None when off."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
    if rng is None or p == 0.0:
        return x, None
    xp = get_xp(x)
    threshold = round(p * 65536)  # drop where bits < threshold
    scale = x.dtype.type(1.0 / (1.0 - p))
    bits = random_bits16(rng, x.shape, like=x)  # (...) uint16
    keep = xp.empty(x.shape, dtype=bool)
    y = xp.empty(x.shape, dtype=x.dtype)
    blockwise(lambda b, xb, kb, yb: _keep_block(b, xb, threshold, scale, kb, yb),
              as_rows(bits), as_rows(x), as_rows(keep), as_rows(y))
    return y, (keep, scale)


def dropout_backward(dy, cache):
    # y = x m / (1 - p)  =>  dx = dy m / (1 - p)
    if cache is None:
        return dy, {}
    keep, scale = cache
    xp = get_xp(dy)
    dx = xp.empty(keep.shape, dtype=dy.dtype)
    blockwise(lambda db, kb, xb: _scale_block(db, kb, scale, xb), as_rows(dy), as_rows(keep), as_rows(dx))
    return dx, {}
