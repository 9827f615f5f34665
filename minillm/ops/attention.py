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
    Pass the same array as x and m for self-attention.
    """
    xp = get_xp(x)
    HD = params["q"].shape[0]
    if scale is None:
        scale = 1.0 / math.sqrt(HD // n_heads)
    # One GEMM for every projection that reads the same input (wider GEMMs run
    # closer to BLAS's peak): [q|k|v] = x [W_q|W_k|W_v]^T for self-attention,
    # [k|v] = m [W_k|W_v]^T for cross-attention.
    if m is x:
        w_in = xp.concatenate([params["q"], params["k"], params["v"]])  # (3*H*D, C)
        q, k, v = xp.split(project(x, w_in), 3, axis=-1)  # 3 x (B, T, H*D)
    else:
        w_in = xp.concatenate([params["k"], params["v"]])  # (2*H*D, C)
        q = project(x, params["q"])  # (B, T, H*D)
        k, v = xp.split(project(m, w_in), 2, axis=-1)  # 2 x (B, S, H*D)
    q, k, v = (split_heads(t, n_heads) for t in (q, k, v))  # (B, H, T|S, D)
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
    cache = (x, m, q, k, v, a, a_drop, drop_cache, ctx, params, w_in, scale, bias_shape)
    return out, cache


def _sum_to_shape(t, shape):
    """Sum a (B, H, T, S) gradient down to the shape of a broadcast bias."""
    axes = tuple(i for i, (n, s) in enumerate(zip(shape, t.shape, strict=True)) if n == 1 and s != 1)
    return t.sum(axis=axes, keepdims=True) if axes else t


def attention_backward(dout, cache):
    """dout: (B, T, C) -> ((dx (B,T,C), dm (B,S,C) or None, dbias or None), grads).

    For self-attention (the same array passed as x and m) dx holds the whole
    input gradient and dm is None. dbias has the shape of the bias passed in.
    """
    x, m, q, k, v, a, a_drop, drop_cache, ctx, params, w_in, scale, bias_shape = cache
    xp = get_xp(dout)
    B, H, T, D = q.shape
    S = k.shape[2]
    # out = ctx W_o^T
    d_o = dout.reshape(-1, dout.shape[-1]).T @ ctx.reshape(-1, ctx.shape[-1])  # (C, H*D)
    dctx = split_heads(project(dout, params["o"].T), H)  # (B, H, T, D)
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
    dq = dscores @ k  # (B, H, T, D)
    dk = dscores.transpose(0, 1, 3, 2) @ q  # (B, H, S, D)
    # [q|k|v] = x W_in^T (self) or [k|v] = m W_in^T (cross): one GEMM each way.
    # The head gradients are written straight into the fused (.., n*H*D) buffer.
    heads = [dq, dk, dv] if m is x else [dk, dv]
    L = T if m is x else S
    d_in = xp.empty((B, L, len(heads), H, D), dtype=dout.dtype)  # (B, L, n, H, D)
    for i, g in enumerate(heads):
        d_in[:, :, i] = g.transpose(0, 2, 1, 3)  # (B, L, H, D)
    d_in = d_in.reshape(B * L, len(heads) * H * D)  # (B*L, n*H*D)
    src = x if m is x else m
    dw_in = d_in.T @ src.reshape(B * L, -1)  # (n*H*D, C)
    d_src = (d_in @ w_in).reshape(src.shape)  # (B, L, C)
    HD = H * D
    if m is x:
        grads = {"q": dw_in[:HD], "k": dw_in[HD:2 * HD], "v": dw_in[2 * HD:], "o": d_o}
        return (d_src, None, dbias), grads
    dq2 = merge_heads(dq).reshape(B * T, HD)  # (B*T, H*D)
    grads = {"q": dq2.T @ x.reshape(B * T, -1), "k": dw_in[:HD], "v": dw_in[HD:], "o": d_o}
    dx = (dq2 @ params["q"]).reshape(x.shape)  # (B, T, C)
    return (dx, d_src, dbias), grads


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
