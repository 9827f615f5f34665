"""T5's feed-forward block (``DenseReluDense``), plain or gated.

    plain (T5 v1.0):          y = W_o dropout(act(W_i x))
    gated (T5 v1.1, FLAN-T5): y = W_o dropout(act(W_i0 x) * (W_i1 x))

x: (B, L, C) -> y: (B, L, C); W_i, W_i0, W_i1: (F, C), W_o: (C, F).
params: {"wi", "wo"} or {"wi_0", "wi_1", "wo"}, the names transformers uses.
The gated form runs W_i0 and W_i1 as one GEMM of width 2F each way: x times
``input_weight(params)``, [W_i0; W_i1]. ``ffn`` is the inference form for
generation's one-token steps (no dropout, no cache), over the weights as stored.
"""

from __future__ import annotations

from minillm.backend import as_rows, blockwise, get_xp
from minillm.ops.activations import ACTIVATIONS, FUNCTIONS
from minillm.ops.dropout import dropout_backward, dropout_forward
from minillm.ops.linear import linear_backward, linear_forward


def _gate_block(g, h1, dact, h, q):
    """One row block of the gate: h = g * h1, and q = act'(h0) * h1 for the backward."""
    xp = get_xp(g)
    xp.multiply(g, h1, out=h)
    xp.multiply(dact, h1, out=q)


def _gate_backward_block(dh, g, q, dh0, dh1):
    """One row block of the gate's backward, into dh0 and dh1 (views of [dh0|dh1])."""
    xp = get_xp(dh)
    # h = g * h1  =>  dh1 = dh g
    xp.multiply(dh, g, out=dh1)
    # h = act(h0) * h1  =>  dh0 = dh act'(h0) h1 = dh q
    xp.multiply(dh, q, out=dh0)


def input_weight(params):
    """What x is multiplied by: W_i (F, C), or [W_i0; W_i1] (2F, C) when gated (one GEMM, not two)."""
    if "wi_0" not in params:
        return params["wi"]
    return get_xp(params["wi_0"]).concatenate([params["wi_0"], params["wi_1"]])  # (2F, C)


def ffn(x, params, *, act="relu"):
    """y = W_o act(W_i x), or W_o (act(W_i0 x) * W_i1 x) when gated, for inference (a few rows).

    x: (N, C); params: the weights as stored, as for ``ffn_forward`` -> y (N, C). No dropout,
    no cache. Computed transposed, h^T = W_i x^T (F, N) and y = (W_o h^T)^T, so each product
    reads a weight as stored: for a few rows it is as fast as a transposed copy, and the copy
    (remade whenever the weights change) is not needed.
    """
    xt = x.T  # (C, N)
    if "wi_0" in params:
        h = FUNCTIONS[act](params["wi_0"] @ xt)  # act(h0)^T: (F, N)
        h *= params["wi_1"] @ xt  # h = act(h0) * h1
    else:
        h = FUNCTIONS[act](params["wi"] @ xt)  # (F, N)
    return (params["wo"] @ h).T  # (C, F) @ (F, N) -> (N, C)


def ffn_forward(x, params, *, act="relu", dropout=0.0, rng=None, keep_input=True):
    """x: (B, L, C) -> y: (B, L, C).  ``keep_input=False``: the cache does not hold x, and
    ``ffn_backward`` must be given it (a caller that can remake x, as a layer does its norm's output)."""
    act_fwd, _ = ACTIVATIONS[act]
    if "wi_0" in params:
        # [h0|h1] = x [W_i0|W_i1]^T: one GEMM of width 2F instead of two of width F
        h01, _ = linear_forward(x, {"weight": input_weight(params)})  # (B, L, 2F)
        F = h01.shape[-1] // 2
        # h = act(h0) * h1: the activation's value alone (its inference form, the same numbers as
        # the forward form's value), since the backward remakes act'(h0) itself
        h = FUNCTIONS[act](h01[..., :F])  # act(h0)
        h *= h01[..., F:]  # h = g * h1, as _gate_block computes it
        hd, cd = dropout_forward(h, p=dropout, rng=rng)  # (B, L, F)
        del h
        # the cache is [h0|h1] alone: the backward remakes act(h0), act'(h0), h and hd from it
        # (the same kernels, bit for bit), one (B, L, F) array less than keeping g, q and hd; the
        # linears' caches (x, W) are made again too: the fused W is not kept ((2F, C) a layer)
        y, _ = linear_forward(hd, {"weight": params["wo"]})  # (B, L, C)
        return y, (act, params, x if keep_input else None, (h01,), cd, None)
    h0, _ = linear_forward(x, {"weight": params["wi"]})  # (B, L, F)
    h, ca = act_fwd(h0)
    hd, cd = dropout_forward(h, p=dropout, rng=rng)
    y, co = linear_forward(hd, {"weight": params["wo"]})  # (B, L, C)
    return y, (act, params, x if keep_input else None, (ca,), cd, co)


