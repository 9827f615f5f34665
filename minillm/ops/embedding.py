"""Embedding lookup: out = W[ids]; its backward scatters rows back with add."""

from __future__ import annotations

from minillm.backend import get_xp


def embedding_forward(ids, params):
    """out = W[ids].  ids: (...) integer, params["weight"]: (V, C) -> out: (..., C)."""
    w = params["weight"]
    return w[ids], (ids, w.shape, w.dtype)


def embedding_backward(dout, cache, *, dw_into=None):
    """dout: (..., C) -> (None, {"weight": (V, C)}).

    ids are integers, so there is no input gradient. A token that occurs n
    times receives the sum of its n output gradients (scatter with add).
    ``dw_into`` (V, C): scatter into that array (a table used twice, tied to
    the LM head or read by both stacks, then has one (V, C) gradient, not three).
    """
    ids, shape, dtype = cache
    xp = get_xp(dout)
    dw = xp.zeros(shape, dtype=dtype) if dw_into is None else dw_into
    # out = W[ids]  =>  dW[v] = sum of dout over the positions where ids == v
    xp.add.at(dw, ids.reshape(-1), dout.reshape(-1, shape[1]))
    return None, {"weight": dw}
