"""The pieces of a clipped policy-gradient loss (PPO, GRPO, RLOO), as functions of log-probabilities.

With logp the policy's log-probabilities of sampled tokens (or sequences), logp_old the
sampling policy's (held fixed) and logp_ref the frozen reference's:

    rho   = exp(logp - logp_old)                                        the importance ratio
    l     = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)          PPO's clipped surrogate
    kl    = exp(r) - r - 1,   r = logp_ref - logp                        the k3 estimator of
                                                                         KL(pi || pi_ref) (>= 0)
    loss  = sum_{i,t} w_it l_it                                          how token losses are
                                                                         averaged (loss types)

as TRL's GRPOTrainer and RLOOTrainer define them. Each is a pure forward/backward pair;
the backward gives d loss / d logp, which a trainer turns into the cross-entropy seed
(token_loss = -logp, so seed = -d loss / d logp) for the model's one backward.

Where the clipped term is the minimum (rho beyond the clip range on the side A pushes it
to), l is constant in logp: such tokens are "clipped" and get no gradient. At logp =
logp_old (the first update on a batch of samples), rho = 1, nothing is clipped and
d l / d logp = -A: REINFORCE.

Loss types (``token_mean_forward``), for N sequences with n_i sampled tokens each:

    grpo     w_it = 1 / (N n_i)                 each sequence's token mean, then the mean
    dr_grpo  w_it = 1 / (N max_completion_len)  Dr. GRPO: a constant, no length bias
    dapo     w_it = 1 / sum_i n_i               DAPO: the mean over every token of the batch

(w = 0 on tokens after </s>). ``n_seq`` / ``n_tokens`` override N / sum_i n_i when a
batch is one part of a larger step (micro-batches, data-parallel ranks).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minillm.backend import get_xp

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")


class SurrogateCache(NamedTuple):
    """What the clipped surrogate's backward needs (each of logp's shape)."""

    rho: Any   # exp(logp - logp_old)
    A: Any     # the advantages, broadcast
    kept: Any  # bool: the unclipped term rho A is the minimum (it moves with logp)


class K3Cache(NamedTuple):
    """What the k3 KL's backward needs."""

    exp_r: Any  # exp(logp_ref - logp)


class TokenMeanCache(NamedTuple):
    """What the token mean's backward needs."""

    w: Any  # (N, L) the weights of the loss type


# --------------------------------------------------------------------------- the clipped surrogate


def clipped_surrogate_forward(logp, params=None, *, logp_old, advantages, eps_low: float = 0.2,
                              eps_high: float | None = None):
    """logp (...) -> l (...), l = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A).

    ``logp_old`` has logp's shape, ``advantages`` broadcasts to it (per sequence:
    (N, 1) against tokens (N, L)); ``eps_high`` None means ``eps_low``. The cache is a
    :class:`SurrogateCache` (rho, A, kept: the entries whose unclipped term is the minimum).
    """
    xp = get_xp(logp)
    eps_high = eps_low if eps_high is None else eps_high
    A = xp.broadcast_to(xp.asarray(advantages, dtype=logp.dtype), logp.shape)  # (...)
    rho = xp.exp(logp - logp_old)  # (...)
    unclipped = rho * A
    clipped = xp.clip(rho, 1.0 - eps_low, 1.0 + eps_high) * A
    kept = unclipped <= clipped  # the min is rho A: it moves with logp
    loss = -xp.minimum(unclipped, clipped)
    return loss, SurrogateCache(rho, A, kept)


def clipped_surrogate_backward(dloss, cache: SurrogateCache):
    """dloss (...) -> (dlogp (...), {}).

    l = -rho A where kept (d rho / d logp = rho), a constant elsewhere
      =>  dlogp = -dloss * rho * A * kept
    """
    rho, A, kept = cache
    return (-(dloss * rho * A) * kept).astype(rho.dtype, copy=False), {}


