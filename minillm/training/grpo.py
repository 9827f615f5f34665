"""GRPO, and clipped updates that use each batch of samples more than once, for an encoder-decoder T5.

TRL's GRPOTrainer and RLOOTrainer define both for decoder-only models; the math is the
same for T5, whose sampled outputs are the decoder's labels. For B prompts x_i, k
samples y_ij each (N = B k sequences), rewards r_ij:

GRPO (``--algo grpo``): group-normalised advantages, the KL in the loss, per token,

    A_ij   = (r_ij - mean_j' r_ij') / (s + 1e-4)        s = std of the group (scale_rewards
                                                         group) or of the batch (batch); no
                                                         division with none; torch's std (n - 1)
    rho_ijt = exp(log pi(y_ijt) - log pi_old(y_ijt))     the importance ratio per token
    l_ijt  = -min(rho A_ij, clip(rho, 1 - eps, 1 + eps_high) A_ij)  +  beta * k3_ijt
    k3_ijt = exp(q) - q - 1,   q = log pi_ref(y_ijt) - log pi(y_ijt)
    loss   = sum_ijt w_ijt l_ijt                         w: the loss type (grpo, dr_grpo, dapo)

RLOO (``--algo rloo``): the advantages of :mod:`minillm.training.reinforce` (the k1 KL
in the reward with kl_coef, at the sampling policy), a ratio per sequence,

    rho_ij = exp(log pi(y_ij) - log pi_old(y_ij)),   loss = (1/N) sum_ij -min(rho A, clip(rho) A)

``num_iterations`` mu (both): the samples of a step serve mu AdamW updates. pi_old is
the policy that sampled them (its token log-probs are kept from the first update's
forward pass, where rho = 1), pi_ref's are computed once; each later update runs the
teacher-forced forward again on the updated policy. At rho = 1 nothing is clipped, so
with mu = 1 the clipped RLOO step is REINFORCE (the table then takes RLOO,
:func:`minillm.training.reinforce.reinforce_loss`, itself) and GRPO with beta = 0 is
REINFORCE with the advantage A_ij scaled by its sequence's token weight, N w_ij.

Each term is an op of :mod:`minillm.ops.policy_loss`; the functions here give a
micro-batch's loss and its d loss / d log pi, which :mod:`minillm.training.algorithms`
turns into the cross-entropy seed (-d loss / d log pi per token) of
:func:`minillm.training.reinforce.seeded_backward`, the model's one backward.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minillm.backend import get_xp, to_numpy
from minillm.ops.cross_entropy import IGNORE_INDEX
from minillm.ops.policy_loss import (
    LOSS_TYPES,
    clip_fractions,
    clipped_surrogate_backward,
    clipped_surrogate_forward,
    k3_kl_backward,
    k3_kl_forward,
    token_mean_backward,
    token_mean_forward,
)

SCALE_REWARDS = ("group", "batch", "none")
__all__ = ["LOSS_TYPES", "RatioFigures", "SCALE_REWARDS", "clipped_sequence_loss", "grpo_token_loss",
           "group_advantages", "ratio_summary", "token_kl_sums"]


def group_advantages(rewards, scale_rewards: str = "group") -> np.ndarray:
    """GRPO's advantages (B, k) of rewards (B, k): r minus its group's mean, over the std + 1e-4.

    group: each group's std; batch: the std of all B k rewards; none: not divided.
    The std is torch's (unbiased, n - 1), as in TRL. Needs k >= 2.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"group advantages need rewards (B, k) with k >= 2, got shape {r.shape}")
    adv = r - r.mean(axis=1, keepdims=True)  # (B, k)
    if scale_rewards == "group":
        std = r.std(axis=1, ddof=1, keepdims=True)  # (B, 1)
    elif scale_rewards == "batch":
        std = np.full((1, 1), r.std(ddof=1) if r.size > 1 else 0.0)
    elif scale_rewards == "none":
        return adv
    else:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, got {scale_rewards!r}")
    return adv / (std + 1e-4)


def token_kl_sums(logp, ref_logp, labels) -> np.ndarray:
    """sum_t k3_it over each sequence's sampled tokens (N,), float64: TRL's "kl" is their sum
    over the step's tokens. logp, ref_logp (N, L) log-probs, labels (N, L)."""
    kl, _ = k3_kl_forward(logp, logp_ref=ref_logp)
    valid = to_numpy(labels != IGNORE_INDEX)
    return (to_numpy(kl).astype(np.float64) * valid).sum(axis=1)


# --------------------------------------------------------------------------- the ratio's figures


