"""Elementwise activations T5 uses, each a forward/backward pair.

    relu(x)     = max(x, 0)
    gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (the tanh form)
    silu(x)     = x * sigmoid(x)

Shapes are unchanged: x (...) -> y (...). They take no params.
"""

from __future__ import annotations

import math

from minillm.backend import get_xp

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


def relu_forward(x, params=None):
    xp = get_xp(x)
    return xp.maximum(x, 0), x > 0


def relu_backward(dy, cache):
    # y = x * [x > 0]  =>  dx = dy * [x > 0]
    return dy * cache, {}


def gelu_new_forward(x, params=None):
    xp = get_xp(x)
    # t = tanh(c (x + a x^3)) = tanh(c x (1 + a x^2)), built in place in one buffer
    # (elementwise passes over (B, L, F) are the FFN's main cost after its GEMMs)
    t = x * x
    t *= _GELU_A
    t += 1.0
    t *= x
    t *= _GELU_C
    xp.tanh(t, out=t)
    y = t + 1.0
    y *= x
    y *= 0.5  # y = 0.5 x (1 + t)
    return y, (x, t)


def gelu_new_backward(dy, cache):
    x, t = cache
    xp = get_xp(dy)
    # y = 0.5 x (1 + t),  t = tanh(u),  u = c (x + a x^3)
    #   =>  dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2), built in one buffer
    g = x * x
    g *= 3.0 * _GELU_A
    g += 1.0
    g *= x
    g *= _GELU_C  # c x (1 + 3 a x^2)
    s = t * t
    xp.subtract(1.0, s, out=s)  # 1 - t^2
    g *= s
    g += t
    g += 1.0
    g *= 0.5
    g *= dy
    return g, {}


def silu_forward(x, params=None):
    xp = get_xp(x)
    s = 1.0 / (1.0 + xp.exp(-x))
    return x * s, (x, s)


def silu_backward(dy, cache):
    x, s = cache
    # y = x s(x)  =>  dy/dx = s + x s (1 - s)
    return dy * (s * (1.0 + x * (1.0 - s))), {}


ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "gelu_new": (gelu_new_forward, gelu_new_backward),
    "silu": (silu_forward, silu_backward),
}
