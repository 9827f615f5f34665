"""Softmax cross-entropy of logits against labels, with ignore_index and label smoothing.

For logits z (N, V) and labels y (N,), with log p = log_softmax(z):

    token_loss_n = -(1 - eps) log p[n, y_n] - eps mean_v log p[n, v]    (torch's label smoothing)
    token_loss_n = 0                                 where y_n == ignore_index (-100)

The forward returns the per-token losses; the caller reduces them. The backward
takes the gradient of whatever the caller computed with respect to each token's
loss, the "seed":

    dz[n] = seed_n (p_n - q_n),    p_n = softmax(z_n),  q_n = (1 - eps) onehot(y_n) + eps / V

- the mean over targets (SFT, transformers' loss): seed_n = [y_n != -100] / #targets
- REINFORCE: seed_n = the advantage of token n's sequence (times its normaliser)

The model's backward does not know which trainer seeded it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minillm.backend import get_xp
from minillm.ops.softmax import softmax_forward

IGNORE_INDEX = -100


def log_softmax(z):
    """log p = (z - max z) - log sum exp(z - max z) over the last axis.  z: (..., V) -> (..., V)."""
    xp = get_xp(z)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


class CrossEntropyCache(NamedTuple):
    """What ``cross_entropy_backward`` needs."""

    p: Any  # (N, V) softmax(z)
    labels: Any  # (N,) with 0 where ignored (a real index)
    valid: Any  # (N,) bool, labels != ignore_index
    label_smoothing: float


def cross_entropy_forward(logits, labels, label_smoothing: float = 0.0, ignore_index: int = IGNORE_INDEX):
    """logits (N, V), labels (N,) int -> token_loss (N,) (0 where ignored), cache."""
    xp = get_xp(logits)
    N, V = logits.shape
    valid = labels != ignore_index  # (N,)
    safe = xp.where(valid, labels, 0)  # (N,) a real index even where ignored
    logp = log_softmax(logits)  # (N, V)
    nll = -logp[xp.arange(N), safe]  # (N,) -log p[y]
    if label_smoothing:
        # -mean_v log p_v, mixed in with weight eps
        nll = (1.0 - label_smoothing) * nll + label_smoothing * -logp.mean(axis=-1)
    token_loss = xp.where(valid, nll, xp.asarray(0, dtype=logits.dtype))
    p, _ = softmax_forward(logits)  # (N, V)
    return token_loss, CrossEntropyCache(p, safe, valid, label_smoothing)


def cross_entropy_backward(dtoken_loss, cache: CrossEntropyCache):
    """dtoken_loss (N,), the seed -> (dlogits (N, V), {}).  Ignored tokens get zero gradient."""
    p, safe, valid, eps = cache
    xp = get_xp(p)
    N, V = p.shape
    seed = xp.where(valid, dtoken_loss, 0).astype(p.dtype, copy=False)  # (N,)
    # token_loss_n = -sum_v q_nv log p_nv,  q = (1 - eps) onehot(y) + eps / V
    #   =>  dz_n = seed_n (p_n - q_n) = seed_n p_n - seed_n (1 - eps) onehot(y_n) - seed_n eps / V
    dz = seed[:, None] * p  # (N, V)
    dz[xp.arange(N), safe] -= (1.0 - eps) * seed
    if eps:
        dz -= (eps / V) * seed[:, None]
    return dz, {}


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """The mean cross-entropy over non-ignored tokens, as torch's CrossEntropyLoss(ignore_index=-100).

    logits (..., V), labels (...) -> (loss, a 0-d array; cache for ``cross_entropy_mean_backward``).
    """
    V = logits.shape[-1]
    token_loss, cache = cross_entropy_forward(logits.reshape(-1, V), labels.reshape(-1), label_smoothing)
    n = max(int((labels != IGNORE_INDEX).sum()), 1)  # the number of targets
    return token_loss.sum() / n, (cache, n, logits.shape)


def cross_entropy_mean_backward(dloss, cache):
    """dloss (a number) -> (dlogits (..., V), {}): the seed of a mean, dloss / n on every target."""
    ce_cache, n, shape = cache
    xp = get_xp(ce_cache.p)
    # loss = (1 / n) sum_n token_loss_n  =>  d loss / d token_loss_n = 1 / n
    seed = xp.full(ce_cache.p.shape[:1], dloss / n, dtype=ce_cache.p.dtype)  # (N,)
    dz, _ = cross_entropy_backward(seed, ce_cache)
    return dz.reshape(shape), {}