class RatioFigures(NamedTuple):
    """The importance ratios rho of one micro-batch's update: a row the ranks gather (float64).

    Counted over the sampled tokens (grpo) or the sequences (rloo); summed over the
    micro-batches and updates of a step by :func:`ratio_summary`.
    """

    n: float             # ratios counted
    clipped: float       # of them clipped (no gradient): low or high
    clipped_low: float   # rho < 1 - epsilon with A < 0
    clipped_high: float  # rho > 1 + epsilon_high with A > 0
    rho_sum: float
    rho_sq_sum: float
    rho_min: float
    rho_max: float

    @classmethod
    def of(cls, s_cache, mask=None) -> RatioFigures:
        """The figures of a clipped surrogate's cache; ``mask`` (N, L): the tokens counted (None: all)."""
        rho = to_numpy(s_cache.rho).astype(np.float64)
        rho = rho[np.ones(rho.shape, bool) if mask is None else to_numpy(mask)]  # the ratios counted
        fr = clip_fractions(s_cache, mask)
        n = rho.size
        return cls(n, fr["clip_frac"] * n, fr["clip_frac_low"] * n, fr["clip_frac_high"] * n,
                   rho.sum(), (rho * rho).sum(), rho.min() if n else 1.0, rho.max() if n else 1.0)

    @classmethod
    def at_one(cls, n: int) -> RatioFigures:
        """n ratios of 1 (the policy that sampled is the one differentiated): nothing clipped."""
        return cls(n, 0.0, 0.0, 0.0, float(n), float(n), 1.0, 1.0)


def ratio_summary(rows) -> dict[str, float]:
    """The clip fractions and the ratio's spread from :class:`RatioFigures` rows (M, 8) (every
    micro-batch and update of a step, from every rank)."""
    r = RatioFigures(*np.asarray(rows, dtype=np.float64).reshape(-1, len(RatioFigures._fields)).T)
    n = max(r.n.sum(), 1.0)
    mean = r.rho_sum.sum() / n
    return {"clip_frac": r.clipped.sum() / n, "clip_frac_low": r.clipped_low.sum() / n,
            "clip_frac_high": r.clipped_high.sum() / n, "ratio_min": float(r.rho_min.min()),
            "ratio_max": float(r.rho_max.max()),
            "ratio_std": float(np.sqrt(max(r.rho_sq_sum.sum() / n - mean * mean, 0.0)))}


# --------------------------------------------------------------------------- the clipped losses


def grpo_token_loss(logp, logp_old, ref_logp, valid, advantages, config, n_seq: int | None = None,
                    n_tokens: float | None = None):
    """GRPO's loss at token log-probs logp (N, L), and d loss / d logp (N, L).

        l_it = -min(rho A_i, clip(rho, 1 - eps, 1 + eps_high) A_i) + beta k3_it,  loss = sum w_it l_it

    logp_old, ref_logp (N, L); valid (N, L) the sampled tokens; advantages (N,).
    config: epsilon, epsilon_high, beta, loss_type, max_new_tokens. n_seq / n_tokens:
    the step's sequences and tokens when this batch is a part of it.
    Returns (loss, dlogp, :class:`RatioFigures` over the sampled tokens).
    """
    xp = get_xp(logp)
    N = logp.shape[0]
    A = xp.asarray(advantages, dtype=logp.dtype).reshape(N, 1)  # (N, 1)
    surrogate, s_cache = clipped_surrogate_forward(logp, logp_old=logp_old, advantages=A,
                                                   eps_low=config.epsilon,
                                                   eps_high=config.epsilon_high)  # (N, L)
    per_token = surrogate
    if config.beta:
        kl, k_cache = k3_kl_forward(logp, logp_ref=ref_logp)  # (N, L)
        per_token = surrogate + config.beta * kl
    loss, w = token_mean_forward(per_token, mask=valid, loss_type=config.loss_type,
                                 max_completion_length=config.max_new_tokens, n_seq=n_seq,
                                 n_tokens=n_tokens)
    dper_token, _ = token_mean_backward(1.0, w)  # (N, L)
    # l = surrogate + beta kl  =>  dlogp = dsurrogate/dlogp + beta dkl/dlogp
    dlogp, _ = clipped_surrogate_backward(dper_token, s_cache)
    if config.beta:
        dlogp = dlogp + k3_kl_backward(config.beta * dper_token, k_cache)[0]
    return float(loss), dlogp, RatioFigures.of(s_cache, valid)


def clipped_sequence_loss(logp, logp_old, valid, advantages, config, n_seq: int | None = None):
    """Clipped RLOO's loss at token log-probs logp (N, L), one ratio per sequence, and d loss / d logp.

        rho_i = exp(log pi(y_i) - log pi_old(y_i)),  loss = (1/n_seq) sum_i -min(rho_i A_i, clip(rho_i) A_i)

    logp_old (N, L); valid (N, L) the sampled tokens; advantages (N,); config: epsilon,
    epsilon_high. Returns (loss, dlogp (N, L), :class:`RatioFigures` over the sequences).
    """
    xp = get_xp(logp)
    N = logp.shape[0]
    A = xp.asarray(advantages, dtype=logp.dtype).reshape(N, 1)  # (N, 1)
    logp_seq = logp.sum(axis=1, keepdims=True)  # (N, 1) log pi(y_i), 0 after </s>
    old_seq = logp_old.sum(axis=1, keepdims=True)
    surrogate, s_cache = clipped_surrogate_forward(logp_seq, logp_old=old_seq, advantages=A,
                                                   eps_low=config.epsilon,
                                                   eps_high=config.epsilon_high)  # (N, 1)
    n = N if n_seq is None else n_seq
    loss = surrogate.sum() / n
    dseq, _ = clipped_surrogate_backward(xp.full((N, 1), 1.0 / n, dtype=logp.dtype), s_cache)
    # log pi(y_i) = sum_t valid_it log pi(y_it)  =>  dlogp_it = dlogp_i * valid_it
    return float(loss), dseq * valid, RatioFigures.of(s_cache)
