"""Multi-head attention, T5 style: no biases, an additive bias on the scores.

    q = x W_q^T,  k = m W_k^T,  v = m W_v^T        (B, L, H*D), split into H heads of size D
    A = softmax(scale * q k^T + bias)              (B, H, T, S)
    out = concat_h(dropout(A) v) W_o^T             (B, T, C)

x: the queries' input (B, T, C); m: the keys' and values' input (B, S, C), the
encoder's output for cross-attention and x itself for self-attention. ``bias``
broadcasts to (B, H, T, S): T5's relative position bias plus the additive masks.
``scale`` defaults to 1/sqrt(D), the Transformer's scaled dot product; T5 passes
1.0, since its initialisation folds the scale into W_q (N(0, (C D)^-1/2)).

    attention_core_forward(q, k, v)          the scores, softmax, dropout and context, on heads
    attention_forward(x, m, params)          the projections around the core
    self_attention_forward(x, params)        attention_forward(x, x, params)
    cross_attention_forward(x, m, params)    attention_forward(x, m, params)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from minillm.backend import get_xp
from minillm.ops.dropout import DropoutCache, dropout_backward, dropout_forward
from minillm.ops.linear import LinearCache, linear_backward, linear_forward
from minillm.ops.softmax import softmax_backward, softmax_forward


def split_heads(t, n_heads):
    """(B, L, H*D) -> (B, H, L, D)."""
    B, L, HD = t.shape
    return t.reshape(B, L, n_heads, HD // n_heads).transpose(0, 2, 1, 3)  # (B, H, L, D)


def merge_heads(t):
    """(B, H, L, D) -> (B, L, H*D)."""
    B, H, L, D = t.shape
    return t.transpose(0, 2, 1, 3).reshape(B, L, H * D)  # (B, L, H*D)


def sum_to_shape(t, shape):
    """Sum a broadcast result's gradient t (B, H, T, S) down to the shape it was broadcast from."""
    axes = tuple(i for i, (n, s) in enumerate(zip(shape, t.shape, strict=True)) if n == 1 and s != 1)
    return t.sum(axis=axes, keepdims=True) if axes else t


# ------------------------------------------------------------------ the core, on heads


class CoreCache(NamedTuple):
    """What ``attention_core_backward`` needs."""

    q: Any  # (B, H, T, D)
    k: Any  # (B, H, S, D)
    v: Any  # (B, H, S, D)
    a: Any  # (B, H, T, S) the probabilities A
    a_drop: Any  # (B, H, T, S) dropout(A)
    drop: DropoutCache
    scale: float
    bias_shape: tuple | None  # the bias's shape (None: no bias)


def attention_core_forward(q, k, v, *, bias=None, scale=1.0, dropout=0.0, rng=None):
    """ctx = dropout(softmax(scale * q k^T + bias)) v.

    q: (B, H, T, D), k, v: (B, H, S, D), bias: broadcastable to (B, H, T, S) or None
    -> ctx (B, H, T, D).
    """
    scores = (q @ k.swapaxes(-1, -2)) * scale  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias
    a, _ = softmax_forward(scores)  # (B, H, T, S)
    a_drop, drop = dropout_forward(a, p=dropout, rng=rng)
    ctx = a_drop @ v  # (B, H, T, D)
    return ctx, CoreCache(q, k, v, a, a_drop, drop, scale, None if bias is None else bias.shape)


def attention_core_backward(dctx, cache: CoreCache):
    """dctx: (B, H, T, D) -> (dq, dk, dv, dbias): dbias has the bias's shape (None without one)."""
    q, k, v, a, a_drop, drop, scale, bias_shape = cache
    # ctx = a_drop v  =>  da_drop = dctx v^T,  dv = a_drop^T dctx
    da_drop = dctx @ v.swapaxes(-1, -2)  # (B, H, T, S)
    dv = a_drop.swapaxes(-1, -2) @ dctx  # (B, H, S, D)
    # a_drop = dropout(a)
    da, _ = dropout_backward(da_drop, drop)
    # a = softmax(scores)
    dscores, _ = softmax_backward(da, a)  # (B, H, T, S)
    # scores = scale * q k^T + bias  =>  dbias = dscores summed to the bias's shape,
    #                                    d(q k^T) = scale * dscores
    dbias = None if bias_shape is None else sum_to_shape(dscores, bias_shape)
    dqk = dscores * scale
    dq = dqk @ k  # (B, H, T, D)
    dk = dqk.swapaxes(-1, -2) @ q  # (B, H, S, D)
    return dq, dk, dv, dbias


