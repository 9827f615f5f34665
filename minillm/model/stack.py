"""One T5 stack (encoder or decoder), forward and backward, a named function per layer.

    x = dropout(shared[ids])                                                       (B, L, C)
    block i, layers j under f"{stack}.block.{i}.layer.{j}":
        0:     x = x + dropout(SelfAttention(norm(x), bias = position_bias + mask))
        1:     x = x + dropout(EncDecAttention(norm(x), memory, bias = memory mask))   (decoder)
        last:  x = x + dropout(DenseReluDense(norm(x)))
    h = dropout(final_layer_norm(x))                                               (B, L, C)

with the relative position bias computed once by block 0 of the stack and
shared by all its blocks. A block's params are the list of its layers, each a
dict named as in the checkpoint (``layer_norm`` and one of ``SelfAttention``,
``EncDecAttention``, ``DenseReluDense``); the layer functions take those names
as arguments, so ``self_attention_layer_forward(x, **layer, ...)`` reads like
the line it computes. The backward of each returns its grads in the same tree.

Activation recomputation (``recompute=True``): the stack keeps only each block's
input x (and, with dropout on, the state of the dropout Generator before the
block); ``stack_backward`` runs ``block_forward`` again from it, drawing the same
masks, to get the cache ``block_backward`` needs. The gradients are those of the
cached path; memory holds one block's cache at a time instead of all of them, at
the cost of a second forward of every block (about a third more compute).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minillm.backend import get_xp
from minillm.model.params import add_grads, ffn_names, op_params
from minillm.ops.attention import (
    additive_mask,
    cross_attention_backward,
    cross_attention_forward,
    self_attention_backward,
    self_attention_forward,
)
from minillm.ops.dropout import dropout_backward, dropout_forward
from minillm.ops.embedding import embedding_backward, embedding_forward
from minillm.ops.ffn import ffn_backward, ffn_forward
from minillm.ops.norm import rms_norm_backward, rms_norm_forward, rms_norm_output
from minillm.ops.position_bias import (
    position_bias_backward,
    position_bias_forward,
    position_buckets,
)

# ------------------------------------------------------------------ the layers


def self_attention_layer_forward(x, layer_norm, SelfAttention, *, bias, config, rng=None):
    """x + dropout(SelfAttention(norm(x), bias)).  x: (B, L, C) -> (B, L, C)."""
    p = float(config.dropout_rate)
    n, c_norm = rms_norm_forward(x, {"weight": layer_norm}, config.layer_norm_epsilon)  # (B, L, C)
    # n is not kept: the backward remakes it from the norm's cache (one (B, L, C) array less)
    a, c_attn = self_attention_forward(n, SelfAttention, n_heads=config.num_heads, bias=bias, scale=1.0,
                                       dropout=p, rng=rng, keep_input=False)  # (B, L, C)
    a, c_drop = dropout_forward(a, p=p, rng=rng)
    return x + a, (c_norm, c_attn, c_drop)


def self_attention_layer_backward(dx, cache):
    """dx: (B, L, C) -> (dx, dbias, grads {"layer_norm", "SelfAttention"})."""
    c_norm, c_attn, c_drop = cache
    # x + dropout(a),  a = SelfAttention(n),  n = norm(x)
    da, _ = dropout_backward(dx, c_drop)
    (dn, dbias), g_attn = self_attention_backward(da, c_attn, x=rms_norm_output(c_norm))
    dn, g_norm = rms_norm_backward(dn, c_norm)
    return dx + dn, dbias, {"layer_norm": g_norm["weight"], "SelfAttention": g_attn}


def cross_attention_layer_forward(x, memory, layer_norm, EncDecAttention, *, bias, config, rng=None):
    """x + dropout(EncDecAttention(norm(x), memory, bias)).  x: (B, T, C), memory: (B, S, C) -> (B, T, C)."""
    p = float(config.dropout_rate)
    n, c_norm = rms_norm_forward(x, {"weight": layer_norm}, config.layer_norm_epsilon)  # (B, T, C)
    a, c_attn = cross_attention_forward(n, memory, EncDecAttention, n_heads=config.num_heads, bias=bias,
                                        scale=1.0, dropout=p, rng=rng, keep_input=False)  # (B, T, C)
    a, c_drop = dropout_forward(a, p=p, rng=rng)
    return x + a, (c_norm, c_attn, c_drop)


def cross_attention_layer_backward(dx, cache):
    """dx: (B, T, C) -> (dx, dmemory (B, S, C), grads {"layer_norm", "EncDecAttention"})."""
    c_norm, c_attn, c_drop = cache
    # x + dropout(a),  a = EncDecAttention(n, memory),  n = norm(x)
    da, _ = dropout_backward(dx, c_drop)
    # the mask is constant; n is remade from the norm's cache
    (dn, dmemory, _), g_attn = cross_attention_backward(da, c_attn, x=rms_norm_output(c_norm))
    dn, g_norm = rms_norm_backward(dn, c_norm)
    return dx + dn, dmemory, {"layer_norm": g_norm["weight"], "EncDecAttention": g_attn}


def ffn_layer_forward(x, layer_norm, DenseReluDense, *, config, rng=None):
    """x + dropout(DenseReluDense(norm(x))).  x: (B, L, C) -> (B, L, C)."""
    p = float(config.dropout_rate)
    n, c_norm = rms_norm_forward(x, {"weight": layer_norm}, config.layer_norm_epsilon)  # (B, L, C)
    f, c_ffn = ffn_forward(n, DenseReluDense, act=config.dense_act_fn, dropout=p, rng=rng,
                           keep_input=False)  # (B, L, C); n remade in the backward
    f, c_drop = dropout_forward(f, p=p, rng=rng)
    return x + f, (c_norm, c_ffn, c_drop)


def ffn_layer_backward(dx, cache):
    """dx: (B, L, C) -> (dx, grads {"layer_norm", "DenseReluDense"})."""
    c_norm, c_ffn, c_drop = cache
    # x + dropout(f),  f = DenseReluDense(n),  n = norm(x)
    df, _ = dropout_backward(dx, c_drop)
    dn, g_ffn = ffn_backward(df, c_ffn, x=rms_norm_output(c_norm))
    dn, g_norm = rms_norm_backward(dn, c_norm)
    return dx + dn, {"layer_norm": g_norm["weight"], "DenseReluDense": g_ffn}


# ------------------------------------------------------------------ a block


def block_params(params: dict, config, stack: str, i: int) -> list[dict]:
    """Block i's layers: [{"layer_norm": (C,), "SelfAttention": {"q", "k", "v", "o"}},
    {"layer_norm", "EncDecAttention": {...}} (decoder), {"layer_norm", "DenseReluDense": {"wi", "wo"} or
    {"wi_0", "wi_1", "wo"}}], views of ``params``."""
    ops = ["SelfAttention", *(["EncDecAttention"] if stack == "decoder" else []), "DenseReluDense"]
    weights = {"SelfAttention": "qkvo", "EncDecAttention": "qkvo", "DenseReluDense": ffn_names(config)}
    layers = []
    for j, op in enumerate(ops):
        prefix = f"{stack}.block.{i}.layer.{j}"
        layers.append({"layer_norm": params[f"{prefix}.layer_norm.weight"],
                       op: op_params(params, f"{prefix}.{op}", weights[op])})
    return layers


def block_forward(x, layers, *, self_bias, memory=None, cross_bias=None, config, rng=None):
    """One block, x: (B, L, C) -> (B, L, C); layers: ``block_params``; memory (B, S, C) in the decoder."""
    x, c_self = self_attention_layer_forward(x, **layers[0], bias=self_bias, config=config, rng=rng)
    c_cross = None
    if memory is not None:
        x, c_cross = cross_attention_layer_forward(x, memory, **layers[1], bias=cross_bias, config=config,
                                                   rng=rng)
    x, c_ffn = ffn_layer_forward(x, **layers[-1], config=config, rng=rng)
    return x, [c_self, c_cross, c_ffn]  # a list, so that a spending backward can drop each layer's


def block_backward(dx, cache, spend: bool = False):
    """dx: (B, L, C) -> (dx, dmemory or None, dself_bias, grads: one tree per layer, as block_params).

    ``spend``: drop each layer's cache from ``cache`` once its backward is done (its activations
    are freed before the next layer's backward; the cache cannot be used again).
    """
    c_self, c_cross, c_ffn = cache
    if spend:
        cache[:] = [None, None, None]
    dx, g_ffn = ffn_layer_backward(dx, c_ffn)
    del c_ffn
    dmemory, g_cross = None, []
    if c_cross is not None:
        dx, dmemory, g = cross_attention_layer_backward(dx, c_cross)
        g_cross = [g]
    del c_cross
    dx, dself_bias, g_self = self_attention_layer_backward(dx, c_self)
    return dx, dmemory, dself_bias, [g_self, *g_cross, g_ffn]


def _add_block_grads(grads: dict, stack: str, i: int, layer_grads: list[dict]) -> None:
    """Block i's layer grads into the model's keys: f"{stack}.block.{i}.layer.{j}.{name}[.{w}].weight"."""
    for j, layer in enumerate(layer_grads):
        prefix = f"{stack}.block.{i}.layer.{j}"
        for name, g in layer.items():
            if isinstance(g, dict):  # an op's grads: a dict of its weights
                add_grads(grads, g, f"{prefix}.{name}")
            else:  # the norm's gain, a weight of the layer itself
                add_grads(grads, {name: g}, prefix)


# ------------------------------------------------------------------ recomputation


class BlockInput(NamedTuple):
    """What a recomputed block keeps instead of its cache: its input and its dropout stream."""

    x: object  # (B, L, C) the block's input
    layers: list  # block_params: views of the model's params
    rng_state: tuple | None  # (bit generator class, its state) before the block; None: dropout off


def rng_snapshot(rng, p: float) -> tuple | None:
    """(class, state) of ``rng``'s bit generator, to replay its draws; None when dropout is off."""
    if rng is None or p == 0.0:
        return None
    return type(rng.bit_generator), rng.bit_generator.state


