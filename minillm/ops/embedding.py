"""Embedding lookup: out = W[ids]; its backward scatters rows back with add."""

from __future__ import annotations

from minillm.backend import get_xp


def embedding_forward(ids, params):
    """out = W[ids].  ids: (...) integer, params["weight"]: (V, C) -> out: (..., C)."""
    w = params["weight"]
    return w[ids], (ids, w.shape, w.dtype)


def embedding_backward(dout, cache):
    """dout: (..., C) -> (None, {"weight": (V, C)}).

    ids are integers, so there is no input gradient. A token that occurs n
    times receives the sum of its n output gradients (scatter with add).
    """
    ids, shape, dtype = cache
    xp = get_xp(dout)
    dw = xp.zeros(shape, dtype=dtype)
    # out = W[ids]  =>  dW[v] = sum of dout over the positions where ids == v
    xp.add.at(dw, ids.reshape(-1), dout.reshape(-1, shape[1]))
    return None, {"weight": dw}


def embedding_backward_rows(dout, cache):
    """dout: (..., C) -> (rows (U,), drows (U, C)): the rows of dW that are not zero, in order.

    The same numbers as ``embedding_backward``'s rows (each starts from 0 and adds its
    positions' gradients in the same order), without the (V, C) array: U <= the number
    of positions, so a caller can sum several scatters into one dW.
    """
    ids, shape, dtype = cache
    xp = get_xp(dout)
    rows, where = xp.unique(ids.reshape(-1), return_inverse=True)  # (U,), (positions,)
    drows = xp.zeros((rows.shape[0], shape[1]), dtype=dtype)  # (U, C)
    # out = W[ids]  =>  dW[rows[u]] = sum of dout over the positions where ids == rows[u]
    xp.add.at(drows, where.reshape(-1), dout.reshape(-1, shape[1]))
    return rows, drows


def embedding_backward_sum(parts, dw_into=None):
    """dW (V, C) of a table read several times: (scatter_1 + scatter_2 + ...) + dw_into.

    parts: [(dout, cache), ...] of ``embedding_forward`` calls on one table (T5's two
    stacks). The scatters are summed on the rows their ids touch (``embedding_backward_rows``),
    in the order given, so the numbers are those of adding the dense scatters; no (V, C)
    array is made per part. ``dw_into`` (V, C): added into that array (a tied head's dW),
    which is returned; else a new zero array.
    """
    xp = get_xp(parts[0][0])
    scattered = [embedding_backward_rows(dout, cache) for dout, cache in parts]  # (U_k,), (U_k, C)
    _, shape, dtype = parts[0][1]
    rows = scattered[0][0]
    for r, _ in scattered[1:]:
        rows = xp.union1d(rows, r)  # (U,) sorted
    total = xp.zeros((rows.shape[0], shape[1]), dtype=dtype)  # (U, C)
    for r, d in scattered:
        total[xp.searchsorted(rows, r)] += d  # scatter_1 + scatter_2 + ..., row by row
    if dw_into is None:
        dw = xp.zeros(shape, dtype=dtype)
        dw[rows] = total
        return dw
    dw_into += 0.0  # -0.0 + 0 = +0.0, as (0 + 0) + x gives where no id points
    dw_into[rows] = total + dw_into[rows]  # (scatter_1 + ...) + dw_into
    return dw_into
