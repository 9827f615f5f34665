"""One T5 stack (encoder or decoder), forward and backward.

    x = dropout(shared[ids])
    per block:
        x = x + dropout(SelfAttention(norm(x), bias = position_bias + mask))
        x = x + dropout(EncDecAttention(norm(x), memory, bias = encoder mask))   (decoder only)
        x = x + dropout(FFN(norm(x)))
    h = dropout(final_norm(x))

with the relative position bias computed once by block 0 of the stack and
shared by all its blocks.
"""

from __future__ import annotations

from typing import Any

from minillm.backend import get_xp
from minillm.model.params import add_grads, ffn_names, op_params
from minillm.ops.attention import (
    additive_mask,
    attention_backward,
    attention_forward,
)
from minillm.ops.dropout import dropout_backward, dropout_forward
from minillm.ops.embedding import embedding_backward, embedding_forward
from minillm.ops.ffn import ffn_backward, ffn_forward
from minillm.ops.norm import rms_norm_backward, rms_norm_forward
from minillm.ops.position_bias import (
    position_bias_backward,
    position_bias_forward,
    position_buckets,
)


def stack_forward(params, config, stack, ids, keep, memory=None, memory_keep=None, rng=None):
    """One T5 stack (``stack`` is "encoder" or "decoder").

    ids: (B, L) int token ids; keep: boolean, broadcastable to (B, 1, L, L),
    which keys each query may attend to (padding, and the causal mask in the
    decoder). For the decoder, memory: (B, S, C) and memory_keep: (B, 1, 1, S).
    Returns h: (B, L, C), the final-normed output, and the cache.
    """
    is_decoder = stack == "decoder"
    n_layers = config.num_decoder_layers if is_decoder else config.num_layers
    H, p, eps = config.num_heads, float(config.dropout_rate), config.layer_norm_epsilon
    act = config.dense_act_fn
    dtype = params["shared.weight"].dtype
    xp = get_xp(params["shared.weight"])
    L = ids.shape[1]

    x, c_emb = embedding_forward(ids, {"weight": params["shared.weight"]})  # (B, L, C)
    x, c_drop_in = dropout_forward(x, p=p, rng=rng)

    # Block 0's relative position bias, shared by every block: (1, H, L, L).
    buckets = position_buckets(L, L, not is_decoder, config.relative_attention_num_buckets,
                               config.relative_attention_max_distance, xp=xp)
    rel = f"{stack}.block.0.layer.0.SelfAttention"
    pos_bias, c_pos = position_bias_forward(buckets, op_params(params, rel, ["relative_attention_bias"]))
    self_bias = pos_bias + additive_mask(keep, dtype)  # (B or 1, H, L, L)
    cross_bias = additive_mask(memory_keep, dtype) if is_decoder else None  # (B, 1, 1, S)

    blocks = []
    for i in range(n_layers):
        b = f"{stack}.block.{i}.layer"
        bc: dict[str, Any] = {}
        # x = x + dropout(SelfAttention(norm(x)))
        n, bc["ln0"] = rms_norm_forward(x, {"weight": params[f"{b}.0.layer_norm.weight"]}, eps)
        a, bc["sa"] = attention_forward(n, n, op_params(params, f"{b}.0.SelfAttention", "qkvo"), n_heads=H,
                                        bias=self_bias, scale=1.0, dropout=p, rng=rng)
        a, bc["sa_drop"] = dropout_forward(a, p=p, rng=rng)
        x = x + a
        if is_decoder:
            # x = x + dropout(EncDecAttention(norm(x), memory))
            n, bc["ln1"] = rms_norm_forward(x, {"weight": params[f"{b}.1.layer_norm.weight"]}, eps)
            a, bc["ca"] = attention_forward(n, memory, op_params(params, f"{b}.1.EncDecAttention", "qkvo"),
                                            n_heads=H, bias=cross_bias, scale=1.0, dropout=p, rng=rng)
            a, bc["ca_drop"] = dropout_forward(a, p=p, rng=rng)
            x = x + a
        # x = x + dropout(FFN(norm(x)))
        ff = 2 if is_decoder else 1
        n, bc["lnf"] = rms_norm_forward(x, {"weight": params[f"{b}.{ff}.layer_norm.weight"]}, eps)
        f, bc["ff"] = ffn_forward(n, op_params(params, f"{b}.{ff}.DenseReluDense", ffn_names(config)),
                                  act=act, dropout=p, rng=rng)
        f, bc["ff_drop"] = dropout_forward(f, p=p, rng=rng)
        x = x + f
        blocks.append(bc)

    h, c_final = rms_norm_forward(x, {"weight": params[f"{stack}.final_layer_norm.weight"]}, eps)
    h, c_drop_out = dropout_forward(h, p=p, rng=rng)
    cache = (stack, is_decoder, c_emb, c_drop_in, c_pos, self_bias.shape, blocks, c_final, c_drop_out,
             ffn_names(config))
    return h, cache