def replay_generator(snapshot: tuple | None):
    """A fresh Generator in the snapshot's state (None for None): the same draws, the caller's untouched."""
    if snapshot is None:
        return None
    cls, state = snapshot
    bit_generator = cls(0)  # any seed: the state is set just below
    bit_generator.state = state
    return np.random.Generator(bit_generator)


# ------------------------------------------------------------------ the stack


def stack_forward(params, config, stack, ids, keep, memory=None, memory_keep=None, rng=None,
                  recompute: bool = False):
    """One T5 stack (``stack`` is "encoder" or "decoder").

    ids: (B, L) int token ids; keep: boolean, broadcastable to (B, 1, L, L),
    which keys each query may attend to (padding, and the causal mask in the
    decoder). For the decoder, memory: (B, S, C) and memory_keep: (B, 1, 1, S).
    ``recompute``: keep only each block's input (a ``BlockInput``) and recompute
    the block in ``stack_backward``; ``rng`` is advanced exactly as without it.
    Returns h: (B, L, C), the final-normed output, and the cache.
    """
    is_decoder = stack == "decoder"
    n_layers = config.num_decoder_layers if is_decoder else config.num_layers
    p = float(config.dropout_rate)
    dtype = params["shared.weight"].dtype
    L = ids.shape[1]

    x, c_emb = embedding_forward(ids, {"weight": params["shared.weight"]})  # (B, L, C)
    x, c_drop_in = dropout_forward(x, p=p, rng=rng)
    # block 0's relative position bias, shared by every block
    buckets = position_buckets(L, L, not is_decoder, config.relative_attention_num_buckets,
                               config.relative_attention_max_distance, xp=get_xp(params["shared.weight"]))
    rel = f"{stack}.block.0.layer.0.SelfAttention"
    pos_bias, c_pos = position_bias_forward(buckets, op_params(params, rel, ["relative_attention_bias"]))
    self_bias = pos_bias + additive_mask(keep, dtype)  # (B or 1, H, L, L)
    cross_bias = additive_mask(memory_keep, dtype) if is_decoder else None  # (B, 1, 1, S)

    context = {"self_bias": self_bias, "memory": memory if is_decoder else None,
               "cross_bias": cross_bias, "config": config}  # what every block is called with
    blocks = []
    for i in range(n_layers):
        layers = block_params(params, config, stack, i)
        if recompute:
            # keep the input, not the cache: stack_backward recomputes the block from it
            blocks.append(BlockInput(x, layers, rng_snapshot(rng, p)))
            x, _ = block_forward(x, layers, **context, rng=rng)  # (B, L, C)
        else:
            x, c_block = block_forward(x, layers, **context, rng=rng)  # (B, L, C)
            blocks.append(c_block)
    h, c_final = rms_norm_forward(x, {"weight": params[f"{stack}.final_layer_norm.weight"]},
                                  config.layer_norm_epsilon)  # (B, L, C)
    h, c_drop_out = dropout_forward(h, p=p, rng=rng)
    return h, (stack, c_emb, c_drop_in, c_pos, context, blocks, c_final, c_drop_out)


