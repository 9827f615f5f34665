"""Embedding lookup: out = W[ids]; its backward scatters the rows back, adding.

    out[..., :] = W[ids[...], :]          ids: (...) integers in [0, V),  W: (V, C),  out: (..., C)
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minillm.backend import get_xp


class EmbeddingCache(NamedTuple):
    """What ``embedding_backward`` needs: the ids read and the table's shape and dtype."""

    ids: Any  # (...) integer
    shape: tuple  # (V, C)
    dtype: Any


def embedding_forward(ids, params):
    """out = W[ids].  ids: (...) integer, params["weight"]: W (V, C) -> out: (..., C)."""
    w = params["weight"]
    return w[ids], EmbeddingCache(ids, w.shape, w.dtype)


def embedding_backward(dout, cache: EmbeddingCache):
    """dout: (..., C) -> (None, {"weight": dW (V, C)}).

    The ids are integers, so there is no input gradient. A row read n times
    receives the sum of its n output gradients (a scatter with add).
    """
    ids, (V, C), dtype = cache
    xp = get_xp(dout)
    dw = xp.zeros((V, C), dtype=dtype)
    # out = W[ids]  =>  dW[v] = sum of dout over the positions where ids == v
    xp.add.at(dw, ids.reshape(-1), dout.reshape(-1, C))
    return None, {"weight": dw}