def stack_backward(dh, cache):
    """dh: (B, L, C) -> (dmemory (B, S, C) or None, grads keyed like params).

    The gradient of the memory is the sum over every decoder block's
    cross-attention; that of the position table the sum over every block's
    self-attention.
    """
    stack, is_decoder, c_emb, c_drop_in, c_pos, bias_shape, blocks, c_final, c_drop_out, ffn = cache
    grads: dict = {}
    # h = dropout(final_norm(x))
    dh, _ = dropout_backward(dh, c_drop_out)
    dx, g = rms_norm_backward(dh, c_final)
    grads[f"{stack}.final_layer_norm.weight"] = g["weight"]
    dmemory = None
    dself_bias = None
    for i in reversed(range(len(blocks))):
        b, bc = f"{stack}.block.{i}.layer", blocks[i]
        ff = 2 if is_decoder else 1
        # x = x + dropout(FFN(norm(x)))
        df, _ = dropout_backward(dx, bc["ff_drop"])
        dn, g = ffn_backward(df, bc["ff"])
        add_grads(grads, g, f"{b}.{ff}.DenseReluDense")
        dn, g = rms_norm_backward(dn, bc["lnf"])
        grads[f"{b}.{ff}.layer_norm.weight"] = g["weight"]
        dx = dx + dn
        if is_decoder:
            # x = x + dropout(EncDecAttention(norm(x), memory))
            da, _ = dropout_backward(dx, bc["ca_drop"])
            (dn, dm, _), g = attention_backward(da, bc["ca"])
            add_grads(grads, g, f"{b}.1.EncDecAttention")
            dmemory = dm if dmemory is None else dmemory + dm
            dn, g = rms_norm_backward(dn, bc["ln1"])
            grads[f"{b}.1.layer_norm.weight"] = g["weight"]
            dx = dx + dn
        # x = x + dropout(SelfAttention(norm(x)))
        da, _ = dropout_backward(dx, bc["sa_drop"])
        (dn, _, dbias), g = attention_backward(da, bc["sa"])  # self-attention: dn is the whole input grad
        add_grads(grads, g, f"{b}.0.SelfAttention")
        dself_bias = dbias if dself_bias is None else dself_bias + dbias
        dn, g = rms_norm_backward(dn, bc["ln0"])
        grads[f"{b}.0.layer_norm.weight"] = g["weight"]
        dx = dx + dn
    # self_bias = position_bias + mask: the mask is constant
    _, g = position_bias_backward(dself_bias, c_pos)
    grads[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = g[
        "relative_attention_bias"]
    # x = dropout(shared[ids])
    dx, _ = dropout_backward(dx, c_drop_in)
    _, g = embedding_backward(dx, c_emb)
    grads["shared.weight"] = g["weight"]
    return dmemory, grads
