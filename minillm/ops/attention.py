"""Multi-head attention, T5 style: no biases, an additive score bias.

    q = x W_q^T,  k = m W_k^T,  v = m W_v^T          (split into H heads of size D)
    A = softmax(scale * q k^T + bias)                (B, H, T, S)
    out = concat_h(dropout(A) v) W_o^T

x is the query input (B, T, C); m the key/value input (B, S, C): m is x for
self-attention and the encoder output ("memory") for cross-attention.
``bias`` is added to the scores before the softmax and broadcasts to
(B, H, T, S): T5's relative position bias plus the additive masks.
``scale`` defaults to 1/sqrt(D) (the Transformer's scaled dot product); T5
passes 1.0, since its initialisation folds the scale into W_q.
"""

from __future__ import annotations

import math

from minillm.backend import get_xp
from minillm.ops.dropout import dropout_backward, dropout_forward
from minillm.ops.softmax import softmax_backward, softmax_forward


def project(t, w):
    """t (B, L, C) @ w^T (C, O) as one 2-D GEMM -> (B, L, O)."""
    B, L, C = t.shape
    return (t.reshape(B * L, C) @ w.T).reshape(B, L, w.shape[0])  # (B, L, O)


def split_heads(t, n_heads):
    """(B, L, H*D) -> (B, H, L, D)."""
    B, L, HD = t.shape
    return t.reshape(B, L, n_heads, HD // n_heads).transpose(0, 2, 1, 3)  # (B, H, L, D)


def merge_heads(t):
    """(B, H, L, D) -> (B, L, H*D)."""
    B, H, L, D = t.shape
    return t.transpose(0, 2, 1, 3).reshape(B, L, H * D)  # (B, L, H*D)


def attention_forward(x, m, params, *, n_heads, bias=None, scale=None, dropout=0.0, rng=None):
    """Multi-head attention of queries from x over keys/values from m.

    x: (B, T, C), m: (B, S, C), bias: broadcastable to (B, H, T, S) or None.
    params: "q", "k", "v": (H*D, C); "o": (C, H*D).  Returns out: (B, T, C).
    """
    D = params["q"].shape[0] // n_heads
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    q = split_heads(project(x, params["q"]), n_heads)  # (B, H, T, D)
    k = split_heads(project(m, params["k"]), n_heads)  # (B, H, S, D)
    v = split_heads(project(m, params["v"]), n_heads)  # (B, H, S, D)
    scores = q @ k.transpose(0, 1, 3, 2)  # (B, H, T, S)
    if scale != 1.0:
        scores *= scale
    if bias is not None:
        scores += bias
    a, _ = softmax_forward(scores)  # (B, H, T, S)
    a_drop, drop_cache = dropout_forward(a, p=dropout, rng=rng)
    ctx = merge_heads(a_drop @ v)  # (B, T, H*D)
    out = project(ctx, params["o"])  # (B, T, C)
    bias_shape = None if bias is None else bias.shape
    cache = (x, m, q, k, v, a, a_drop, drop_cache, ctx, params, scale, bias_shape)
    return out, cache


def _sum_to_shape(t, shape):
    """Sum a (B, H, T, S) gradient down to the shape of a broadcast bias."""
    axes = tuple(i for i, (n, s) in enumerate(zip(shape, t.shape, strict=True)) if n == 1 and s != 1)
    return t.sum(axis=axes, keepdims=True) if axes else t


def attention_backward(dout, cache):
    """dout: (B, T, C) -> ((dx (B,T,C), dm (B,S,C), dbias or None), grads).

    For self-attention (m is x) the caller adds dx and dm. dbias has the shape
    of the bias that was passed in.
    """
    x, m, q, k, v, a, a_drop, drop_cache, ctx, params, scale, bias_shape = cache
    n_heads = q.shape[1]
    # out = ctx W_o^T
    d_o = dout.reshape(-1, dout.shape[-1]).T @ ctx.reshape(-1, ctx.shape[-1])  # (C, H*D)
    dctx = split_heads(project(dout, params["o"].T), n_heads)  # (B, H, T, D)
    # ctx = a_drop v
    da_drop = dctx @ v.transpose(0, 1, 3, 2)  # (B, H, T, S)
    dv = a_drop.transpose(0, 1, 3, 2) @ dctx  # (B, H, S, D)
    # a_drop = dropout(a);  a = softmax(scores)
    da, _ = dropout_backward(da_drop, drop_cache)
    dscores, _ = softmax_backward(da, a)  # (B, H, T, S)
    # scores = scale * q k^T + bias
    dbias = None if bias_shape is None else _sum_to_shape(dscores, bias_shape)
    if scale != 1.0:
        dscores = dscores * scale
    dq = merge_heads(dscores @ k)  # (B, T, H*D)
    dk = merge_heads(dscores.transpose(0, 1, 3, 2) @ q)  # (B, S, H*D)
    dv = merge_heads(dv)  # (B, S, H*D)
    # q = x W_q^T, k = m W_k^T, v = m W_v^T
    x2, m2 = x.reshape(-1, x.shape[-1]), m.reshape(-1, m.shape[-1])
    grads = {
        "q": dq.reshape(-1, dq.shape[-1]).T @ x2,  # (H*D, C)
        "k": dk.reshape(-1, dk.shape[-1]).T @ m2,  # (H*D, C)
        "v": dv.reshape(-1, dv.shape[-1]).T @ m2,  # (H*D, C)
        "o": d_o,
    }
    dx = project(dq, params["q"].T)  # (B, T, C)
    dm = project(dk, params["k"].T) + project(dv, params["v"].T)  # (B, S, C)
    return (dx, dm, dbias), grads


def additive_mask(keep, dtype):
    """0 where keep is True, the dtype's most negative number elsewhere.

    keep: boolean, broadcastable to (B, H, T, S). Matches transformers, which
    adds finfo(dtype).min rather than -inf so a fully masked row stays finite.
    """
    xp = get_xp(keep)
    neg = xp.finfo(dtype).min
    return xp.where(keep, xp.asarray(0, dtype=dtype), xp.asarray(neg, dtype=dtype))


def padding_keep(attention_mask):
    """attention_mask (B, S) of 1/0 -> keep (B, 1, 1, S): which keys may be attended to."""
    return (attention_mask != 0)[:, None, None, :]


def causal_keep(T, S=None, offset=0, xp=None):
    """keep (1, 1, T, S): query i (at position offset + i) sees keys j <= offset + i."""
    xp = xp or get_xp(None)
    S = T if S is None else S
    i = xp.arange(T)[:, None] + offset
    j = xp.arange(S)[None, :]
    return (j <= i)[None, None]
