"""The engine's T5 stack: the reference stack's math (:mod:`minillm.model.stack`) with the engine's
ops, caches freed as the backward goes, optional recomputation, and an inference pass.

What differs from the reference, and why:

- a layer keeps its norm's xhat but not the norm's output n = xhat * w, which is the
  attention's or FFN's input: the backward remakes n with the forward's own product
  (:func:`minillm.engine.elementwise.rms_norm_output`) and hands it to the op;
- the backward consumes its cache: ``stack_backward`` pops each block's cache and drops
  each layer's once its backward is done, so the activations are freed while the
  gradients grow (the peak is about the larger of the two, not their sum);
- ``recompute=True`` keeps only each block's input (and the dropout Generator's state
  before it, a ``BlockInput``); the backward runs the block's forward again, drawing
  the same masks, to get the cache it needs: the same gradients bit for bit, for one
  block's cache at a time and about a third more compute;
- ``stack_output`` runs the stack for inference, keeping nothing.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

import minillm.engine.attention as attention
import minillm.engine.ffn as ffn
from minillm.engine.elementwise import (
    dropout_apply,
    dropout_forward,
    rms_norm_backward,
    rms_norm_forward,
    rms_norm_output,
)
from minillm.model.params import add_grads
from minillm.model.stack import BlockCache, add_block_grads, block_params, n_blocks, stack_biases
from minillm.ops.dropout import DropoutCache
from minillm.ops.embedding import EmbeddingCache, embedding_forward
from minillm.ops.norm import RMSNormCache
from minillm.ops.position_bias import position_bias_backward


class LayerCache(NamedTuple):
    """A residual layer x + dropout(op(norm(x))): the norm's cache, the op's (without n), the mask."""

    norm: RMSNormCache
    op: Any
    drop: DropoutCache


def _layer(x, layer_norm, op, config, rng):
    """x + dropout(op(n)), n = norm(x): op(n) -> (out, cache) is the attention or the FFN."""
    n, c_norm = rms_norm_forward(x, layer_norm, config.layer_norm_epsilon)  # (B, L, C)
    out, c_op = op(n)
    out, c_drop = dropout_forward(out, float(config.dropout_rate), rng)
    return x + out, LayerCache(c_norm, c_op, c_drop)


def block_forward(x, layers, *, self_bias, memory=None, cross_bias=None, config, rng=None):
    """One block, x: (B, L, C) -> (B, L, C) and its BlockCache (``cross`` None in the encoder)."""
    p, H, act = float(config.dropout_rate), config.num_heads, config.dense_act_fn
    sa, ff = layers[0]["SelfAttention"], layers[-1]["DenseReluDense"]
    x, c_self = _layer(x, layers[0]["layer_norm"],
                       lambda n: attention.self_attention_forward(n, sa, H, self_bias, p, rng), config, rng)
    c_cross = None
    if memory is not None:
        ca = layers[1]["EncDecAttention"]
        x, c_cross = _layer(x, layers[1]["layer_norm"], lambda n: attention.cross_attention_forward(
            n, memory, ca, H, cross_bias, p, rng), config, rng)
    ffn_forward = ffn.gated_ffn_forward if config.is_gated_act else ffn.ffn_forward
    x, c_ffn = _layer(x, layers[-1]["layer_norm"], lambda n: ffn_forward(n, ff, act, p, rng), config, rng)
    return x, BlockCache(c_self, c_cross, c_ffn)


def _layer_backward(dx, cache: LayerCache, op_backward):
    """dx -> (dx + dn, the op's other gradients, dw of the norm): x + dropout(op(n)), n = norm(x)."""
    dout = dropout_apply(dx, cache.drop)
    d_in, grads = op_backward(dout, cache.op, rms_norm_output(cache.norm))  # n remade
    dn = d_in[0] if isinstance(d_in, tuple) else d_in
    dn, dw = rms_norm_backward(dn, cache.norm)
    return dx + dn, d_in, grads, dw


def block_backward(dx, blocks: list, context: dict):
    """The backward of the last block of ``blocks``, which it removes: dx (B, L, C) ->
    (dx, dmemory or None, dself_bias, grads per layer, as ``block_params``).

    Each layer's cache is dropped once its backward is done; a ``BlockInput`` is
    recomputed first, from its input, replaying its dropout draws.
    """
    block = blocks.pop()
    if isinstance(block, BlockInput):  # recomputed, not cached: its forward again, the same masks
        block = block_forward(block.x, block.layers, **context, rng=replay_generator(block.rng_state))[1]
    c_self, c_cross, c_ffn = block
    del block
    ffn_backward = ffn.gated_ffn_backward if isinstance(c_ffn.op, ffn.GatedFFNCache) else ffn.ffn_backward
    dx, _, g_ffn, dw = _layer_backward(dx, c_ffn, ffn_backward)
    del c_ffn
    grads = [{"layer_norm": dw, "DenseReluDense": g_ffn}]
    dmemory = None
    if c_cross is not None:
        dx, (_, dmemory, _), g, dw = _layer_backward(dx, c_cross, attention.cross_attention_backward)
        grads.insert(0, {"layer_norm": dw, "EncDecAttention": g})
    del c_cross
    dx, (_, dself_bias), g, dw = _layer_backward(dx, c_self, attention.self_attention_backward)
    return dx, dmemory, dself_bias, [{"layer_norm": dw, "SelfAttention": g}, *grads]


class BlockInput(NamedTuple):
    """What a recomputed block keeps instead of its cache: its input and its dropout stream."""

    x: Any  # (B, L, C) the block's input
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


class StackCache(NamedTuple):
    """What ``stack_backward`` needs; ``blocks`` is a list the backward empties as it goes."""

    stack: str
    embedding: EmbeddingCache
    drop_in: DropoutCache
    position: EmbeddingCache
    context: dict  # what every block is called with: self_bias, memory, cross_bias, config
    blocks: list  # per block: its BlockCache, or a BlockInput (recompute)
    final_norm: RMSNormCache
    drop_out: DropoutCache


def _embed(params, config, stack, ids, keep, memory, memory_keep, rng):
    """x = dropout(shared[ids]) and what every block is called with."""
    x, c_emb = embedding_forward(ids, {"weight": params["shared.weight"]})  # (B, L, C)
    x, c_drop_in = dropout_forward(x, float(config.dropout_rate), rng)
    self_bias, cross_bias, c_pos = stack_biases(params, config, stack, ids.shape[1], keep, memory_keep)
    context = {"self_bias": self_bias, "memory": memory, "cross_bias": cross_bias, "config": config}
    return x, c_emb, c_drop_in, c_pos, context


def _final(params, config, stack, x, rng):
    h, c_final = rms_norm_forward(x, params[f"{stack}.final_layer_norm.weight"], config.layer_norm_epsilon)
    h, c_drop_out = dropout_forward(h, float(config.dropout_rate), rng)
    return h, c_final, c_drop_out


def stack_forward(params, config, stack, ids, keep, memory=None, memory_keep=None, rng=None,
                  recompute: bool = False):
    """One stack, as :func:`minillm.model.stack.stack_forward` -> (h (B, L, C), StackCache).

    ``recompute``: keep only each block's input (a ``BlockInput``); ``rng`` advances
    exactly as without it.
    """
    x, c_emb, c_drop_in, c_pos, context = _embed(params, config, stack, ids, keep, memory, memory_keep, rng)
    blocks = []
    for i in range(n_blocks(config, stack)):
        layers = block_params(params, config, stack, i)
        if recompute:
            blocks.append(BlockInput(x, layers, rng_snapshot(rng, float(config.dropout_rate))))
            x, _ = block_forward(x, layers, **context, rng=rng)  # (B, L, C)
        else:
            x, c_block = block_forward(x, layers, **context, rng=rng)  # (B, L, C)
            blocks.append(c_block)
    h, c_final, c_drop_out = _final(params, config, stack, x, rng)
    return h, StackCache(stack, c_emb, c_drop_in, c_pos, context, blocks, c_final, c_drop_out)


def stack_output(params, config, stack, ids, keep, memory=None, memory_keep=None):
    """The stack's output h (B, L, C) for inference (no dropout), keeping no cache: each block's is
    dropped as soon as the next block starts. The same numbers as ``stack_forward``'s h."""
    x, _, _, _, context = _embed(params, config, stack, ids, keep, memory, memory_keep, None)
    for i in range(n_blocks(config, stack)):
        x, _ = block_forward(x, block_params(params, config, stack, i), **context)  # (B, L, C)
    return _final(params, config, stack, x, None)[0]


def stack_backward(dh, cache: StackCache):
    """dh: (B, L, C) -> (dmemory or None, grads without shared.weight, d_embedded (B, L, C)).

    The embedding's gradient is not made here: the caller scatters ``d_embedded`` with
    ``cache.embedding`` once both stacks are done (one (V, C) array, not one per stack).
    ``cache.blocks`` is emptied: the cache cannot be used again.
    """
    stack, context = cache.stack, cache.context
    if not cache.blocks:
        raise ValueError(f"the {stack}'s cache was used by a backward already (the engine's backward "
                         "consumes its cache)")
    grads: dict = {}
    # h = dropout(final_norm(x))
    dx, grads[f"{stack}.final_layer_norm.weight"] = rms_norm_backward(dropout_apply(dh, cache.drop_out),
                                                                      cache.final_norm)
    dmemory = dself_bias = None
    for i in reversed(range(len(cache.blocks))):
        dx, dm, dbias, layer_grads = block_backward(dx, cache.blocks, context)  # block i, removed
        add_block_grads(grads, stack, i, layer_grads)
        if dm is not None:
            dmemory = dm if dmemory is None else dmemory + dm
        dself_bias = dbias if dself_bias is None else dself_bias + dbias
    # self_bias = position_bias + mask: the mask is constant
    add_grads(grads, position_bias_backward(dself_bias, cache.position)[1],
              f"{stack}.block.0.layer.0.SelfAttention")
    # x = dropout(shared[ids])
    return dmemory, grads, dropout_apply(dx, cache.drop_in)
