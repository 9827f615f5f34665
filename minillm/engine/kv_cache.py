"""The decoder's key/value cache: one new token per step, at O(cached length) cost.

A full decoder pass over t+1 tokens costs O((t+1)^2) in attention and repeats
every earlier position's projections. Generation only needs the logits of the
newest position, and causal attention means the earlier positions never change,
so each step computes just the new row:

    encoder, once per prompt:   memory = encode(input_ids)                  (B, S, C)
    cross K/V, once per prompt: K_c = memory W_k^T, V_c = memory W_v^T      (B, H, S, D) per layer
    step t (token y_t):         x = shared[y_t]                             (N, C)
        per layer:  [q, k, v] = norm(x) [W_q; W_k; W_v]^T                   (N, 3 H D)
                    K[:, :, t] = k,  V[:, :, t] = v                         (written in place)
                    x += softmax(q K[:, :, :t+1]^T + bias_t) V[:, :, :t+1] W_o^T
                    x += softmax(q_c K_c^T + cross_mask) V_c W_o^T
                    x += FFN(norm(x))
        logits = (norm(x) * s) W_emb^T                                      (N, V)

N = B * repeats rows (beams or returned sequences); a prompt's rows share its
cross K/V, which are computed once and then repeated. The self-attention K/V
live in buffers pre-allocated to the longest decode (N, H, T_max, D) that each
step writes one position of: no concatenation, no re-allocation.

The relative position bias of query t over keys 0..t depends only on j - t in
-t..0, so one row, the last query's over all T_max keys (``position_buckets``
with ``offset = T_max - 1``), holds every step's bias as a suffix:

    bias_t = row[:, :, :, T_max-1-t:]                                       (1, H, 1, t+1)

The keys after t are never read, so the causal mask is implicit.

Each step calls the engine's inference forms, the training forward's kernels
without a backward cache: ``rms_norm``, the attention ``core`` over the cached keys
and values, ``ffn``, over the weights as stored (``StepWeights`` holds views).
tests/test_generation.py holds the cached decoding to the reference's full decoder pass.

Beam search keeps the cache's rows in step with its beams: ``reorder_cache``
gathers rows by the beams' parent index. The cross K/V need no reordering, since
a beam's parent is a beam of the same prompt.

A ``KVCache`` is mutable by design (its buffers are written in place); it
belongs to one ``generate`` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from minillm.backend import get_xp
from minillm.config import T5Config
from minillm.engine.attention import core, project
from minillm.engine.elementwise import rms_norm
from minillm.engine.ffn import ffn
from minillm.model.params import ffn_names, op_params
from minillm.ops.attention import additive_mask, padding_keep, split_heads
from minillm.ops.embedding import embedding_forward
from minillm.ops.position_bias import position_bias_forward, position_buckets


@dataclass
class StepWeights:
    """The decoder's weights for one-token steps: views of the parameters, no copies.

    The few rows of a step run as y = (W x^T)^T with W as stored (O, I): for N = 1
    to 8 rows OpenBLAS reads a stored W about as fast as a transposed copy of it, so
    no copy is laid out (it cost a pass over every decoder weight per generate call,
    about a tenth of a batch-1 call, and would go stale when the weights change).
    Per layer i: ``sa[i]`` the self-attention's {"q", "k", "v", "o"} ((HD, C), W_o
    (C, HD)), ``ca[i]`` the cross-attention's {"q", "o"}, ``ln[i]`` the three norm
    gains, ``ff[i]`` the FFN's weights for ``ops.ffn``. ``embed`` (V, C) is the
    input embedding (shared.weight), ``final_ln`` (C,) the final norm gain times
    the LM head's scale s, and ``head`` (V, C) the output embedding
    (lm_head.weight, or shared.weight when tied).
    """

    embed: Any
    sa: list
    ca: list
    ln: list
    ff: list
    final_ln: Any
    head: Any
    act: str
    n_heads: int
    eps: float


def step_weights(params: dict, config: T5Config) -> StepWeights:
    """The decoder's weights of ``params`` for ``decode_step`` (views; see StepWeights)."""
    sa, ca, ln, ff = [], [], [], []
    for i in range(config.num_decoder_layers):
        b = f"decoder.block.{i}.layer"
        sa.append(op_params(params, f"{b}.0.SelfAttention", "qkvo"))
        ca.append(op_params(params, f"{b}.1.EncDecAttention", "qo"))
        ff.append(op_params(params, f"{b}.2.DenseReluDense", ffn_names(config)))
        ln.append(tuple(params[f"{b}.{j}.layer_norm.weight"] for j in range(3)))
    s = config.d_model**-0.5 if config.scale_decoder_outputs else 1.0
    final_ln = params["decoder.final_layer_norm.weight"] * params["shared.weight"].dtype.type(s)
    head = params.get("lm_head.weight", params["shared.weight"])
    return StepWeights(params["shared.weight"], sa, ca, ln, ff, final_ln, head, config.dense_act_fn,
                       config.num_heads, float(config.layer_norm_epsilon))


@dataclass
class KVCache:
    """What the decoder keeps between steps, for N rows.

    self_k, self_v: per layer (N, H, T_max, D), positions < ``length`` filled.
    cross_k, cross_v: per layer (N, H, S, D); cross_k is a view of a contiguous
    (N, H, D, S) buffer, so the scores q k^T multiply contiguous arrays.
    cross_bias: (N, 1, 1, S) the encoder padding as an additive mask.
    position_row: (1, H, 1, T_max) the bias of query T_max-1 over keys 0..T_max-1.
    """

    self_k: list
    self_v: list
    cross_k: list
    cross_v: list
    cross_bias: Any
    position_row: Any
    length: int = 0

    @property
    def max_length(self) -> int:
        return self.self_k[0].shape[2]


