"""The elementwise activations T5 uses, each a forward/backward pair.

    relu(x)     = max(x, 0)
    gelu_new(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)      (GELU's tanh form)
    silu(x)     = x sigmoid(x)

Shapes are unchanged: x (...) -> y (...). They take no parameters; the cache is
the input x, from which each backward computes the derivative dy/dx.

gelu_new is computed through 0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + exp(-2u)):
one exp instead of a tanh, the same number up to rounding. ``ACTIVATIONS`` maps a
config's ``dense_act_fn`` to its (forward, backward) pair.
"""

from __future__ import annotations

import math

import numpy as np

from minillm.backend import get_xp

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


def relu_forward(x, params=None):
    """y = max(x, 0).  Cache: x."""
    return get_xp(x).maximum(x, 0), x


def relu_backward(dy, cache):
    x = cache
    # y = max(x, 0)  =>  dx = dy [x > 0]
    return dy * (x > 0), {}


def gelu_sigmoid(x):
    """s = sigmoid(2u) = 1 / (1 + exp(-2u)),  -2u = (-2c a x^2 - 2c) x: gelu_new(x) = x s."""
    xp = get_xp(x)
    minus_2u = (x * x * (-2.0 * _GELU_C * _GELU_A) + (-2.0 * _GELU_C)) * x
    with np.errstate(over="ignore"):  # exp(-2u) = inf for x << 0 gives s = 0, as it should
        return 1.0 / (xp.exp(minus_2u) + 1.0)


def gelu_new_forward(x, params=None):
    """y = gelu_new(x) = x sigmoid(2u).  Cache: x."""
    return x * gelu_sigmoid(x), x


def gelu_new_derivative(x):
    """dy/dx of y = x s, s = sigmoid(2u):  s + x s (1 - s) d(2u)/dx,  d(2u)/dx = 2c (1 + 3a x^2)."""
    s = gelu_sigmoid(x)
    d2u = x * x * (6.0 * _GELU_C * _GELU_A) + 2.0 * _GELU_C  # d(2u)/dx
    return s + d2u * x * s * (1.0 - s)


def gelu_new_backward(dy, cache):
    x = cache
    # y = gelu_new(x)  =>  dx = dy * dy/dx
    return dy * gelu_new_derivative(x), {}


def sigmoid(x):
    """1 / (1 + exp(-x))."""
    with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives 0, as it should
        return 1.0 / (get_xp(x).exp(-x) + 1.0)


def silu_forward(x, params=None):
    """y = x sigmoid(x).  Cache: x."""
    return sigmoid(x) * x, x


def silu_backward(dy, cache):
    x = cache
    s = sigmoid(x)
    # y = x s(x)  =>  dx = dy (s + x s (1 - s)) = dy s (1 + x (1 - s))
    return dy * (s * (1.0 + x * (1.0 - s))), {}


ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "gelu_new": (gelu_new_forward, gelu_new_backward),
    "silu": (silu_forward, silu_backward),
}
