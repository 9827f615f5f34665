"""The engine's attention: fused projections, a core that keeps no copies, an inference core.

The math is :mod:`minillm.ops.attention`'s. What differs:

- the projections that read one input run as one GEMM: [q|k|v] = x [W_q; W_k; W_v]^T
  for self-attention, [k|v] = m [W_k; W_v]^T for cross-attention (a wider GEMM runs
  nearer BLAS's peak), and their backward is one GEMM each way. The cache holds the
  parameters, not the fused copy, which the backward makes again;
- the cache does not hold dropout(A), which the backward remakes from A and the mask
  (:func:`minillm.engine.elementwise.dropout_apply`), nor the query input x, which
  the layer remakes from its norm's cache and passes to the backward;
- softmax and dropout run block by block (:mod:`minillm.engine.elementwise`).

A fused GEMM's columns are not always its parts' bit for bit (OpenBLAS picks its
kernels by the matrix's width), so tests/test_engine.py holds these to the reference
to float64 rounding, not bit for bit.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minillm.backend import get_xp
from minillm.engine.elementwise import (
    dropout_apply,
    dropout_forward,
    softmax,
    softmax_backward,
    softmax_forward,
)
from minillm.ops.attention import merge_heads, split_heads, sum_to_shape
from minillm.ops.dropout import DropoutCache


def project(t, w):
    """t (B, L, C) @ w^T (C, O) as one 2-D GEMM -> (B, L, O)."""
    B, L, C = t.shape
    return (t.reshape(B * L, C) @ w.T).reshape(B, L, w.shape[0])  # (B, L, O)


def fused(params, names):
    """[W_a; W_b; ...] (n*H*D, C): the projections that read one input, stacked for one GEMM."""
    return get_xp(params[names[0]]).concatenate([params[n] for n in names])  # (n*H*D, C)


def project_heads(t, w, n_heads, parts):
    """[a|b|..] = t w^T in one GEMM, split into ``parts`` head arrays (B, H, L, D)."""
    return [split_heads(a, n_heads) for a in get_xp(t).split(project(t, w), parts, axis=-1)]


# ------------------------------------------------------------------ the core


class CoreCache(NamedTuple):
    """What the core's backward needs; dropout(A) is remade from ``a`` and ``drop``."""

    q: Any  # (B, H, T, D)
    k: Any  # (B, H, S, D)
    v: Any  # (B, H, S, D)
    a: Any  # (B, H, T, S) the probabilities A
    drop: DropoutCache
    bias_shape: tuple | None


def _scores(q, k, bias):
    """q k^T + bias (T5's scale is 1: its W_q holds it): (B, H, T, S)."""
    scores = q @ k.transpose(0, 1, 3, 2)  # (B, H, T, S)
    if bias is not None:
        scores += bias
    return scores


def core_forward(q, k, v, bias, dropout, rng):
    """ctx = dropout(softmax(q k^T + bias)) v: (B, H, T, D), and its cache."""
    a, _ = softmax_forward(_scores(q, k, bias))  # (B, H, T, S)
    a_drop, drop = dropout_forward(a, dropout, rng)
    return a_drop @ v, CoreCache(q, k, v, a, drop, None if bias is None else bias.shape)


def core(q, k, v, bias):
    """softmax(q k^T + bias) v for inference over the decoder's cached keys and values: no cache."""
    scores = _scores(q, k, bias)  # (N, H, T, S)
    return softmax(scores, out=scores) @ v  # (N, H, T, D)


def core_backward(dctx, cache: CoreCache):
    """dctx (B, H, T, D) -> (dq, dk, dv, dbias or None)."""
    q, k, v, a, drop, bias_shape = cache
    a_drop = dropout_apply(a, drop)  # dropout(A), remade
    # ctx = a_drop v
    da_drop = dctx @ v.transpose(0, 1, 3, 2)  # (B, H, T, S)
    dv = a_drop.transpose(0, 1, 3, 2) @ dctx  # (B, H, S, D)
    del a_drop
    # a_drop = dropout(a);  a = softmax(scores)
    dscores = softmax_backward(dropout_apply(da_drop, drop), a)  # (B, H, T, S)
    del da_drop
    # scores = q k^T + bias
    dbias = None if bias_shape is None else sum_to_shape(dscores, bias_shape)
    return dscores @ k, dscores.transpose(0, 1, 3, 2) @ q, dv, dbias


# ------------------------------------------------------------------ the projections


