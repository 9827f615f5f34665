"""Multi-head attention, T5 style: no biases, an additive score bias.

    q = x W_q^T,  k = m W_k^T,  v = m W_v^T          (split into H heads of size D)
    A = softmax(scale * q k^T + bias)                (B, H, T, S)
    out = concat_h(dropout(A) v) W_o^T

Two ops share one core (the scores, softmax, dropout and context, on heads):

    self_attention_forward(x, params)             m = x: one fused GEMM for [q|k|v]
    cross_attention_forward(x, memory, params)    m = memory (B, S, C): q, then [k|v] fused
    attention_core_forward(q, k, v)               ctx = dropout(A) v over given heads
    attention_core(q, k, v)                       the same for inference (cached k, v), no cache

x is the query input (B, T, C). ``bias`` is added to the scores before the
softmax and broadcasts to (B, H, T, S): T5's relative position bias plus the
additive masks. ``scale`` defaults to 1/sqrt(D) (the Transformer's scaled dot
product); T5 passes 1.0, since its initialisation folds the scale into W_q.
"""

from __future__ import annotations

import math

from minillm.backend import get_xp
from minillm.ops.dropout import dropout_backward, dropout_forward
from minillm.ops.softmax import softmax, softmax_backward, softmax_forward


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


def project_heads(t, w, n_heads, parts):
    """[a|b|..] = t [W_a|W_b|..]^T in one GEMM, split into ``parts`` heads arrays.

    t: (B, L, C), w: (parts*H*D, C) -> parts x (B, H, L, D).
    """
    fused = get_xp(t).split(project(t, w), parts, axis=-1)  # parts x (B, L, H*D)
    return [split_heads(a, n_heads) for a in fused]  # (B, H, L, D)


def fused_weight(params, names):
    """[W_a; W_b; ...] (n*H*D, C): the projections that read one input, for one wider GEMM.

    Wider GEMMs run closer to BLAS's peak than several narrow ones.
    """
    xp = get_xp(params[names[0]])
    return xp.concatenate([params[n] for n in names])  # (n*H*D, C)


# ------------------------------------------------------------------ the core, on heads


def _scores(q, k, bias, scale):
    """scale * q k^T + bias: q (B, H, T, D), k (B, H, S, D) -> (B, H, T, S)."""
    scores = q @ k.transpose(0, 1, 3, 2)  # (B, H, T, S)
    if scale != 1.0:
        scores *= scale
    if bias is not None:
        scores += bias
    return scores


def attention_core_forward(q, k, v, *, bias=None, scale=1.0, dropout=0.0, rng=None):
    """ctx = dropout(softmax(scale * q k^T + bias)) v.

    q: (B, H, T, D), k, v: (B, H, S, D), bias: broadcastable to (B, H, T, S) or None.
    Returns ctx (B, H, T, D). Cache: q, k, v, the probabilities A and the dropout's mask;
    not dropout(A), which the backward remakes from them (see there).
    """
    a, _ = softmax_forward(_scores(q, k, bias, scale))  # (B, H, T, S)
    a_drop, drop_cache = dropout_forward(a, p=dropout, rng=rng)
    ctx = a_drop @ v  # (B, H, T, D)
    bias_shape = None if bias is None else bias.shape
    return ctx, (q, k, v, a, drop_cache, scale, bias_shape)


def attention_core(q, k, v, *, bias=None, scale=1.0):
    """softmax(scale * q k^T + bias) v for inference: no dropout, no cache.

    q: (N, H, T, D), k, v: (N, H, S, D) (the decoder's cached keys and values) -> (N, H, T, D).
    """
    scores = _scores(q, k, bias, scale)  # (N, H, T, S)
    a = softmax(scores, out=scores)  # (N, H, T, S), in the scores' memory
    return a @ v  # (N, H, T, D)


def _sum_to_shape(t, shape):
    """Sum a (B, H, T, S) gradient down to the shape of a broadcast bias."""
    axes = tuple(i for i, (n, s) in enumerate(zip(shape, t.shape, strict=True)) if n == 1 and s != 1)
    return t.sum(axis=axes, keepdims=True) if axes else t


