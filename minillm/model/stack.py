"""One T5 stack (encoder or decoder), forward and backward, a named function per layer.

    x = dropout(shared[ids])                                                       (B, L, C)
    block i, layer j named f"{stack}.block.{i}.layer.{j}":
        0:     x = x + dropout(SelfAttention(norm(x), bias = position_bias + mask))
        1:     x = x + dropout(EncDecAttention(norm(x), memory, bias = memory mask))   (decoder)
        last:  x = x + dropout(DenseReluDense(norm(x)))
    h = dropout(final_layer_norm(x))                                               (B, L, C)

The relative position bias is computed once, by block 0 of the stack, and shared
by all its blocks. A block's params are the list of its layers, each a dict named
as in the checkpoint (``layer_norm`` and one of ``SelfAttention``,
``EncDecAttention``, ``DenseReluDense``); the layer functions take those names as
arguments, so ``self_attention_layer_forward(x, **layer, ...)`` reads like the line
it computes, and the backward of each returns its grads in the same tree.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minillm.backend import get_xp
from minillm.model.params import add_grads, ffn_names, op_params
from minillm.ops.attention import (
    additive_mask,
    cross_attention_backward,
    cross_attention_forward,
    self_attention_backward,
    self_attention_forward,
)
from minillm.ops.dropout import DropoutCache, dropout_backward, dropout_forward
from minillm.ops.embedding import EmbeddingCache, embedding_backward, embedding_forward
from minillm.ops.ffn import GatedFFNCache, ffn_backward, ffn_forward, gated_ffn_backward, gated_ffn_forward
from minillm.ops.norm import RMSNormCache, rms_norm_backward, rms_norm_forward
from minillm.ops.position_bias import position_bias_backward, position_bias_forward, position_buckets


class LayerCache(NamedTuple):
    """A residual layer's caches: x + dropout(op(norm(x)))."""

    norm: RMSNormCache
    op: Any  # the attention's or the FFN's cache
    drop: DropoutCache


# ------------------------------------------------------------------ the layers


def self_attention_layer_forward(x, layer_norm, SelfAttention, *, bias, config, rng=None):
    """x + dropout(SelfAttention(norm(x), bias)).  x: (B, L, C) -> (B, L, C)."""
    p = float(config.dropout_rate)
    n, c_norm = rms_norm_forward(x, {"weight": layer_norm}, config.layer_norm_epsilon)  # (B, L, C)
    a, c_attn = self_attention_forward(n, SelfAttention, n_heads=config.num_heads, bias=bias, scale=1.0,
                                       dropout=p, rng=rng)  # (B, L, C)
    a, c_drop = dropout_forward(a, p=p, rng=rng)
    return x + a, LayerCache(c_norm, c_attn, c_drop)


def self_attention_layer_backward(dx, cache: LayerCache):
    """dx: (B, L, C) -> (dx, dbias, grads {"layer_norm", "SelfAttention"})."""
    # x + dropout(a),  a = SelfAttention(n),  n = norm(x)
    da, _ = dropout_backward(dx, cache.drop)
    (dn, dbias), g_attn = self_attention_backward(da, cache.op)
    dn, g_norm = rms_norm_backward(dn, cache.norm)
    return dx + dn, dbias, {"layer_norm": g_norm["weight"], "SelfAttention": g_attn}


def cross_attention_layer_forward(x, memory, layer_norm, EncDecAttention, *, bias, config, rng=None):
    """x + dropout(EncDecAttention(norm(x), memory, bias)).  x: (B, T, C), memory: (B, S, C)."""
    p = float(config.dropout_rate)
    n, c_norm = rms_norm_forward(x, {"weight": layer_norm}, config.layer_norm_epsilon)  # (B, T, C)
    a, c_attn = cross_attention_forward(n, memory, EncDecAttention, n_heads=config.num_heads, bias=bias,
                                        scale=1.0, dropout=p, rng=rng)  # (B, T, C)
    a, c_drop = dropout_forward(a, p=p, rng=rng)
    return x + a, LayerCache(c_norm, c_attn, c_drop)


