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
with mu = 1 the clipped RLOO step is REINFORCE (the trainer then runs
:func:`minillm.training.reinforce.reinforce_backward` itself) and GRPO with beta = 0
is REINFORCE with the advantage A_ij scaled by its sequence's token weight, N w_ij.

Each term is an op of :mod:`minillm.ops.policy_loss`; their d loss / d log pi becomes
the cross-entropy seed (-d loss / d log pi per token) of
:func:`minillm.training.reinforce.seeded_backward`, the model's one backward.
"""

from __future__ import annotations

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
from minillm.training.reinforce import seeded_backward

ALGOS = ("rloo", "grpo")
SCALE_REWARDS = ("group", "batch", "none")
RATIO_FIGURES = ("n", "clipped", "clipped_low", "clipped_high", "rho_sum", "rho_sq_sum", "rho_min",
                 "rho_max")  # clipped_loss_and_grads' "ratios" row, summed over batches (min/max taken)
__all__ = ["ALGOS", "LOSS_TYPES", "RATIO_FIGURES", "SCALE_REWARDS", "clipped_loss_and_grads",
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


def ratio_summary(rows) -> dict[str, float]:
    """The clip fractions and the ratio's spread from "ratios" rows (M, 8) of
    :func:`clipped_loss_and_grads` (every batch and update of a step)."""
    r = np.asarray(rows, dtype=np.float64).reshape(-1, len(RATIO_FIGURES))
    n = max(r[:, 0].sum(), 1.0)
    mean = r[:, 4].sum() / n
    return {"clip_frac": r[:, 1].sum() / n, "clip_frac_low": r[:, 2].sum() / n,
            "clip_frac_high": r[:, 3].sum() / n, "ratio_min": float(r[:, 6].min()),
            "ratio_max": float(r[:, 7].max()),
            "ratio_std": float(np.sqrt(max(r[:, 5].sum() / n - mean * mean, 0.0)))}


def clipped_loss_and_grads(policy, cache, logp_old, ref_logp, advantages, config,
                           n_seq: int | None = None, n_tokens: float | None = None):
    """The clipped surrogate of ``config.algo`` at the policy of ``cache``, and its gradient.

    cache: :func:`minillm.training.reinforce.reinforce_forward`'s (its log-probs are
    log pi); logp_old, ref_logp (N, L); advantages (N,). config: an RLConfig (algo,
    epsilon, epsilon_high, beta, loss_type, max_new_tokens, entropy_coef). n_seq /
    n_tokens: the step's sequences and tokens when this batch is a part of it (the
    entropy bonus is then this batch's share of the mean over the step's tokens), so
    the parts' losses and gradients add up to those of the step as one batch.
    Returns (loss, grads keyed like params, mean entropy, the "ratios" row: the
    :data:`RATIO_FIGURES` of rho over the sampled tokens (grpo) or sequences (rloo)).
    """
    _, _, labels, logp, logits = cache
    xp = get_xp(logits)
    dtype = logits.dtype
    N, L = labels.shape
    valid = labels != IGNORE_INDEX  # (N, L)
    A = xp.asarray(advantages, dtype=dtype).reshape(N, 1)  # (N, 1)
    eps = (config.epsilon, config.epsilon_high)
    if config.algo == "grpo":
        surrogate, s_cache = clipped_surrogate_forward(logp, logp_old=logp_old, advantages=A,
                                                       eps_low=eps[0], eps_high=eps[1])  # (N, L)
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
        ratio, clip_mask = s_cache[0], valid
    else:  # rloo: one ratio per sequence
        logp_seq = logp.sum(axis=1, keepdims=True)  # (N, 1) log pi(y_i), 0 after </s>
        old_seq = logp_old.sum(axis=1, keepdims=True)
        surrogate, s_cache = clipped_surrogate_forward(logp_seq, logp_old=old_seq, advantages=A,
                                                       eps_low=eps[0], eps_high=eps[1])  # (N, 1)
        n = N if n_seq is None else n_seq
        loss = surrogate.sum() / n
        dseq, _ = clipped_surrogate_backward(xp.full((N, 1), 1.0 / n, dtype=dtype), s_cache)
        # log pi(y_i) = sum_t valid_it log pi(y_it)  =>  dlogp_it = dlogp_i * valid_it
        dlogp = dseq * valid
        ratio, clip_mask = s_cache[0], None
    # token_loss = -logp  =>  d loss / d token_loss = -dlogp
    share = 1.0 if n_tokens is None else float(to_numpy(valid).sum()) / max(float(n_tokens), 1.0)
    bonus, grads, entropy = seeded_backward(policy, (-dlogp).reshape(-1), cache,
                                            config.entropy_coef * share)
    rho = to_numpy(ratio).astype(np.float64)[to_numpy(valid) if clip_mask is not None
                                             else np.ones((N, 1), bool)]  # the ratios counted
    fr = clip_fractions(s_cache, clip_mask)
    n = rho.size
    row = np.array([n, fr["clip_frac"] * n, fr["clip_frac_low"] * n, fr["clip_frac_high"] * n,
                    rho.sum(), (rho * rho).sum(), rho.min() if n else 1.0, rho.max() if n else 1.0])
    return float(loss) - bonus, grads, entropy, row
