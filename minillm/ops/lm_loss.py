"""The LM head and the mean cross-entropy fused, row chunk by row chunk (SFT's loss).

For hidden states h (N, C), the head's weight W (V, C), a scale s and labels y (N,):

    logits = (h * s) W^T                                              (N, V)
    loss   = (1 / n) sum_{i : y_i != -100} token_loss_i,   n = #{i : y_i != -100}

with token_loss from :func:`minillm.ops.cross_entropy.cross_entropy_forward`
(label smoothing included). The seed of the mean, d loss / d token_loss_i = 1 / n
on every target, is known before any backward, so the forward takes each chunk
of rows through the whole chain and back at once, as Liger-Kernel's fused linear
cross-entropy does:

    logits_c = (h_c * s) W^T                      linear_forward         (rows, V)
    tl_c     = cross_entropy(logits_c, y_c)       cross_entropy_forward  (rows,)
    dlogits_c                                     cross_entropy_backward (rows, V), seed 1 / n
    dh_c     = s * dlogits_c W                    linear_backward        (rows, C)
    dW      += dlogits_c^T (h_c * s)              linear_backward        (V, C)

and keeps dh (N, C) and dW (V, C) of a unit dloss as its cache; the backward
scales them by dloss. At most one chunk's (rows, V) logits, probabilities and
gradient exist at a time (one array: p is written over the logits and the
gradient over p), never the (N, V) arrays of the unfused path, and the later
chunks add their dW into the sum a block of rows at a time (``dw_into``); the
math is that path's own functions, called on fewer rows.
"""

from __future__ import annotations

from minillm.backend import get_xp
from minillm.ops.cross_entropy import IGNORE_INDEX, cross_entropy_backward, cross_entropy_forward
from minillm.ops.linear import linear_backward, linear_forward

CHUNK_ELEMENTS = 1 << 23
"""Logits per chunk: 32 MiB of float32 (261 rows of T5's 32128-token vocabulary).

Each chunk adds its (V, C) weight gradient into the sum, so smaller chunks cost
time: on t5-small's head (N = 512, C = 512, V = 32128, float32, 2 cores) the
unfused head and loss took 256 ms, chunks of 261 rows 278 ms, of 130 rows 311 ms,
of 65 rows 390 ms."""


def default_chunk_rows(vocab_size: int) -> int:
    """Rows per chunk: ``CHUNK_ELEMENTS // V``, at least 1."""
    return max(1, CHUNK_ELEMENTS // vocab_size)


def lm_head_cross_entropy_forward(h, params, labels, *, scale: float = 1.0, label_smoothing: float = 0.0,
                                  chunk_rows: int | None = None):
    """h (N, C), params {"weight": W (V, C)}, labels (N,) -> (loss, a 0-d array; cache).

    loss = mean over labels != -100 of the cross-entropy of (h * scale) W^T; the
    cache holds that loss's gradients, dh (N, C) and dW (V, C), computed
    ``chunk_rows`` rows at a time (None: :func:`default_chunk_rows`).
    """
    xp = get_xp(h)
    w = params["weight"]
    N = h.shape[0]
    rows = default_chunk_rows(w.shape[0]) if chunk_rows is None else int(chunk_rows)
    if rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows!r}")
    n = max(int((labels != IGNORE_INDEX).sum()), 1)
    total = xp.zeros((), dtype=h.dtype)  # sum of the token losses
    dh = xp.empty_like(h)  # (N, C)
    dw = None  # (V, C), the first chunk's, then summed into
    for i in range(0, N, rows):
        h_c = h[i:i + rows]  # (rows, C)
        hs = h_c * scale if scale != 1.0 else h_c  # (rows, C)
        logits, c_lin = linear_forward(hs, {"weight": w})  # (rows, V)
        # p = softmax(logits) written over the logits, then dlogits over p: one (rows, V) array
        token_loss, c_ce = cross_entropy_forward(logits, labels[i:i + rows], label_smoothing,
                                                 spend=True)  # (rows,)
        del logits
        total += token_loss.sum()
        # loss = (1 / n) sum_i token_loss_i  =>  d loss / d token_loss_i = 1 / n (0 where ignored)
        seed = xp.full(token_loss.shape, 1.0 / n, dtype=h.dtype)  # (rows,)
        dlogits, _ = cross_entropy_backward(seed, c_ce, spend=True)  # (rows, V)
        del c_ce
        # logits_c = hs_c W^T for every chunk c  =>  dW = sum_c dlogits_c^T hs_c, the first
        # chunk's made, the later ones added into it (a block of rows at a time)
        dhs, g = linear_backward(dlogits, c_lin, dw_into=dw)  # (rows, C), {"weight": (V, C)}
        dw = g["weight"]
        del dlogits
        # hs = h * scale  =>  dh = dhs * scale
        dh[i:i + rows] = dhs * scale if scale != 1.0 else dhs
    if dw is None:  # no rows at all
        dw = xp.zeros_like(w)
    return total / n, (dh, dw)


def lm_head_cross_entropy_backward(dloss, cache):
    """dloss (scalar) -> (dh (N, C), {"weight": dW (V, C)}).

    loss's gradients are linear in dloss: dh = dloss * dh_1, dW = dloss * dW_1,
    with dh_1, dW_1 the cached ones of a unit dloss. At dloss == 1 (a loss that is
    the caller's whole objective) the cached arrays are returned themselves,
    saving a (V, C) copy; the cache is then spent.
    """
    dh, dw = cache
    if dloss == 1.0:
        return dh, {"weight": dw}
    return dh * dh.dtype.type(dloss), {"weight": dw * dw.dtype.type(dloss)}


__all__ = ["CHUNK_ELEMENTS", "default_chunk_rows", "lm_head_cross_entropy_forward",
           "lm_head_cross_entropy_backward"]
