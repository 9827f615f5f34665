"""The LM head and the mean cross-entropy fused, row chunk by row chunk (SFT's loss).

For hidden states h (N, C), the head's weight W (V, C), a scale s and labels y (N,),
the math of the reference (:meth:`minillm.model.T5.lm_head`, :func:`minillm.ops.cross_entropy`):

    logits = (h * s) W^T                                              (N, V)
    loss   = (1 / n) sum_{i : y_i != -100} token_loss_i,   n = #{i : y_i != -100}

The seed of the mean, d loss / d token_loss_i = 1 / n on every target, is known before
any backward, so each chunk of rows goes through the whole chain and back at once
(as Liger-Kernel's fused linear cross-entropy does):

    logits_c = (h_c * s) W^T                                          (rows, V)
    tl_c     = cross_entropy(logits_c, y_c)        p written over the logits
    dlogits_c = (1 / n) (p_c - onehot(y_c))        written over p
    dh_c     = s * dlogits_c W                                        (rows, C)
    dW      += dlogits_c^T (h_c * s)               a block of rows of dW at a time

At most one chunk's (rows, V) array exists at a time, never the (N, V) logits,
probabilities and gradient of the reference. The cross-entropy's numbers are the
reference's bit for bit without label smoothing; with it, -mean_v log p_v is computed
as logsumexp(z) - mean_v z_v (one pass fewer), equal to rounding.
"""

from __future__ import annotations

from minillm.backend import blockwise, get_xp
from minillm.ops.cross_entropy import IGNORE_INDEX

CHUNK_ELEMENTS = 1 << 23
"""Logits per chunk: 32 MiB of float32 (261 rows of T5's 32128-token vocabulary).

Each chunk adds its (V, C) weight gradient into the sum, so smaller chunks cost
time: on t5-small's head (N = 512, C = 512, V = 32128, float32, 2 cores) the
unfused head and loss took 256 ms, chunks of 261 rows 278 ms, of 130 rows 311 ms,
of 65 rows 390 ms."""

DW_BLOCK_ROWS = 4096
"""Rows of dW per product when a chunk's weight gradient is added into the sum."""


def default_chunk_rows(vocab_size: int) -> int:
    """Rows per chunk: ``CHUNK_ELEMENTS // V``, at least 1."""
    return max(1, CHUNK_ELEMENTS // vocab_size)


# ------------------------------------------------------------------ the cross-entropy, in place


def _softmax_rows_block(z, p, zmax, logz):
    """One block of rows: p = softmax(z) (p may be z), zmax = max z, logz = log sum exp(z - max z)."""
    xp = get_xp(z)
    z.max(axis=-1, out=zmax)
    xp.subtract(z, zmax[:, None], out=p)  # z - max z
    xp.exp(p, out=p)
    total = p.sum(axis=-1, keepdims=True)  # (n, 1)
    p /= total  # softmax(z)
    xp.log(total[:, 0], out=logz)


def cross_entropy_rows(logits, labels, label_smoothing: float, out=None):
    """(token_loss (N,), p (N, V), the label index (N,), valid (N,)) for logits (N, V).

    p = softmax(z) is written into ``out`` (``logits`` itself: the caller's array then
    holds p). -log p[y] = logsumexp(z) - z_y, with both terms shifted by max z.
    """
    xp = get_xp(logits)
    N, V = logits.shape
    valid = labels != IGNORE_INDEX  # (N,)
    safe = xp.where(valid, labels, 0)  # (N,) a real index even where ignored
    z_y = logits[xp.arange(N), safe]  # (N,) read before p may overwrite the logits
    z_mean = logits.mean(axis=-1) if label_smoothing else None  # (N,)
    p = xp.empty_like(logits) if out is None else out  # (N, V)
    zmax, logz = xp.empty((N,), dtype=logits.dtype), xp.empty((N,), dtype=logits.dtype)
    blockwise(_softmax_rows_block, logits, p, zmax, logz)
    nll = logz - (z_y - zmax)  # (N,)
    if label_smoothing:
        # -mean_v log p_v = logsumexp(z) - mean_v z_v
        nll = (1.0 - label_smoothing) * nll + label_smoothing * (logz - (z_mean - zmax))
    return xp.where(valid, nll, xp.asarray(0, dtype=logits.dtype)), p, safe, valid


def cross_entropy_rows_backward(seed, p, safe, valid, label_smoothing: float):
    """dz = seed (p - q), written over p (N, V); q = (1 - eps) onehot(y) + eps / V. Returns dz."""
    xp = get_xp(p)
    N, V = p.shape
    seed = xp.where(valid, seed, 0).astype(p.dtype, copy=False)  # (N,)
    blockwise(lambda pb, sb: xp.multiply(pb, sb[:, None], out=pb), p, seed)  # seed_n p_n
    p[xp.arange(N), safe] -= (1.0 - label_smoothing) * seed
    if label_smoothing:
        p -= (label_smoothing / V) * seed[:, None]
    return p


# ------------------------------------------------------------------ the fused chunks


def _add_dw(dw, dlogits, hs):
    """dW += dlogits^T hs (V, C), a block of DW_BLOCK_ROWS rows at a time (no (V, C) temporary)."""
    for o in range(0, dw.shape[0], DW_BLOCK_ROWS):
        dw[o:o + DW_BLOCK_ROWS] += dlogits[:, o:o + DW_BLOCK_ROWS].T @ hs  # (rows, C)


def lm_head_loss_and_grads(h, w, labels, scale: float = 1.0, label_smoothing: float = 0.0,
                           chunk_rows: int | None = None):
    """h (N, C), W (V, C), labels (N,) -> (loss (0-d), dh (N, C), dW (V, C)), ``chunk_rows`` at a time.

    loss is the mean over labels != -100 of the cross-entropy of (h * scale) W^T; dh and
    dW are its gradients (None: :func:`default_chunk_rows` rows per chunk).
    """
    xp = get_xp(h)
    rows = default_chunk_rows(w.shape[0]) if chunk_rows is None else int(chunk_rows)
    if rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows!r}")
    n = max(int((labels != IGNORE_INDEX).sum()), 1)
    total = xp.zeros((), dtype=h.dtype)  # the sum of the token losses
    dh, dw = xp.empty_like(h), None  # (N, C); (V, C): the first chunk's, then summed into
    for i in range(0, h.shape[0], rows):
        hs = h[i:i + rows] * scale if scale != 1.0 else h[i:i + rows]  # (rows, C)
        logits = hs @ w.T  # (rows, V)
        token_loss, p, safe, valid = cross_entropy_rows(logits, labels[i:i + rows], label_smoothing,
                                                        out=logits)
        total += token_loss.sum()
        # loss = (1 / n) sum_i token_loss_i  =>  d loss / d token_loss_i = 1 / n
        seed = xp.full(token_loss.shape, 1.0 / n, dtype=h.dtype)  # (rows,)
        dlogits = cross_entropy_rows_backward(seed, p, safe, valid, label_smoothing)  # (rows, V)
        del logits, p
        # logits_c = hs_c W^T  =>  dhs_c = dlogits_c W,  dW = sum_c dlogits_c^T hs_c
        dhs = dlogits @ w  # (rows, C)
        if dw is None:
            dw = dlogits.T @ hs  # (V, C)
        else:
            _add_dw(dw, dlogits, hs)
        del dlogits
        # hs = h * scale  =>  dh = dhs * scale
        dh[i:i + rows] = dhs * scale if scale != 1.0 else dhs
    return total / n, dh, xp.zeros_like(w) if dw is None else dw