def _gate(h01, act):
    """[h0|h1] (B, L, 2F) -> (g, q, h), each (B, L, F): g = act(h0), q = act'(h0) * h1, h = g * h1."""
    act_fwd, _ = ACTIVATIONS[act]
    xp = get_xp(h01)
    F = h01.shape[-1] // 2
    h0, h1 = h01[..., :F], h01[..., F:]  # (B, L, F) views
    g, dact = act_fwd(h0)  # the activation's cache is its derivative act'(h0)
    h, q = xp.empty(g.shape, dtype=g.dtype), xp.empty(g.shape, dtype=g.dtype)  # (B, L, F)
    blockwise(_gate_block, as_rows(g), as_rows(h1), as_rows(dact), as_rows(h), as_rows(q))
    return g, q, h


def ffn_backward(dy, cache, x=None):
    """dy: (B, L, C) -> dx, grads keyed like params. ``x``: the input, when the forward did not keep it."""
    act, params, x_kept, caches, cd, co = cache
    x = x_kept if x is None else x
    if x is None:
        raise ValueError("ffn_backward: the forward did not keep its input (keep_input=False); pass x")
    _, act_bwd = ACTIVATIONS[act]
    if "wi_0" in params:
        (h01,) = caches
        g, q, h = _gate(h01, act)  # as the forward made them
        # hd = dropout(h): dropout is the linear map h -> h m / (1 - p), and its backward applies
        # that same map (the same kernel), so hd is remade from h and the mask, bit for bit
        hd, _ = dropout_backward(h, cd)
        del h
        co = (hd, params["wo"])  # the linear's cache, as linear_forward made it
    # y = W_o hd
    dhd, g_o = linear_backward(dy, co)
    del co  # each (B, L, F) array is dropped once used: the backward's peak is a block's few
    # hd = dropout(h)
    dh, _ = dropout_backward(dhd, cd)
    del dhd
    if "wi_0" in params:
        xp = get_xp(dy)
        shape, F = g.shape, g.shape[-1]
        dh01 = xp.empty((g.size // F, 2 * F), dtype=g.dtype)  # (B*L, 2F) = [dh0|dh1]
        blockwise(_gate_backward_block, as_rows(dh), as_rows(g), as_rows(q), dh01[:, :F], dh01[:, F:])
        del dh, g, q
        # [h0|h1] = x [W_i0|W_i1]^T: one GEMM each for dx and d[W_i0|W_i1]
        c01 = (x, input_weight(params))  # the linear's cache, as linear_forward made it
        dx, g01 = linear_backward(dh01.reshape(*shape[:-1], 2 * F), c01)  # (B, L, 2F) in
        dw01 = g01["weight"]  # (2F, C)
        return dx, {"wi_0": dw01[:F], "wi_1": dw01[F:], "wo": g_o["weight"]}
    (ca,) = caches
    # h = act(h0),  h0 = W_i x
    dh0, _ = act_bwd(dh, ca)
    dx, gi = linear_backward(dh0, (x, params["wi"]))  # the linear's cache, as linear_forward made it
    return dx, {"wi": gi["weight"], "wo": g_o["weight"]}
