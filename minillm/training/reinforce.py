"""REINFORCE with a leave-one-out baseline (RLOO) for an encoder-decoder T5.

The policy pi_theta(y | x) is the model: y = (y_1 .. y_L) ends with ``</s>`` (or
stops at ``max_new_tokens``) and log pi(y | x) = sum_t log pi(y_t | x, y_<t). We
maximise the expected reward J(theta) = E_x E_{y ~ pi(.|x)} [R(x, y)], whose gradient
is the score-function (REINFORCE) identity

    grad J = E [ (R(x, y) - b) grad log pi(y | x) ]       for any b not depending on y.

One step, for B prompts x_i and k samples y_ij ~ pi(. | x_i) each:

    r_ij  = R(x_i, y_ij)                                           the reward (0-1 scale)
    kl_ij = sum_t [log pi(y_ijt | .) - log pi_ref(y_ijt | .)]      k1 estimate of KL(pi || pi_ref)
    s_ij  = r_ij - kl_coef * kl_ij                                 the KL enters the reward, per
                                                                   sequence, as in RLOO (it is a
                                                                   number: no gradient flows in it)
    b_ij  = (1 / (k - 1)) sum_{j' != j} s_ij'                      --baseline rloo (leave one out)
          = EMA of past batch means of s                           --baseline ema
          = 0                                                      --baseline none
    A_ij  = s_ij - b_ij,  optionally normalised over the step (--normalize-advantages, TRL's
          (A - mean A) / (std A + 1e-4), std the sample std (n - 1) of all B k advantages)
    loss  = -(1 / (B k)) sum_ij A_ij log pi(y_ij | x_i)  -  entropy_coef * mean_t H_t

Since E[grad log pi] = 0, E[kl grad log pi] is the gradient of the sequence-level
KL(pi || pi_ref) = E_pi[log pi(y) - log pi_ref(y)], so kl_coef * kl in the reward
penalises exactly it (without normalising, the step is unbiased for J - kl_coef KL).
The reference pi_ref is the starting checkpoint, frozen. H_t = -sum_v p_v log p_v is
the policy's entropy at each sampled position; the bonus is its mean over the
sampled tokens (an optional regulariser, with its exact gradient for the sampled
prefixes; it is not part of the unbiased estimator).

The policy gradient reuses the model's one backward (STYLE rule 6): with
token_loss_ijt = -log pi(y_ijt | .) from ``cross_entropy_forward``,

    loss = (1 / (B k)) sum_ij A_ij sum_t token_loss_ijt

so ``cross_entropy_backward`` is seeded with A_ij / (B k) at every sampled token of
sequence ij (0 after its ``</s>``) and ``T5.backward`` does the rest, as for SFT.
Sampling is from the unmodified policy by default (temperature 1, no top-k / top-p
filtering), so the samples come from the pi whose log-probabilities are
differentiated; dropout is off (the policy that samples is the one that learns).

Then: clip the global gradient norm, AdamW with warmup + cosine schedule
(:mod:`minillm.training.update`). This module is the estimator (the surrogate's
forward and backward, the baselines); :mod:`minillm.training.algorithms` puts it in
the table of algorithms, :mod:`minillm.training.rl` is the trainer (one step, the run).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

import minillm.engine as engine
from minillm.backend import get_xp
from minillm.ops.cross_entropy import IGNORE_INDEX, cross_entropy_backward, cross_entropy_forward
from minillm.ops.entropy import entropy_backward, entropy_forward

BASELINES = ("rloo", "ema", "none")


# --------------------------------------------------------------------------- the estimator


class PolicyCache(NamedTuple):
    """What the teacher-forced pass over sampled outputs keeps for the backward (N = B k rows)."""

    model: Any          # the model's cache (its backward's input)
    cross_entropy: Any  # cross_entropy_forward's cache: the softmax probabilities
    labels: Any         # (N, L) the sampled outputs, -100 after </s>
    logp: Any           # (N, L) log pi(y_t | x, y_<t), 0 where ignored
    logits: Any         # (N*L, V) for the entropy


def reinforce_forward(model, input_ids, labels, attention_mask=None, repeats: int = 1):
    """Teacher-forced pass over sampled outputs: token log-probs (N, L) and the :class:`PolicyCache`.

    input_ids (B, S) and attention_mask (B, S), labels (N, L) from
    :func:`sampled_labels`, N = B * repeats: the ``repeats`` samples of a prompt
    are adjacent rows, and the prompt is encoded once for all of them (its
    memory gradient is their sum). Dropout is off: the gradient is of the
    sampling policy.
    """
    logits, model_cache = engine.forward(model, input_ids, model.shift_right(labels), attention_mask,
                                         repeats=repeats)
    N, L, V = logits.shape
    token_loss, ce_cache = cross_entropy_forward(logits.reshape(N * L, V), labels.reshape(-1))
    logp = -token_loss.reshape(N, L)  # (N, L), 0 where ignored
    return logp, PolicyCache(model_cache, ce_cache, labels, logp, logits.reshape(N * L, V))


def reinforce_loss(logp, advantages):
    """The REINFORCE surrogate of fixed advantages A (N,) at token log-probs logp (N, L):

        loss = -(1/N) sum_i A_i sum_t log pi(y_it)   =>   d loss / d log pi(y_it) = -A_i / N

    Returns (loss, dlogp (N, L)); dlogp is -A_i / N at every position of row i (the
    cross-entropy backward gives the positions after </s> no gradient).
    """
    xp = get_xp(logp)
    N, L = logp.shape
    A = xp.asarray(advantages, dtype=logp.dtype).reshape(N)  # (N,)
    logp_seq = logp.sum(axis=1)  # (N,) log pi(y_i | x_i)
    loss = -float((A * logp_seq).sum()) / N
    return loss, -xp.broadcast_to((A / N)[:, None], (N, L))  # (N, L)


def reinforce_backward(model, advantages, cache: PolicyCache, entropy_coef: float = 0.0):
    """The surrogate loss and its gradient, for fixed advantages A (N,).

        loss = -(1/N) sum_i A_i sum_t log pi(y_it)  -  entropy_coef * (1/n_tok) sum_{i,t} H_it

    grad loss = -(1/N) sum_i A_i grad log pi(y_i) - ...: the REINFORCE estimator
    (negated, for descent). Returns (loss, grads keyed like params, mean entropy).
    """
    loss, dlogp = reinforce_loss(cache.logp, advantages)
    # token_loss = -logp  =>  d loss / d token_loss = -dlogp: A_i / N on every token of sequence i
    bonus, grads, mean_entropy = seeded_backward(model, (-dlogp).reshape(-1), cache, entropy_coef)
    return loss - bonus, grads, mean_entropy


def seeded_backward(model, seed, cache: PolicyCache, entropy_coef: float = 0.0):
    """The gradient of sum_n seed_n token_loss_n - entropy_coef * (1/n_tok) sum_n H_n, for a fixed seed.

    seed (N*L,): d loss / d token_loss of each sampled token (token_loss = -log pi(y_t)),
    seeding ``cross_entropy_backward``; every surrogate (REINFORCE, the clipped
    ones of :mod:`minillm.training.grpo`) reaches the model through this one backward.
    Returns (entropy_coef * mean entropy, grads keyed like params, mean entropy):
    the bonus that the caller's loss subtracts.
    """
    N, L = cache.labels.shape
    dtype = cache.logits.dtype
    valid = (cache.labels != IGNORE_INDEX).reshape(-1)  # (N*L,)
    dlogits, _ = cross_entropy_backward(seed, cache.cross_entropy)
    H, h_cache = entropy_forward(cache.logits)  # (N*L,) reported even without the bonus
    n_tok = max(int(valid.sum()), 1)
    mean_entropy = float((H * valid).sum()) / n_tok
    bonus = 0.0
    if entropy_coef:
        bonus = entropy_coef * mean_entropy
        # loss -= c * (1/n_tok) sum_{i,t} valid_it H_it  =>  dH_it = -c valid_it / n_tok
        dlogits_h, _ = entropy_backward(-entropy_coef * valid.astype(dtype) / n_tok, h_cache)
        dlogits += dlogits_h
    grads = engine.backward(model, dlogits.reshape(N, L, -1), cache.model)  # consumes the cache
    return bonus, grads, mean_entropy


def reinforce_loss_and_grads(model, input_ids, labels, advantages, attention_mask=None,
                             entropy_coef: float = 0.0, repeats: int = 1):
    """:func:`reinforce_forward` then :func:`reinforce_backward`: (loss, grads, mean entropy)."""
    _, cache = reinforce_forward(model, input_ids, labels, attention_mask, repeats)
    return reinforce_backward(model, advantages, cache, entropy_coef)


def rloo_baseline(rewards):
    """b_ij = (sum_j' r_ij' - r_ij) / (k - 1): the mean of the other k-1 samples.  (B, k) -> (B, k)."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError("the leave-one-out baseline needs k >= 2 samples per prompt")
    return (rewards.sum(axis=1, keepdims=True) - rewards) / (k - 1)


