"""T5's feed-forward block (``DenseReluDense``), as two ops: plain and gated.

    plain (T5 v1.0):          y = W_o dropout(act(W_i x))                    params {"wi", "wo"}
    gated (T5 v1.1, FLAN-T5): y = W_o dropout(act(W_i0 x) * (W_i1 x))        params {"wi_0", "wi_1", "wo"}

x: (B, L, C) -> y: (B, L, C);  W_i, W_i0, W_i1: (F, C),  W_o: (C, F);  the hidden h: (B, L, F).
The parameter names are transformers'; ``act`` is a config's ``dense_act_fn``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minillm.ops.activations import ACTIVATIONS
from minillm.ops.dropout import DropoutCache, dropout_backward, dropout_forward
from minillm.ops.linear import LinearCache, linear_backward, linear_forward


class FFNCache(NamedTuple):
    """What ``ffn_backward`` needs: the caches of h0 = W_i x, h = act(h0), hd = dropout(h), y = W_o hd."""

    wi: LinearCache
    act: Any  # the activation's cache
    act_name: str
    drop: DropoutCache
    wo: LinearCache


def ffn_forward(x, params, *, act="relu", dropout=0.0, rng=None):
    """y = W_o dropout(act(W_i x)).  x: (B, L, C) -> y: (B, L, C)."""
    act_forward, _ = ACTIVATIONS[act]
    h0, c_wi = linear_forward(x, {"weight": params["wi"]})  # (B, L, F)
    h, c_act = act_forward(h0)
    hd, c_drop = dropout_forward(h, p=dropout, rng=rng)
    y, c_wo = linear_forward(hd, {"weight": params["wo"]})  # (B, L, C)
    return y, FFNCache(c_wi, c_act, act, c_drop, c_wo)


def ffn_backward(dy, cache: FFNCache):
    """dy: (B, L, C) -> dx: (B, L, C), grads {"wi", "wo"}."""
    _, act_backward = ACTIVATIONS[cache.act_name]
    # y = W_o hd
    dhd, g_o = linear_backward(dy, cache.wo)
    # hd = dropout(h)
    dh, _ = dropout_backward(dhd, cache.drop)
    # h = act(h0)
    dh0, _ = act_backward(dh, cache.act)
    # h0 = W_i x
    dx, g_i = linear_backward(dh0, cache.wi)
    return dx, {"wi": g_i["weight"], "wo": g_o["weight"]}


class GatedFFNCache(NamedTuple):
    """What ``gated_ffn_backward`` needs: h0 = W_i0 x, h1 = W_i1 x, g = act(h0), h = g * h1, ..."""

    wi_0: LinearCache
    wi_1: LinearCache
    act: Any  # the activation's cache
    act_name: str
    g: Any  # (B, L, F) act(h0)
    h1: Any  # (B, L, F) W_i1 x
    drop: DropoutCache
    wo: LinearCache


def gated_ffn_forward(x, params, *, act="gelu_new", dropout=0.0, rng=None):
    """y = W_o dropout(act(W_i0 x) * (W_i1 x)).  x: (B, L, C) -> y: (B, L, C)."""
    act_forward, _ = ACTIVATIONS[act]
    h0, c_wi0 = linear_forward(x, {"weight": params["wi_0"]})  # (B, L, F)
    h1, c_wi1 = linear_forward(x, {"weight": params["wi_1"]})  # (B, L, F)
    g, c_act = act_forward(h0)
    h = g * h1  # the gate
    hd, c_drop = dropout_forward(h, p=dropout, rng=rng)
    y, c_wo = linear_forward(hd, {"weight": params["wo"]})  # (B, L, C)
    return y, GatedFFNCache(c_wi0, c_wi1, c_act, act, g, h1, c_drop, c_wo)


def gated_ffn_backward(dy, cache: GatedFFNCache):
    """dy: (B, L, C) -> dx: (B, L, C), grads {"wi_0", "wi_1", "wo"}."""
    _, act_backward = ACTIVATIONS[cache.act_name]
    # y = W_o hd
    dhd, g_o = linear_backward(dy, cache.wo)
    # hd = dropout(h)
    dh, _ = dropout_backward(dhd, cache.drop)
    # h = g * h1  =>  dg = dh h1,  dh1 = dh g
    dg, dh1 = dh * cache.h1, dh * cache.g
    # g = act(h0)
    dh0, _ = act_backward(dg, cache.act)
    # h0 = W_i0 x,  h1 = W_i1 x  =>  dx = dh0 W_i0 + dh1 W_i1
    dx0, g_i0 = linear_backward(dh0, cache.wi_0)
    dx1, g_i1 = linear_backward(dh1, cache.wi_1)
    return dx0 + dx1, {"wi_0": g_i0["weight"], "wi_1": g_i1["weight"], "wo": g_o["weight"]}