def _input_backward(head_grads, src, w_in):
    """[a|b|..] = src W_in^T  =>  (d_src (B, L, C), dW_in (n*H*D, C)), one GEMM each way.

    The n head gradients (B, H, L, D) are written into one (B, L, n, H, D) buffer, so
    that [da|db|..] is a single (B*L, n*H*D) matrix.
    """
    B, H, L, D = head_grads[0].shape
    d_in = get_xp(src).empty((B, L, len(head_grads), H, D), dtype=src.dtype)  # (B, L, n, H, D)
    for i, g in enumerate(head_grads):
        d_in[:, :, i] = g.transpose(0, 2, 1, 3)  # (B, L, H, D)
    d_in = d_in.reshape(B * L, len(head_grads) * H * D)  # (B*L, n*H*D)
    dw_in = d_in.T @ src.reshape(B * L, -1)  # (n*H*D, C)
    return (d_in @ w_in).reshape(src.shape), dw_in  # (B, L, C)


def _output_backward(dout, ctx, w_o, n_heads):
    """out = ctx W_o^T  =>  (dctx on heads (B, H, T, D), dW_o (C, H*D)); ctx: (B, T, H*D)."""
    d_o = dout.reshape(-1, dout.shape[-1]).T @ ctx.reshape(-1, ctx.shape[-1])  # (C, H*D)
    return split_heads(project(dout, w_o.T), n_heads), d_o  # (B, H, T, D)


class SelfAttentionCache(NamedTuple):
    """What ``self_attention_backward`` needs besides the input x."""

    params: dict  # {"q", "k", "v", "o"} as stored
    core: CoreCache
    ctx: Any  # (B, T, H*D) the heads' context, merged


def self_attention_forward(x, params, n_heads, bias, dropout, rng):
    """out = attention(x, x): x (B, T, C) -> out (B, T, C). The cache does not hold x."""
    q, k, v = project_heads(x, fused(params, "qkv"), n_heads, 3)  # each (B, H, T, D)
    ctx, c_core = core_forward(q, k, v, bias, dropout, rng)
    ctx = merge_heads(ctx)  # (B, T, H*D)
    return project(ctx, params["o"]), SelfAttentionCache(params, c_core, ctx)


def self_attention_backward(dout, cache: SelfAttentionCache, x):
    """dout (B, T, C), and the forward's input x -> ((dx, dbias or None), grads {"q", "k", "v", "o"})."""
    params, c_core, ctx = cache
    dctx, d_o = _output_backward(dout, ctx, params["o"], c_core.q.shape[1])
    dq, dk, dv, dbias = core_backward(dctx, c_core)
    # [q|k|v] = x [W_q; W_k; W_v]^T
    dx, dw = _input_backward([dq, dk, dv], x, fused(params, "qkv"))
    HD = dw.shape[0] // 3
    return (dx, dbias), {"q": dw[:HD], "k": dw[HD:2 * HD], "v": dw[2 * HD:], "o": d_o}


class CrossAttentionCache(NamedTuple):
    """What ``cross_attention_backward`` needs besides the query input x."""

    memory: Any  # (B, S, C)
    params: dict
    core: CoreCache
    ctx: Any  # (B, T, H*D)


def cross_attention_forward(x, memory, params, n_heads, bias, dropout, rng):
    """out = attention(x, memory): x (B, T, C), memory (B, S, C) -> out (B, T, C)."""
    q = split_heads(project(x, params["q"]), n_heads)  # (B, H, T, D)
    k, v = project_heads(memory, fused(params, "kv"), n_heads, 2)  # each (B, H, S, D)
    ctx, c_core = core_forward(q, k, v, bias, dropout, rng)
    ctx = merge_heads(ctx)  # (B, T, H*D)
    return project(ctx, params["o"]), CrossAttentionCache(memory, params, c_core, ctx)


def cross_attention_backward(dout, cache: CrossAttentionCache, x):
    """dout (B, T, C), x -> ((dx, dmemory (B, S, C), dbias or None), grads {"q", "k", "v", "o"})."""
    memory, params, c_core, ctx = cache
    B, T, _ = x.shape
    dctx, d_o = _output_backward(dout, ctx, params["o"], c_core.q.shape[1])
    dq, dk, dv, dbias = core_backward(dctx, c_core)
    # [k|v] = memory [W_k; W_v]^T
    dmemory, dw_kv = _input_backward([dk, dv], memory, fused(params, "kv"))
    # q = x W_q^T
    dq2 = merge_heads(dq).reshape(B * T, -1)  # (B*T, H*D)
    dx = (dq2 @ params["q"]).reshape(x.shape)  # (B, T, C)
    HD = params["q"].shape[0]
    grads = {"q": dq2.T @ x.reshape(B * T, -1), "k": dw_kv[:HD], "v": dw_kv[HD:], "o": d_o}
    return (dx, dmemory, dbias), grads