def init_cache(params: dict, config: T5Config, memory, attention_mask, max_length: int,
               repeats: int = 1) -> KVCache:
    """An empty cache for decoding up to ``max_length`` tokens from ``memory``.

    memory: (B, S, C) the encoder output; attention_mask: (B, S) 1 for real
    tokens (None: all real). The cross K/V are projected once per prompt, as
    ``cross_attention_forward`` projects them, then each prompt's row is
    repeated ``repeats`` times (consecutively, as torch's repeat_interleave)
    for N = B * repeats rows.
    """
    xp = get_xp(memory)
    dtype = memory.dtype
    B, S, _ = memory.shape
    H, D, N = config.num_heads, config.d_kv, B * repeats
    if attention_mask is None:
        attention_mask = xp.ones((B, S), dtype=np.int64)
    cross_bias = additive_mask(padding_keep(xp.asarray(attention_mask)), dtype)  # (B, 1, 1, S)
    cross_k, cross_v = [], []
    for i in range(config.num_decoder_layers):
        ca = op_params(params, f"decoder.block.{i}.layer.1.EncDecAttention", "kv")
        # k = memory W_k^T, v = memory W_v^T: two GEMMs cost less here than fusing W_k and W_v first
        k, v = (split_heads(project(memory, ca[w]), H) for w in "kv")  # (B, H, S, D)
        k_t = xp.ascontiguousarray(xp.repeat(k.transpose(0, 1, 3, 2), repeats, axis=0))  # (N, H, D, S)
        cross_k.append(k_t.transpose(0, 1, 3, 2))  # (N, H, S, D) view
        cross_v.append(xp.ascontiguousarray(xp.repeat(v, repeats, axis=0)))  # (N, H, S, D)
    self_k = [xp.zeros((N, H, max_length, D), dtype=dtype) for _ in range(config.num_decoder_layers)]
    self_v = [xp.zeros((N, H, max_length, D), dtype=dtype) for _ in range(config.num_decoder_layers)]
    buckets = position_buckets(1, max_length, False, config.relative_attention_num_buckets,
                               config.relative_attention_max_distance, offset=max_length - 1, xp=xp)
    rel = op_params(params, "decoder.block.0.layer.0.SelfAttention", ["relative_attention_bias"])
    position_row, _ = position_bias_forward(buckets, rel)  # (1, H, 1, T_max)
    return KVCache(self_k, self_v, cross_k, cross_v, xp.repeat(cross_bias, repeats, axis=0),
                   xp.ascontiguousarray(position_row), 0)


def decode_step(w: StepWeights, cache: KVCache, tokens) -> Any:
    """Logits (N, V) for the next token after ``tokens`` (N,), the ids at position t = cache.length.

    Writes position t's self-attention K/V into the cache and advances its length.
    """
    t = cache.length
    if t >= cache.max_length:
        raise ValueError(f"the cache holds {cache.max_length} positions; cannot add position {t}")
    H, eps = w.n_heads, w.eps
    x, _ = embedding_forward(tokens, {"weight": w.embed})  # (N, C)
    N = x.shape[0]
    bias = cache.position_row[:, :, :, cache.max_length - 1 - t:]  # (1, H, 1, t+1)
    for i in range(len(w.sa)):
        ln0, ln1, ln2 = w.ln[i]
        sa, ca = w.sa[i], w.ca[i]
        # x = x + SelfAttention(norm(x)), over the cached keys 0..t; each projection is
        # (W h^T)^T with W as stored: (HD, C) @ (C, N) -> (HD, N), transposed to (N, HD)
        ht = rms_norm(x, ln0, eps).T  # (C, N)
        q, k, v = ((sa[n] @ ht).T.reshape(N, H, 1, -1) for n in "qkv")  # (N, H, 1, D)
        cache.self_k[i][:, :, t:t + 1] = k
        cache.self_v[i][:, :, t:t + 1] = v
        ctx = core(q, cache.self_k[i][:, :, :t + 1], cache.self_v[i][:, :, :t + 1],
                   bias)  # (N, H, 1, D); T5's W_q holds the scale
        # ctx W_o^T as (W_o ctx^T)^T, ctx merged at one position: (C, HD) @ (HD, N) -> (N, C)
        x = x + (sa["o"] @ ctx.reshape(N, -1).T).T
        # x = x + EncDecAttention(norm(x), memory)
        q = (ca["q"] @ rms_norm(x, ln1, eps).T).T.reshape(N, H, 1, -1)  # (N, H, 1, D)
        ctx = core(q, cache.cross_k[i], cache.cross_v[i], cache.cross_bias)  # (N, H, 1, D)
        x = x + (ca["o"] @ ctx.reshape(N, -1).T).T  # (C, HD) @ (HD, N) -> (N, C)
        # x = x + DenseReluDense(norm(x))
        x = x + ffn(rms_norm(x, ln2, eps), w.ff[i], w.act)  # (N, C)
    cache.length = t + 1
    # logits = (final_norm(x) * s) W^T, with s folded into final_ln
    return rms_norm(x, w.final_ln, eps) @ w.head.T  # (N, V)


def reorder_cache(cache: KVCache, index) -> None:
    """Row n of the self-attention K/V becomes row index[n] (beam search's parents), in place.

    index: (N,) integer. Only the filled positions are moved; an identity index moves nothing.
    """
    xp = get_xp(index)
    t = cache.length
    if bool((index == xp.arange(len(index))).all()):
        return
    for buf in cache.self_k + cache.self_v:
        buf[:, :, :t] = buf[index, :, :t]