def attention_core_backward(dctx, cache):
    """dctx: (B, H, T, D) -> (dq, dk, dv, dbias): dbias has the bias's shape (None without one)."""
    q, k, v, a, drop_cache, scale, bias_shape = cache
    # dropout is the linear map x -> x m / (1 - p), and its backward applies that same map
    # (the same kernel): a_drop remade from a and the mask, bit for bit, not kept (B*H*T*S floats)
    a_drop, _ = dropout_backward(a, drop_cache)  # (B, H, T, S)
    # ctx = a_drop v
    da_drop = dctx @ v.transpose(0, 1, 3, 2)  # (B, H, T, S)
    dv = a_drop.transpose(0, 1, 3, 2) @ dctx  # (B, H, S, D)
    del a_drop
    # a_drop = dropout(a);  a = softmax(scores)
    da, _ = dropout_backward(da_drop, drop_cache)
    del da_drop
    dscores, _ = softmax_backward(da, a)  # (B, H, T, S)
    # scores = scale * q k^T + bias
    dbias = None if bias_shape is None else _sum_to_shape(dscores, bias_shape)
    if scale != 1.0:
        dscores = dscores * scale
    dq = dscores @ k  # (B, H, T, D)
    dk = dscores.transpose(0, 1, 3, 2) @ q  # (B, H, S, D)
    return dq, dk, dv, dbias


# ------------------------------------------------------------------ the projections


