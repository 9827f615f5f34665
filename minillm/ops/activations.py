"""Elementwise activations T5 uses, each a forward/backward pair and an inference form.

    relu(x)     = max(x, 0)
    gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (the tanh form)
                = x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3))        (how it is computed)
    silu(x)     = x * sigmoid(x)

Shapes are unchanged: x (...) -> y (...). They take no params. Every forward's
cache is the derivative dy/dx itself, so every backward is dx = dy * cache
(the gated FFN fuses that product with its gate's). The inference forms
(``relu``, ``gelu_new``, ``silu``) compute y with the forward's own kernel and
skip the derivative. ``ACTIVATIONS`` maps a name to its (forward, backward)
pair; ``FUNCTIONS`` to its inference form (generation).
"""

from __future__ import annotations

import math

import numpy as np

from minillm.backend import as_rows, blockwise, get_xp

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


def relu(x):
    """max(x, 0) for inference: x (...) -> (...)."""
    return get_xp(x).maximum(x, 0)


def relu_forward(x, params=None):
    return relu(x), x > 0


def relu_backward(dy, cache):
    # y = x * [x > 0]  =>  dx = dy * [x > 0]
    return dy * cache, {}


def _sigmoid_2u(x, s):
    """s = sigmoid(2u) = 0.5 (1 + tanh(u)), u = c (x + a x^3), written into s (x's shape)."""
    xp = get_xp(x)
    # -2u = x (-2c - 2ca x^2), then s = 1 / (1 + exp(-2u)): one exp, cheaper here
    # than tanh, and the same number up to rounding
    xp.multiply(x, x, out=s)
    s *= -2.0 * _GELU_C * _GELU_A
    s += -2.0 * _GELU_C
    s *= x
    with np.errstate(over="ignore"):  # exp(-2u) = inf for x << 0 gives s = 0, as it should
        xp.exp(s, out=s)
    s += 1.0
    xp.reciprocal(s, out=s)


def _gelu_new_block(x, y, d):
    """One block of gelu_new: y = x s and d = dy/dx, with s = sigmoid(2u)."""
    xp = get_xp(x)
    _sigmoid_2u(x, d)  # d holds s for now
    xp.multiply(x, d, out=y)  # y = x s
    # dy/dx = s + x s (1 - s) d(2u)/dx,  d(2u)/dx = 2c (1 + 3a x^2)
    k = x * x
    k *= 6.0 * _GELU_C * _GELU_A
    k += 2.0 * _GELU_C
    k *= x  # x d(2u)/dx
    k *= d
    k *= 1.0 - d  # x s (1 - s) d(2u)/dx
    d += k


def _gelu_new_value_block(x, y):
    """One block of gelu_new without its derivative: y = x s."""
    _sigmoid_2u(x, y)  # y holds s
    y *= x


def gelu_new(x):
    """gelu_new(x) alone, for inference (no derivative kept).  x: (...) -> (...)."""
    xp = get_xp(x)
    y = xp.empty(x.shape, dtype=x.dtype)
    blockwise(_gelu_new_value_block, as_rows(x), as_rows(y))
    return y


def gelu_new_forward(x, params=None):
    """y = gelu_new(x); the cache is dy/dx itself.

    Computed block by block (``blockwise``): each block's passes stay in the L2
    cache. Keeping dy/dx rather than x and s keeps one array instead of two, and
    the backward is a single multiply.
    """
    xp = get_xp(x)
    y, d = xp.empty(x.shape, dtype=x.dtype), xp.empty(x.shape, dtype=x.dtype)  # C-contiguous
    blockwise(_gelu_new_block, as_rows(x), as_rows(y), as_rows(d))
    return y, d


def gelu_new_backward(dy, cache):
    # y = gelu_new(x)  =>  dx = dy * dy/dx, the derivative the forward kept
    return dy * cache, {}


def _sigmoid(x):
    """s = sigmoid(x) = 1 / (1 + exp(-x)), a new array (x's shape)."""
    xp = get_xp(x)
    with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives s = 0, as it should
        s = xp.exp(-x)
    s += 1.0
    xp.reciprocal(s, out=s)
    return s


def silu(x):
    """x sigmoid(x) for inference: x (...) -> (...)."""
    y = _sigmoid(x)  # holds s for now
    y *= x
    return y


def silu_forward(x, params=None):
    s = _sigmoid(x)
    # y = x s(x)  =>  dy/dx = s + x s (1 - s), kept as the cache
    return s * x, s * (1.0 + x * (1.0 - s))


def silu_backward(dy, cache):
    # y = silu(x)  =>  dx = dy * dy/dx, the derivative the forward kept
    return dy * cache, {}


ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "gelu_new": (gelu_new_forward, gelu_new_backward),
    "silu": (silu_forward, silu_backward),
}

FUNCTIONS = {"relu": relu, "gelu_new": gelu_new, "silu": silu}
"""The activations' inference forms (generation): the forward's kernel, no derivative."""
