"""The engine's feed-forward blocks: caches that keep no copies, the gated one's GEMMs fused.

The math is :mod:`minillm.ops.ffn`'s (plain and gated). What differs:

- neither cache holds the input x: the layer remakes it from its norm's cache and
  passes it to the backward;
- the plain FFN keeps act'(h0), dropout's mask and hd (``W_o``'s input);
- the gated FFN runs W_i0 and W_i1 as one GEMM of width 2F each way ([h0|h1] =
  x [W_i0; W_i1]^T), computes act(h0) alone in the forward, and keeps only [h0|h1]
  and the mask: the backward remakes act(h0), act'(h0) * h1, h and dropout(h) from
  them with the same kernels (:func:`minillm.engine.activations.gate`), bit for bit;
- ``ffn`` is the inference form for decoding's few rows, over the weights as stored.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minillm.backend import get_xp
from minillm.engine.activations import activation, activation_forward, gate, gate_backward
from minillm.engine.attention import project
from minillm.engine.elementwise import dropout_apply, dropout_forward
from minillm.ops.dropout import DropoutCache


def input_weight(params):
    """[W_i0; W_i1] (2F, C): the gated FFN's two input projections, stacked for one GEMM."""
    return get_xp(params["wi_0"]).concatenate([params["wi_0"], params["wi_1"]])  # (2F, C)


def _output_backward(dy, hd, w_o):
    """y = hd W_o^T  =>  (dhd (B, L, F), dW_o (C, F))."""
    dw_o = dy.reshape(-1, dy.shape[-1]).T @ hd.reshape(-1, hd.shape[-1])  # (C, F)
    return project(dy, w_o.T), dw_o


def _input_backward(dh, x, w):
    """h = x w^T  =>  (dx (B, L, C), dw); dh (B, L, O) or (B*L, O)."""
    dh2 = dh.reshape(-1, w.shape[0])  # (B*L, O)
    x2 = x.reshape(dh2.shape[0], -1)  # (B*L, C)
    return (dh2 @ w).reshape(x.shape), dh2.T @ x2


class FFNCache(NamedTuple):
    """What ``ffn_backward`` needs besides the input x."""

    params: dict  # {"wi", "wo"}
    act_grad: Any  # (B, L, F) act'(h0)
    drop: DropoutCache
    hd: Any  # (B, L, F) dropout(act(h0)), W_o's input


def ffn_forward(x, params, act, dropout, rng):
    """y = W_o dropout(act(W_i x)): x (B, L, C) -> y (B, L, C)."""
    h, act_grad = activation_forward(act, project(x, params["wi"]))  # (B, L, F)
    hd, drop = dropout_forward(h, dropout, rng)
    return project(hd, params["wo"]), FFNCache(params, act_grad, drop, hd)


def ffn_backward(dy, cache: FFNCache, x):
    """dy (B, L, C), the forward's input x -> (dx (B, L, C), grads {"wi", "wo"})."""
    params, act_grad, drop, hd = cache
    dhd, dw_o = _output_backward(dy, hd, params["wo"])  # y = W_o hd
    del hd
    # hd = dropout(h);  h = act(h0)
    dh0 = dropout_apply(dhd, drop) * act_grad
    del dhd
    dx, dw_i = _input_backward(dh0, x, params["wi"])  # h0 = W_i x
    return dx, {"wi": dw_i, "wo": dw_o}


class GatedFFNCache(NamedTuple):
    """What ``gated_ffn_backward`` needs besides the input x: [h0|h1] and dropout's mask."""

    params: dict  # {"wi_0", "wi_1", "wo"}
    act: str
    h01: Any  # (B, L, 2F) [W_i0 x | W_i1 x]
    drop: DropoutCache


def gated_ffn_forward(x, params, act, dropout, rng):
    """y = W_o dropout(act(W_i0 x) * (W_i1 x)): x (B, L, C) -> y (B, L, C)."""
    h01 = project(x, input_weight(params))  # (B, L, 2F), one GEMM
    F = h01.shape[-1] // 2
    h = activation(act, h01[..., :F])  # act(h0), the value alone: the backward remakes act'(h0)
    h *= h01[..., F:]  # h = act(h0) * h1, as gate() computes it
    hd, drop = dropout_forward(h, dropout, rng)
    del h
    return project(hd, params["wo"]), GatedFFNCache(params, act, h01, drop)


def gated_ffn_backward(dy, cache: GatedFFNCache, x):
    """dy (B, L, C), the forward's input x -> (dx (B, L, C), grads {"wi_0", "wi_1", "wo"})."""
    params, act, h01, drop = cache
    g, q, h = gate(h01, act)  # act(h0), act'(h0) * h1, h: as the forward made them
    hd = dropout_apply(h, drop)  # dropout(h), remade
    del h
    dhd, dw_o = _output_backward(dy, hd, params["wo"])  # y = W_o hd
    del hd
    dh01 = gate_backward(dropout_apply(dhd, drop), g, q)  # (B*L, 2F) [dh0|dh1]
    del dhd, g, q
    dx, dw01 = _input_backward(dh01, x, input_weight(params))  # [h0|h1] = x [W_i0; W_i1]^T
    F = dw01.shape[0] // 2
    return dx, {"wi_0": dw01[:F], "wi_1": dw01[F:], "wo": dw_o}


def ffn(x, params, act):
    """The FFN for inference over a few rows, plain or gated: x (N, C) -> y (N, C), no cache.

    Computed transposed, h^T = W_i x^T (F, N) and y = (W_o h^T)^T, so each product reads
    a weight as stored (for a few rows as fast as a transposed copy, which is not needed).
    """
    xt = x.T  # (C, N)
    if "wi_0" in params:
        h = activation(act, params["wi_0"] @ xt)  # act(h0)^T: (F, N)
        h *= params["wi_1"] @ xt  # h = act(h0) * h1
    else:
        h = activation(act, params["wi"] @ xt)  # (F, N)
    return (params["wo"] @ h).T  # (C, F) @ (F, N) -> (N, C)