def _resolve_scale(scale, params, n_heads):
    return 1.0 / math.sqrt(params["q"].shape[0] // n_heads) if scale is None else scale


def _fused_input_backward(head_grads, src, w_in):
    """[a|b|..] = src W_in^T  =>  (d_src (B, L, C), dW_in (n*H*D, C)), one GEMM each way.

    head_grads: the n head gradients (B, H, L, D), written straight into one
    (B, L, n, H, D) buffer so that [da|db|..] is a single (B*L, n*H*D) matrix.
    """
    xp = get_xp(src)
    B, H, L, D = head_grads[0].shape
    d_in = xp.empty((B, L, len(head_grads), H, D), dtype=src.dtype)  # (B, L, n, H, D)
    for i, g in enumerate(head_grads):
        d_in[:, :, i] = g.transpose(0, 2, 1, 3)  # (B, L, H, D)
    d_in = d_in.reshape(B * L, len(head_grads) * H * D)  # (B*L, n*H*D)
    dw_in = d_in.T @ src.reshape(B * L, -1)  # (n*H*D, C)
    d_src = (d_in @ w_in).reshape(src.shape)  # (B, L, C)
    return d_src, dw_in


def _output_backward(dout, ctx, w_o, n_heads):
    """out = ctx W_o^T  =>  (dctx on heads (B, H, T, D), dW_o (C, H*D)); ctx: (B, T, H*D)."""
    d_o = dout.reshape(-1, dout.shape[-1]).T @ ctx.reshape(-1, ctx.shape[-1])  # (C, H*D)
    dctx = split_heads(project(dout, w_o.T), n_heads)  # (B, H, T, D)
    return dctx, d_o


def self_attention_forward(x, params, *, n_heads, bias=None, scale=None, dropout=0.0, rng=None,
                           keep_input=True):
    """Multi-head self-attention: queries, keys and values all from x.

    x: (B, T, C), bias: broadcastable to (B, H, T, T) or None.
    params: "q", "k", "v": (H*D, C); "o": (C, H*D).  Returns out: (B, T, C).
    ``keep_input=False``: the cache does not hold x; the backward must be given it.
    """
    scale = _resolve_scale(scale, params, n_heads)
    w_qkv = fused_weight(params, "qkv")  # (3*H*D, C)
    q, k, v = project_heads(x, w_qkv, n_heads, 3)  # [q|k|v] = x [W_q|W_k|W_v]^T, each (B, H, T, D)
    ctx, core = attention_core_forward(q, k, v, bias=bias, scale=scale, dropout=dropout, rng=rng)
    ctx = merge_heads(ctx)  # (B, T, H*D)
    out = project(ctx, params["o"])  # (B, T, C)
    # the cache holds the parameters, not the fused copy: the backward fuses them again
    return out, (x if keep_input else None, params, core, ctx)


def _given_input(kept, x, op):
    x = kept if x is None else x
    if x is None:
        raise ValueError(f"{op}: the forward did not keep its input (keep_input=False); pass x")
    return x


def self_attention_backward(dout, cache, x=None):
    """dout: (B, T, C) -> ((dx (B, T, C), dbias or None), grads {"q", "k", "v", "o"}).

    ``x``: the input, when the forward did not keep it.
    """
    x_kept, params, core, ctx = cache
    x = _given_input(x_kept, x, "self_attention_backward")
    H = core[0].shape[1]
    dctx, d_o = _output_backward(dout, ctx, params["o"], H)
    dq, dk, dv, dbias = attention_core_backward(dctx, core)
    # [q|k|v] = x W_qkv^T
    dx, dw = _fused_input_backward([dq, dk, dv], x, fused_weight(params, "qkv"))
    HD = dw.shape[0] // 3
    return (dx, dbias), {"q": dw[:HD], "k": dw[HD:2 * HD], "v": dw[2 * HD:], "o": d_o}


def cross_attention_forward(x, memory, params, *, n_heads, bias=None, scale=None, dropout=0.0,
                            rng=None, keep_input=True):
    """Multi-head attention of queries from x over keys and values from memory.

    x: (B, T, C), memory: (B, S, C), bias: broadcastable to (B, H, T, S) or None.
    params: "q", "k", "v": (H*D, C); "o": (C, H*D).  Returns out: (B, T, C).
    ``keep_input=False``: the cache does not hold x (memory it does); the backward must be given it.
    """
    scale = _resolve_scale(scale, params, n_heads)
    w_kv = fused_weight(params, "kv")  # (2*H*D, C)
    q = split_heads(project(x, params["q"]), n_heads)  # (B, H, T, D)
    k, v = project_heads(memory, w_kv, n_heads, 2)  # [k|v] = memory [W_k|W_v]^T, each (B, H, S, D)
    ctx, core = attention_core_forward(q, k, v, bias=bias, scale=scale, dropout=dropout, rng=rng)
    ctx = merge_heads(ctx)  # (B, T, H*D)
    out = project(ctx, params["o"])  # (B, T, C)
    # the cache holds the parameters, not the fused copy: the backward fuses them again
    return out, (x if keep_input else None, memory, params, core, ctx)


def cross_attention_backward(dout, cache, x=None):
    """dout: (B, T, C) -> ((dx (B, T, C), dmemory (B, S, C), dbias or None), grads keyed like params).

    ``x``: the input, when the forward did not keep it.
    """
    x_kept, memory, params, core, ctx = cache
    x = _given_input(x_kept, x, "cross_attention_backward")
    B, T, _ = x.shape
    H = core[0].shape[1]
    w_q = params["q"]
    dctx, d_o = _output_backward(dout, ctx, params["o"], H)
    dq, dk, dv, dbias = attention_core_backward(dctx, core)
    # [k|v] = memory W_kv^T
    dmemory, dw_kv = _fused_input_backward([dk, dv], memory, fused_weight(params, "kv"))
    # q = x W_q^T
    dq2 = merge_heads(dq).reshape(B * T, -1)  # (B*T, H*D)
    dx = (dq2 @ w_q).reshape(x.shape)  # (B, T, C)
    HD = w_q.shape[0]
    grads = {"q": dq2.T @ x.reshape(B * T, -1), "k": dw_kv[:HD], "v": dw_kv[HD:], "o": d_o}
    return (dx, dmemory, dbias), grads


# ------------------------------------------------------------------ masks


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