def stack_backward(dh, cache, spend: bool = False, embedding: bool = True):
    """dh: (B, L, C) -> (dmemory (B, S, C) or None, grads keyed like params).

    The gradient of the memory is the sum over every decoder block's
    cross-attention; that of the position table the sum over every block's
    self-attention. A block the forward kept as a ``BlockInput`` is recomputed here.
    ``spend``: drop each block's cache from ``cache`` once its backward is done, so
    its activations are freed while the gradients grow (the peak is then about the
    larger of the two, not their sum); the cache cannot be used again.
    ``embedding=False``: the embedding's (V, C) gradient is not made here; a third value,
    (d_embedded (B, L, C), the embedding's cache), lets the caller scatter it when it
    needs it (``hidden_backward`` does, once the other stack is done).
    """
    stack, c_emb, c_drop_in, c_pos, context, blocks, c_final, c_drop_out = cache
    grads: dict = {}
    # h = dropout(final_norm(x))
    dh, _ = dropout_backward(dh, c_drop_out)
    dx, g = rms_norm_backward(dh, c_final)
    grads[f"{stack}.final_layer_norm.weight"] = g["weight"]
    dmemory = dself_bias = None
    for i in reversed(range(len(blocks))):
        c_block = blocks[i]
        if spend:
            blocks[i] = None  # freed below, with c_block, once block i's backward is done
        recomputed = isinstance(c_block, BlockInput)
        if recomputed:
            # recomputed, not cached: the block again from its input, replaying its dropout draws
            _, c_block = block_forward(c_block.x, c_block.layers, **context,
                                       rng=replay_generator(c_block.rng_state))
        # a recomputed block's cache is this loop's own, spent in any case
        dx, dm, dbias, layer_grads = block_backward(dx, c_block, spend or recomputed)
        del c_block
        _add_block_grads(grads, stack, i, layer_grads)
        if dm is not None:
            dmemory = dm if dmemory is None else dmemory + dm
        dself_bias = dbias if dself_bias is None else dself_bias + dbias
    # self_bias = position_bias + mask: the mask is constant
    _, g = position_bias_backward(dself_bias, c_pos)
    add_grads(grads, g, f"{stack}.block.0.layer.0.SelfAttention")
    # x = dropout(shared[ids])
    dx, _ = dropout_backward(dx, c_drop_in)
    if not embedding:
        return dmemory, grads, (dx, c_emb)
    _, g = embedding_backward(dx, c_emb)
    grads["shared.weight"] = g["weight"]
    return dmemory, grads