def cross_attention_layer_backward(dx, cache: LayerCache):
    """dx: (B, T, C) -> (dx, dmemory (B, S, C), grads {"layer_norm", "EncDecAttention"})."""
    # x + dropout(a),  a = EncDecAttention(n, memory),  n = norm(x); the mask is constant
    da, _ = dropout_backward(dx, cache.drop)
    (dn, dmemory, _), g_attn = cross_attention_backward(da, cache.op)
    dn, g_norm = rms_norm_backward(dn, cache.norm)
    return dx + dn, dmemory, {"layer_norm": g_norm["weight"], "EncDecAttention": g_attn}


def ffn_layer_forward(x, layer_norm, DenseReluDense, *, config, rng=None):
    """x + dropout(DenseReluDense(norm(x))), plain or gated as the config says.  x: (B, L, C)."""
    p = float(config.dropout_rate)
    ffn = gated_ffn_forward if config.is_gated_act else ffn_forward
    n, c_norm = rms_norm_forward(x, {"weight": layer_norm}, config.layer_norm_epsilon)  # (B, L, C)
    f, c_ffn = ffn(n, DenseReluDense, act=config.dense_act_fn, dropout=p, rng=rng)  # (B, L, C)
    f, c_drop = dropout_forward(f, p=p, rng=rng)
    return x + f, LayerCache(c_norm, c_ffn, c_drop)


def ffn_layer_backward(dx, cache: LayerCache):
    """dx: (B, L, C) -> (dx, grads {"layer_norm", "DenseReluDense"})."""
    ffn_bwd = gated_ffn_backward if isinstance(cache.op, GatedFFNCache) else ffn_backward
    # x + dropout(f),  f = DenseReluDense(n),  n = norm(x)
    df, _ = dropout_backward(dx, cache.drop)
    dn, g_ffn = ffn_bwd(df, cache.op)
    dn, g_norm = rms_norm_backward(dn, cache.norm)
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


class BlockCache(NamedTuple):
    """A block's layer caches; ``cross`` is None in the encoder."""

    self_attn: LayerCache
    cross: LayerCache | None
    ffn: LayerCache


def block_forward(x, layers, *, self_bias, memory=None, cross_bias=None, config, rng=None):
    """One block, x: (B, L, C) -> (B, L, C); layers: ``block_params``; memory (B, S, C) in the decoder."""
    x, c_self = self_attention_layer_forward(x, **layers[0], bias=self_bias, config=config, rng=rng)
    c_cross = None
    if memory is not None:
        x, c_cross = cross_attention_layer_forward(x, memory, **layers[1], bias=cross_bias, config=config,
                                                   rng=rng)
    x, c_ffn = ffn_layer_forward(x, **layers[-1], config=config, rng=rng)
    return x, BlockCache(c_self, c_cross, c_ffn)


def block_backward(dx, cache: BlockCache):
    """dx: (B, L, C) -> (dx, dmemory or None, dself_bias, grads: one tree per layer, as block_params)."""
    dx, g_ffn = ffn_layer_backward(dx, cache.ffn)
    dmemory, g_cross = None, []
    if cache.cross is not None:
        dx, dmemory, g = cross_attention_layer_backward(dx, cache.cross)
        g_cross = [g]
    dx, dself_bias, g_self = self_attention_layer_backward(dx, cache.self_attn)
    return dx, dmemory, dself_bias, [g_self, *g_cross, g_ffn]


def add_block_grads(grads: dict, stack: str, i: int, layer_grads: list[dict]) -> None:
    """Block i's layer grads into the model's keys: f"{stack}.block.{i}.layer.{j}.{name}[.{w}].weight"."""
    for j, layer in enumerate(layer_grads):
        prefix = f"{stack}.block.{i}.layer.{j}"
        for name, g in layer.items():
            if isinstance(g, dict):  # an op's grads: a dict of its weights
                add_grads(grads, g, f"{prefix}.{name}")
            else:  # the norm's gain, a weight of the layer itself
                add_grads(grads, {name: g}, prefix)


# ------------------------------------------------------------------ the stack


class StackCache(NamedTuple):
    """What ``stack_backward`` needs."""

    stack: str  # "encoder" or "decoder"
    embedding: EmbeddingCache  # x = shared[ids]
    drop_in: DropoutCache
    position: EmbeddingCache  # the position table's lookup
    blocks: list  # a BlockCache per block
    final_norm: RMSNormCache
    drop_out: DropoutCache


