"""Softmax cross-entropy, fused, with ignore_index and label smoothing.

For logits z (N, V) and labels y (N,), with log p = log_softmax(z):

    loss_n = -(1 - eps) * log p[n, y_n] - eps * mean_v log p[n, v]     (torch's smoothing)
    loss_n = 0                                   where y_n == ignore_index (-100)

The forward returns the per-token losses; a caller reduces them. The
backward takes the gradient of whatever the caller computed with respect to
each token's loss (the "seed"):

    dz[n] = seed_n * (softmax(z[n]) - q_n),   q_n = (1 - eps) onehot(y_n) + eps / V

- mean over targets (SFT, transformers' loss): seed_n = [y_n != -100] / #targets
- REINFORCE: seed_n = advantage of token n's sequence (times its own normaliser)

The model's backward does not know which trainer seeded it.
"""

from __future__ import annotations

from minillm.backend import blockwise, get_xp

IGNORE_INDEX = -100


def log_softmax(z):
    """log p = z - logsumexp(z) over the last axis.  z: (..., V) -> (..., V)."""
    xp = get_xp(z)
    zmax = z.max(axis=-1, keepdims=True)
    shifted = z - zmax
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def _softmax_rows_block(z, p, zmax, logz):
    """One block of rows: p = softmax(z), zmax = max z and logz = log sum exp(z - max z)."""
    xp = get_xp(z)
    z.max(axis=-1, out=zmax)
    xp.subtract(z, zmax[:, None], out=p)  # z - max z
    xp.exp(p, out=p)
    total = p.sum(axis=-1, keepdims=True)  # (n, 1)
    p /= total  # softmax(z)
    xp.log(total[:, 0], out=logz)


def cross_entropy_forward(logits, labels, label_smoothing: float = 0.0, ignore_index: int = IGNORE_INDEX,
                          *, spend: bool = False):
    """logits (N, V), labels (N,) int -> token_loss (N,) (0 where ignored), cache.

    The cache keeps the probabilities p = softmax(z), which is all the backward
    needs; -log p[y] is computed as log sum_v exp(z_v) - z_y without forming log p.
    The (N, V) work runs block by block (``blockwise``). ``spend=True`` writes p
    over the logits (the caller's array then holds p): one (N, V) array, not two.
    """
    xp = get_xp(logits)
    N, V = logits.shape
    valid = labels != ignore_index  # (N,)
    safe = xp.where(valid, labels, 0)  # (N,) a real index even where ignored
    z_y = logits[xp.arange(N), safe]  # (N,) read before p may overwrite the logits
    z_mean = logits.mean(axis=-1) if label_smoothing else None  # (N,)
    p = logits if spend else xp.empty_like(logits)  # (N, V)
    zmax = xp.empty((N,), dtype=logits.dtype)  # (N,) max z
    logz = xp.empty((N,), dtype=logits.dtype)  # (N,) log sum exp(z - max z)
    blockwise(_softmax_rows_block, logits, p, zmax, logz)
    # -log p[y] = logsumexp(z) - z_y, with both terms shifted by max z
    nll = logz - (z_y - zmax)  # (N,)
    if label_smoothing:
        # -mean_v log p_v = logsumexp(z) - mean_v z_v
        nll = (1.0 - label_smoothing) * nll + label_smoothing * (logz - (z_mean - zmax))
    token_loss = xp.where(valid, nll, xp.asarray(0, dtype=logits.dtype))
    return token_loss, (p, safe, valid, label_smoothing)


def cross_entropy_backward(dtoken_loss, cache, *, spend: bool = False):
    """dtoken_loss (N,) -> (dlogits (N, V), {}).  Ignored tokens get zero gradient.

    ``spend=True`` writes dlogits over the cached p (the cache is then used up).
    """
    p, safe, valid, eps = cache
    xp = get_xp(p)
    N, V = p.shape
    seed = xp.where(valid, dtoken_loss, 0).astype(p.dtype, copy=False)  # (N,)
    # loss_n = -sum_v q_nv log p_nv,  q = (1 - eps) onehot(y) + eps / V
    #   =>  dz_n = seed_n (p_n - q_n)
    dz = p if spend else xp.empty_like(p)  # (N, V)
    blockwise(lambda pb, sb, db: xp.multiply(pb, sb[:, None], out=db), p, seed, dz)  # seed_n p_n
    dz[xp.arange(N), safe] -= (1.0 - eps) * seed
    if eps:
        dz -= (eps / V) * seed[:, None]
    return dz, {}


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Mean cross-entropy over non-ignored tokens, as torch's CrossEntropyLoss(ignore_index=-100).

    logits (..., V), labels (...). Returns (loss, cache) where the cache feeds
    ``cross_entropy_mean_backward``.
    """
    V = logits.shape[-1]
    token_loss, cache = cross_entropy_forward(logits.reshape(-1, V), labels.reshape(-1), label_smoothing)
    n = int((labels != IGNORE_INDEX).sum())
    loss = token_loss.sum() / max(n, 1)
    return loss, (cache, n, logits.shape)


def cross_entropy_mean_backward(dloss, cache):
    """dloss (scalar) -> dlogits (..., V): the SFT seed, valid / n_targets."""
    ce_cache, n, shape = cache
    p = ce_cache[0]
    xp = get_xp(p)
    seed = xp.full(p.shape[:1], dloss / max(n, 1), dtype=p.dtype)  # (N,) every target alike
    dz, _ = cross_entropy_backward(seed, ce_cache)
    return dz.reshape(shape), {}


__all__ = [
    "IGNORE_INDEX", "log_softmax", "cross_entropy_forward", "cross_entropy_backward",
    "cross_entropy", "cross_entropy_mean_backward",
]