# ------------------------------------------------------------------ the projections


class AttentionCache(NamedTuple):
    """What ``attention_backward`` needs: the four projections' caches and the core's."""

    q: LinearCache  # q = x W_q^T
    k: LinearCache  # k = m W_k^T
    v: LinearCache  # v = m W_v^T
    core: CoreCache
    o: LinearCache  # out = ctx W_o^T


def default_scale(params, n_heads) -> float:
    """1 / sqrt(D), the Transformer's scale, D = H*D / H from W_q's rows."""
    return 1.0 / math.sqrt(params["q"].shape[0] // n_heads)


def attention_forward(x, m, params, *, n_heads, bias=None, scale=None, dropout=0.0, rng=None):
    """Multi-head attention of queries from x over keys and values from m.

    x: (B, T, C), m: (B, S, C), params: "q", "k", "v": (H*D, C), "o": (C, H*D);
    bias: broadcastable to (B, H, T, S) or None; scale None: 1/sqrt(D). -> out (B, T, C).
    """
    scale = default_scale(params, n_heads) if scale is None else scale
    q, c_q = linear_forward(x, {"weight": params["q"]})  # (B, T, H*D)
    k, c_k = linear_forward(m, {"weight": params["k"]})  # (B, S, H*D)
    v, c_v = linear_forward(m, {"weight": params["v"]})  # (B, S, H*D)
    ctx, c_core = attention_core_forward(split_heads(q, n_heads), split_heads(k, n_heads),
                                         split_heads(v, n_heads), bias=bias, scale=scale,
                                         dropout=dropout, rng=rng)  # (B, H, T, D)
    out, c_o = linear_forward(merge_heads(ctx), {"weight": params["o"]})  # (B, T, C)
    return out, AttentionCache(c_q, c_k, c_v, c_core, c_o)


def attention_backward(dout, cache: AttentionCache):
    """dout: (B, T, C) -> ((dx (B, T, C), dm (B, S, C), dbias or None), grads {"q", "k", "v", "o"})."""
    H = cache.core.q.shape[1]
    # out = ctx W_o^T
    dctx, g_o = linear_backward(dout, cache.o)  # (B, T, H*D)
    dq, dk, dv, dbias = attention_core_backward(split_heads(dctx, H), cache.core)
    # q = x W_q^T,  k = m W_k^T,  v = m W_v^T
    dx, g_q = linear_backward(merge_heads(dq), cache.q)  # (B, T, C)
    dm_k, g_k = linear_backward(merge_heads(dk), cache.k)  # (B, S, C)
    dm_v, g_v = linear_backward(merge_heads(dv), cache.v)
    grads = {"q": g_q["weight"], "k": g_k["weight"], "v": g_v["weight"], "o": g_o["weight"]}
    return (dx, dm_k + dm_v, dbias), grads


def self_attention_forward(x, params, **kwargs):
    """Attention of x over itself: ``attention_forward(x, x, params, ...)``.  x: (B, T, C) -> (B, T, C)."""
    return attention_forward(x, x, params, **kwargs)


def self_attention_backward(dout, cache: AttentionCache):
    """dout: (B, T, C) -> ((dx (B, T, C), dbias or None), grads)."""
    (dx, dm, dbias), grads = attention_backward(dout, cache)
    # x is read as the queries' input and as the keys' and values' (m = x)
    return (dx + dm, dbias), grads


cross_attention_forward = attention_forward
cross_attention_backward = attention_backward


# ------------------------------------------------------------------ masks


def additive_mask(keep, dtype):
    """0 where keep is True, the dtype's most negative number elsewhere.

    keep: boolean, broadcastable to (B, H, T, S). As transformers does, finfo(dtype).min
    rather than -inf, so a fully masked row stays finite.
    """
    xp = get_xp(keep)
    return xp.where(keep, xp.asarray(0, dtype=dtype), xp.asarray(xp.finfo(dtype).min, dtype=dtype))


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