def stack_biases(params, config, stack: str, L: int, keep, memory_keep):
    """(self_bias (B or 1, H, L, L) = position bias + mask, cross_bias (B, 1, 1, S) or None, the
    position table's cache): what every block of the stack adds to its attention scores."""
    is_decoder = stack == "decoder"
    w = params["shared.weight"]
    buckets = position_buckets(L, L, not is_decoder, config.relative_attention_num_buckets,
                               config.relative_attention_max_distance, xp=get_xp(w))  # (L, L)
    table = op_params(params, f"{stack}.block.0.layer.0.SelfAttention", ["relative_attention_bias"])
    pos_bias, c_pos = position_bias_forward(buckets, table)  # (1, H, L, L)
    self_bias = pos_bias + additive_mask(keep, w.dtype)  # (B or 1, H, L, L)
    cross_bias = additive_mask(memory_keep, w.dtype) if is_decoder else None  # (B, 1, 1, S)
    return self_bias, cross_bias, c_pos


def n_blocks(config, stack: str) -> int:
    return config.num_decoder_layers if stack == "decoder" else config.num_layers


def stack_forward(params, config, stack, ids, keep, memory=None, memory_keep=None, rng=None):
    """One T5 stack (``stack`` is "encoder" or "decoder") -> (h (B, L, C), StackCache).

    ids: (B, L) int token ids; keep: boolean, broadcastable to (B, 1, L, L), which keys
    each query may attend to (padding, and the causal mask in the decoder). For the
    decoder, memory: (B, S, C) and memory_keep: (B, 1, 1, S). rng: dropout (None: off).
    """
    p = float(config.dropout_rate)
    x, c_emb = embedding_forward(ids, {"weight": params["shared.weight"]})  # (B, L, C)
    x, c_drop_in = dropout_forward(x, p=p, rng=rng)
    self_bias, cross_bias, c_pos = stack_biases(params, config, stack, ids.shape[1], keep, memory_keep)
    blocks = []
    for i in range(n_blocks(config, stack)):
        x, c_block = block_forward(x, block_params(params, config, stack, i), self_bias=self_bias,
                                   memory=memory, cross_bias=cross_bias, config=config, rng=rng)
        blocks.append(c_block)
    h, c_final = rms_norm_forward(x, {"weight": params[f"{stack}.final_layer_norm.weight"]},
                                  config.layer_norm_epsilon)  # (B, L, C)
    h, c_drop_out = dropout_forward(h, p=p, rng=rng)
    return h, StackCache(stack, c_emb, c_drop_in, c_pos, blocks, c_final, c_drop_out)


def stack_backward(dh, cache: StackCache):
    """dh: (B, L, C) -> (dmemory (B, S, C) or None in the encoder, grads keyed like params).

    The gradient of the memory is the sum over every decoder block's cross-attention;
    that of the position table the sum over every block's self-attention.
    """
    stack = cache.stack
    grads: dict = {}
    # h = dropout(final_norm(x))
    dh, _ = dropout_backward(dh, cache.drop_out)
    dx, g = rms_norm_backward(dh, cache.final_norm)
    grads[f"{stack}.final_layer_norm.weight"] = g["weight"]
    dmemory = dself_bias = None
    for i in reversed(range(len(cache.blocks))):
        dx, dm, dbias, layer_grads = block_backward(dx, cache.blocks[i])
        add_block_grads(grads, stack, i, layer_grads)
        if dm is not None:
            dmemory = dm if dmemory is None else dmemory + dm
        dself_bias = dbias if dself_bias is None else dself_bias + dbias
    # self_bias = position_bias + mask: the mask is constant
    _, g = position_bias_backward(dself_bias, cache.position)
    add_grads(grads, g, f"{stack}.block.0.layer.0.SelfAttention")
    # x = dropout(shared[ids])
    dx, _ = dropout_backward(dx, cache.drop_in)
    _, g = embedding_backward(dx, cache.embedding)
    grads["shared.weight"] = g["weight"]
    return dmemory, grads
