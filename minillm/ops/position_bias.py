"""T5's relative position bias: a learned scalar per (bucket, head).

The relative position of key j to query i is ``j - i``. It is mapped to one
of ``num_buckets`` buckets: exact buckets for small distances, log-spaced
ones up to ``max_distance``, one bucket beyond. In the encoder the buckets
are bidirectional (half for keys after the query); in the decoder only
keys at or before the query count (causal). Block 0 of each stack owns the
(num_buckets, H) table; every block of the stack reuses its bias.

    bias[0, h, i, j] = table[bucket(j - i), h]          (1, H, T, S)
"""

from __future__ import annotations

import math

import numpy as np

from minillm.backend import get_xp
from minillm.ops.embedding import EmbeddingCache, embedding_backward, embedding_forward


def relative_position_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """Bucket index for each relative position (``memory - query``), as T5 computes it.

    relative_position: integer array (T, S) -> buckets: int64 array (T, S) in [0, num_buckets).
    The log is taken in float32, as transformers does, so the buckets agree
    with it at every boundary.
    """
    xp = get_xp(relative_position)
    rel = relative_position.astype(np.int64)
    buckets = xp.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0).astype(np.int64) * num_buckets
        rel = xp.abs(rel)
    else:
        rel = -xp.minimum(rel, 0)
    # rel is now in [0, inf): half the buckets are exact, half log-spaced.
    max_exact = num_buckets // 2
    is_small = rel < max_exact
    # log of max(rel, 1): rel = 0 is small anyway, and this keeps log(0) out
    ratio = xp.log(xp.maximum(rel, 1).astype(np.float32) / np.float32(max_exact))
    large = max_exact + (
        ratio / np.float32(math.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
    ).astype(np.int64)  # truncation toward zero, as torch's .to(long)
    large = xp.minimum(large, num_buckets - 1)
    return buckets + xp.where(is_small, rel, large)


def position_buckets(query_length, key_length, bidirectional, num_buckets, max_distance, offset=0, xp=np):
    """The (T, S) bucket matrix for queries at positions offset..offset+T-1 and keys 0..S-1."""
    context = xp.arange(query_length, dtype=np.int64)[:, None] + offset  # (T, 1)
    memory = xp.arange(key_length, dtype=np.int64)[None, :]  # (1, S)
    return relative_position_bucket(memory - context, bidirectional, num_buckets, max_distance)


def position_bias_forward(buckets, params):
    """buckets: (T, S) int, params["relative_attention_bias"]: (NB, H) -> bias (1, H, T, S).

    The cache is the table lookup's (``EmbeddingCache``).
    """
    values, cache = embedding_forward(buckets, {"weight": params["relative_attention_bias"]})  # (T, S, H)
    return values.transpose(2, 0, 1)[None], cache  # (1, H, T, S)


def position_bias_backward(dbias, cache: EmbeddingCache):
    """dbias: (1 or B, H, T, S) -> (None, {"relative_attention_bias": (NB, H)})."""
    # bias = table[buckets] transposed and broadcast over the batch: a batch of gradients sums first
    d = dbias.sum(axis=0)  # (H, T, S)
    _, g = embedding_backward(d.transpose(1, 2, 0), cache)  # (T, S, H) scattered to (NB, H)
    return None, {"relative_attention_bias": g["weight"]}