def compute_advantages(rewards, baseline: str, ema: float | None = None, ema_decay: float = 0.9,
                       normalize: bool = False) -> tuple[np.ndarray, float | None]:
    """Advantages A (B, k) of shaped rewards (B, k), and the updated EMA baseline.

    rloo: A = r - leave-one-out mean; ema: A = r - b with b the moving average of
    past batch means (b <- decay b + (1 - decay) mean(r) after use; the first batch,
    with no past, uses its own mean); none: A = r. ``normalize``:
    :func:`normalize_advantages` over all B k of them.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if baseline == "rloo":
        adv = rewards - rloo_baseline(rewards)
    elif baseline == "ema":
        b = float(rewards.mean()) if ema is None else ema
        adv = rewards - b
        ema = ema_decay * b + (1.0 - ema_decay) * float(rewards.mean())
    elif baseline == "none":
        adv = rewards.copy()
    else:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    if normalize:
        adv = normalize_advantages(adv)
    return adv, ema


def normalize_advantages(adv) -> np.ndarray:
    """(A - mean A) / (std A + 1e-4) over every entry, std the sample std (n - 1): TRL's
    ``normalize_advantages`` (RLOOTrainer). One advantage alone has no spread: it becomes 0."""
    adv = np.asarray(adv, dtype=np.float64)
    std = adv.std(ddof=1) if adv.size > 1 else 0.0
    return (adv - adv.mean()) / (std + 1e-4)
