"""The engine's activations and the gated FFN's gate, row block by row block.

    activation_forward(name, x) -> (y, dy/dx)     the training forward keeps the derivative
    activation(name, x)         -> y              inference: the value alone
    gate(h01, name)             -> (g, q, h)      g = act(h0), q = act'(h0) * h1, h = g * h1

The numbers are the reference's (:mod:`minillm.ops.activations`) bit for bit: the
same operations in the same order, written into ``out=`` buffers a block of rows at
a time. Keeping dy/dx (one array) rather than x and what the derivative needs makes
every backward one multiply, dx = dy * dy/dx.
"""

from __future__ import annotations

import math

import numpy as np

from minillm.backend import as_rows, blockwise, get_xp

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


def _gelu_sigmoid_into(x, s):
    """s = 1 / (1 + exp(-2u)), -2u = (-2ca x^2 - 2c) x, written into s (x's shape)."""
    xp = get_xp(x)
    xp.multiply(x, x, out=s)
    s *= -2.0 * _GELU_C * _GELU_A
    s += -2.0 * _GELU_C
    s *= x
    with np.errstate(over="ignore"):  # exp(-2u) = inf for x << 0 gives s = 0, as it should
        xp.exp(s, out=s)
    s += 1.0
    xp.reciprocal(s, out=s)


def _gelu_new_block(x, y, d):
    """One block: y = x s and d = dy/dx = s + d(2u)/dx x s (1 - s), with s = sigmoid(2u)."""
    xp = get_xp(x)
    _gelu_sigmoid_into(x, d)  # d holds s for now
    xp.multiply(x, d, out=y)  # y = x s
    k = x * x
    k *= 6.0 * _GELU_C * _GELU_A
    k += 2.0 * _GELU_C  # d(2u)/dx
    k *= x
    k *= d
    k *= 1.0 - d
    d += k


def _gelu_new_value_block(x, y):
    _gelu_sigmoid_into(x, y)  # y holds s
    y *= x


def _sigmoid(x):
    """1 / (1 + exp(-x)), a new array."""
    xp = get_xp(x)
    with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives 0, as it should
        s = xp.exp(-x)
    s += 1.0
    xp.reciprocal(s, out=s)
    return s


def activation_forward(name: str, x):
    """(act(x), dy/dx), both x's shape, for act "relu", "gelu_new" or "silu"."""
    xp = get_xp(x)
    if name == "relu":
        return xp.maximum(x, 0), x > 0  # relu's derivative as a bool mask
    if name == "silu":
        s = _sigmoid(x)
        return s * x, s * (1.0 + x * (1.0 - s))
    y, d = xp.empty(x.shape, dtype=x.dtype), xp.empty(x.shape, dtype=x.dtype)  # C-contiguous
    blockwise(_gelu_new_block, as_rows(x), as_rows(y), as_rows(d))
    return y, d


def activation(name: str, x):
    """act(x) alone (no derivative): inference, and the gated FFN's forward."""
    xp = get_xp(x)
    if name == "relu":
        return xp.maximum(x, 0)
    if name == "silu":
        y = _sigmoid(x)
        y *= x
        return y
    y = xp.empty(x.shape, dtype=x.dtype)
    blockwise(_gelu_new_value_block, as_rows(x), as_rows(y))
    return y


# ------------------------------------------------------------------ the gate


def _gate_block(g, h1, dact, h, q):
    xp = get_xp(g)
    xp.multiply(g, h1, out=h)  # h = g * h1
    xp.multiply(dact, h1, out=q)  # q = act'(h0) * h1, what dh0 needs


def gate(h01, name: str):
    """[h0|h1] (B, L, 2F) -> (g, q, h), each (B, L, F): g = act(h0), q = act'(h0) * h1, h = g * h1."""
    xp = get_xp(h01)
    F = h01.shape[-1] // 2
    h0, h1 = h01[..., :F], h01[..., F:]  # (B, L, F) views
    g, dact = activation_forward(name, h0)
    h, q = xp.empty(g.shape, dtype=g.dtype), xp.empty(g.shape, dtype=g.dtype)  # (B, L, F)
    blockwise(_gate_block, as_rows(g), as_rows(h1), as_rows(dact), as_rows(h), as_rows(q))
    return g, q, h


def _gate_backward_block(dh, g, q, dh0, dh1):
    xp = get_xp(dh)
    xp.multiply(dh, g, out=dh1)  # h = g * h1  =>  dh1 = dh g
    xp.multiply(dh, q, out=dh0)  # h = act(h0) * h1  =>  dh0 = dh act'(h0) h1 = dh q


def gate_backward(dh, g, q):
    """dh (B, L, F) -> [dh0|dh1] (B*L, 2F), one matrix for the fused input GEMM's backward."""
    F = g.shape[-1]
    dh01 = get_xp(dh).empty((g.size // F, 2 * F), dtype=g.dtype)  # (B*L, 2F)
    blockwise(_gate_backward_block, as_rows(dh), as_rows(g), as_rows(q), dh01[:, :F], dh01[:, F:])
    return dh01
