"""T5's feed-forward block (``DenseReluDense``), plain or gated.

    plain (T5 v1.0):          y = W_o dropout(act(W_i x))
    gated (T5 v1.1, FLAN-T5): y = W_o dropout(act(W_i0 x) * (W_i1 x))

x: (B, L, C) -> y: (B, L, C); W_i, W_i0, W_i1: (F, C), W_o: (C, F).
params: {"wi", "wo"} or {"wi_0", "wi_1", "wo"}, the names transformers uses.
"""

from __future__ import annotations

from minillm.ops.activations import ACTIVATIONS
from minillm.ops.dropout import dropout_backward, dropout_forward
from minillm.ops.linear import linear_backward, linear_forward


def ffn_forward(x, params, *, act="relu", dropout=0.0, rng=None):
    act_fwd, _ = ACTIVATIONS[act]
    gated = "wi_0" in params
    if gated:
        h0, c0 = linear_forward(x, {"weight": params["wi_0"]})  # (B, L, F)
        g, ca = act_fwd(h0)
        h1, c1 = linear_forward(x, {"weight": params["wi_1"]})  # (B, L, F)
        h = g * h1
        caches = (c0, ca, c1, g, h1)
    else:
        h0, c0 = linear_forward(x, {"weight": params["wi"]})  # (B, L, F)
        h, ca = act_fwd(h0)
        caches = (c0, ca)
    hd, cd = dropout_forward(h, p=dropout, rng=rng)
    y, co = linear_forward(hd, {"weight": params["wo"]})  # (B, L, C)
    return y, (gated, act, caches, cd, co)


def ffn_backward(dy, cache):
    gated, act, caches, cd, co = cache
    _, act_bwd = ACTIVATIONS[act]
    # y = W_o hd
    dhd, g_o = linear_backward(dy, co)
    # hd = dropout(h)
    dh, _ = dropout_backward(dhd, cd)
    if gated:
        c0, ca, c1, g, h1 = caches
        # h = g * h1,  g = act(h0)
        dh1 = dh * g
        dg = dh * h1
        dh0, _ = act_bwd(dg, ca)
        # h0 = W_i0 x,  h1 = W_i1 x  (both read x)
        dx0, g0 = linear_backward(dh0, c0)
        dx1, g1 = linear_backward(dh1, c1)
        return dx0 + dx1, {"wi_0": g0["weight"], "wi_1": g1["weight"], "wo": g_o["weight"]}
    c0, ca = caches
    # h = act(h0),  h0 = W_i x
    dh0, _ = act_bwd(dh, ca)
    dx, gi = linear_backward(dh0, c0)
    return dx, {"wi": gi["weight"], "wo": g_o["weight"]}