def clip_fractions(cache: SurrogateCache, mask=None) -> dict[str, float]:
    """TRL's clip ratios of a surrogate's cache: the share of (masked) entries clipped.

    low: rho < 1 - eps_low with A < 0; high: rho > 1 + eps_high with A > 0 (the
    entries that get no gradient, ``not kept`` with A != 0); region: either.
    """
    rho, A, kept = cache
    xp = get_xp(rho)
    m = xp.ones(rho.shape, dtype=bool) if mask is None else xp.asarray(mask, dtype=bool)
    n = max(int(m.sum()), 1)
    low = ~kept & (A < 0) & m
    high = ~kept & (A > 0) & m
    return {"clip_frac_low": float(low.sum()) / n, "clip_frac_high": float(high.sum()) / n,
            "clip_frac": float((low | high).sum()) / n}


# --------------------------------------------------------------------------- the k3 KL


def k3_kl_forward(logp, params=None, *, logp_ref):
    """logp (...) -> kl (...), kl = exp(r) - r - 1 with r = logp_ref - logp.

    Per sampled token, an unbiased and non-negative estimate of KL(pi || pi_ref) at
    that position (Schulman's k3; TRL's per-token KL). The cache is a :class:`K3Cache` (exp(r)).
    """
    xp = get_xp(logp)
    r = logp_ref - logp  # (...)
    er = xp.exp(r)
    return er - r - 1.0, K3Cache(er)


def k3_kl_backward(dkl, cache: K3Cache):
    """dkl (...) -> (dlogp (...), {}).

    kl = exp(r) - r - 1, d r / d logp = -1  =>  dlogp = dkl * (1 - exp(r))
    """
    er = cache.exp_r
    return (dkl * (1.0 - er)).astype(er.dtype, copy=False), {}


# --------------------------------------------------------------------------- the loss types


def token_weights(mask, loss_type: str, max_completion_length: int | None = None,
                  n_seq: int | None = None, n_tokens: float | None = None):
    """The weights w (N, L) of ``loss = sum_it w_it l_it`` for mask (N, L) (see the module docstring).

    ``n_seq`` / ``n_tokens``: the step's sequences and sampled tokens when ``mask``
    is a part of it (default: this batch's). dr_grpo needs ``max_completion_length``.
    """
    xp = get_xp(mask)
    m = xp.asarray(mask, dtype=bool)
    N = m.shape[0] if n_seq is None else n_seq
    if loss_type == "grpo":
        n_i = xp.maximum(m.sum(axis=1, keepdims=True), 1)  # (N, 1) tokens of each sequence
        w = m / (N * n_i)
    elif loss_type == "dr_grpo":
        if max_completion_length is None or max_completion_length < 1:
            raise ValueError("the dr_grpo loss needs max_completion_length >= 1")
        w = m / float(N * max_completion_length)
    elif loss_type == "dapo":
        total = float(m.sum()) if n_tokens is None else float(n_tokens)
        w = m / max(total, 1.0)
    else:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    return w  # (N, L) float64


def token_mean_forward(token_losses, params=None, *, mask, loss_type: str,
                       max_completion_length: int | None = None, n_seq: int | None = None,
                       n_tokens: float | None = None):
    """token_losses (N, L) -> loss (), sum_it w_it l_it with :func:`token_weights`; the cache holds w."""
    xp = get_xp(token_losses)
    w = token_weights(mask, loss_type, max_completion_length, n_seq, n_tokens).astype(
        token_losses.dtype)  # (N, L)
    return xp.asarray((w * token_losses).sum(), dtype=token_losses.dtype), TokenMeanCache(w)


def token_mean_backward(dloss, cache: TokenMeanCache):
    """dloss () -> (dtoken_losses (N, L), {}).   loss = sum_it w_it l_it  =>  dl_it = dloss w_it"""
    w = cache.w
    return (w * dloss).astype(w.dtype, copy=False), {}


__all__ = [
    "K3Cache", "LOSS_TYPES", "SurrogateCache", "TokenMeanCache", "clip_fractions",
    "clipped_surrogate_backward", "clipped_surrogate_forward", "k3_kl_backward", "k3_kl_forward",
    "token_mean_backward", "token_mean_forward", "token_weights",
]
