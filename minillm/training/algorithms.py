"""The policy-gradient algorithms, one row each: its advantages, and its loss with the seed gradient.

An :class:`Algorithm` is two functions over a step's samples (:mod:`.rollout`):

    advantages(figures, config, ema) -> (A (N,), ema)     from every sequence's reward and KL
    loss(logp, part, A_part, config, size) -> PartLoss    one micro-batch's loss at the policy of
                                                          logp (N, L), and d loss / d log pi(y_t)

and :func:`part_loss_and_grads` turns d loss / d log pi into the seed of the model's
one cross-entropy backward (token_loss = -log pi, so seed = -d loss / d log pi) and
adds the entropy bonus. The table:

    RLOO          leave-one-out baseline, k1 KL in the reward   REINFORCE, rho = 1   reinforce.py
    clipped RLOO  the same advantages, num_iterations > 1       a ratio per sequence grpo.py
    GRPO          group-normalised rewards                      per-token ratio, k3  grpo.py

Adding an algorithm: write its two functions, give it a row in :data:`ALGORITHMS`,
and its settings (with ``algo=`` its name) in :class:`minillm.training.rl_config.RLConfig`;
``--algo`` and the flags follow (docs/adding-an-rl-algorithm.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from minillm.model.params import add_grads
from minillm.ops.cross_entropy import IGNORE_INDEX
from minillm.training.grpo import RatioFigures, clipped_sequence_loss, group_advantages, grpo_token_loss
from minillm.training.reinforce import compute_advantages, reinforce_loss, seeded_backward
from minillm.training.rollout import Rollout, SequenceFigures, StepSize


class PartLoss(NamedTuple):
    """An algorithm's loss on one micro-batch (a part of the step)."""

    value: float         # the loss, before the entropy bonus and the weight
    dlogp: Any           # (N, L) d value / d log pi(y_t)
    weight: float        # the part's share of the step: it scales its loss and gradient
    entropy_coef: float  # the bonus: entropy_coef * the part's mean token entropy, before the weight
    ratios: RatioFigures


@dataclass(frozen=True)
class Algorithm:
    """A row of the table: a name for the log, the advantages and the loss of a micro-batch."""

    summary: str  # the run's first line, ``.format(**settings)``
    advantages: Callable[[SequenceFigures, Any, float | None], tuple[np.ndarray, float | None]]
    loss: Callable[[Any, Rollout, np.ndarray, Any, StepSize], PartLoss]


# --------------------------------------------------------------------------- advantages


def rloo_advantages(figures: SequenceFigures, config, ema: float | None):
    """s = r - kl_coef * kl (k1, per sequence), A = s - the baseline (normalised if asked)."""
    shaped = figures.reward - config.kl_coef * figures.kl
    adv, ema = compute_advantages(shaped.reshape(-1, config.k), config.baseline, ema,
                                  config.ema_decay, config.normalize_advantages)
    return adv.reshape(-1), ema  # (N,) in the order of the step's sequences


def grpo_advantages(figures: SequenceFigures, config, ema: float | None):
    """A = (r - the group's mean) / (std + 1e-4); the KL is in the loss. No EMA: kept as it is."""
    return group_advantages(figures.reward.reshape(-1, config.k), config.scale_rewards).reshape(-1), ema


# --------------------------------------------------------------------------- losses


def rloo_loss(logp, part: Rollout, adv, config, size: StepSize) -> PartLoss:
    """REINFORCE: -(1/N_j) sum_i A_i log pi(y_i) over the micro-batch, weighted N_j / N."""
    value, dlogp = reinforce_loss(logp, adv)
    N = len(adv)
    return PartLoss(value, dlogp, N / size.n_seq, config.entropy_coef, RatioFigures.at_one(N))


def clipped_rloo_loss(logp, part: Rollout, adv, config, size: StepSize) -> PartLoss:
    """(1/N) sum_i -min(rho_i A_i, clip(rho_i) A_i), a ratio per sequence (N: the step's)."""
    value, dlogp, ratios = clipped_sequence_loss(logp, part.logp_old, part.labels != IGNORE_INDEX,
                                                 adv, config, n_seq=size.n_seq)
    return PartLoss(value, dlogp, 1.0, config.entropy_coef * token_share(part, size), ratios)


def grpo_loss(logp, part: Rollout, adv, config, size: StepSize) -> PartLoss:
    """sum_it w_it (-min(rho A, clip(rho) A) + beta k3), w of the loss type over the step's tokens."""
    value, dlogp, ratios = grpo_token_loss(logp, part.logp_old, part.ref_logp,
                                           part.labels != IGNORE_INDEX, adv, config,
                                           n_seq=size.n_seq, n_tokens=size.n_tokens)
    return PartLoss(value, dlogp, 1.0, config.entropy_coef * token_share(part, size), ratios)


def token_share(part: Rollout, size: StepSize) -> float:
    """The part's share of the step's sampled tokens (its entropy's weight in the step's mean)."""
    return part.n_tokens / max(size.n_tokens, 1.0)


# --------------------------------------------------------------------------- the table

RLOO = Algorithm("REINFORCE ({baseline} baseline, kl_coef {kl_coef}", rloo_advantages, rloo_loss)
CLIPPED_RLOO = Algorithm(RLOO.summary, rloo_advantages, clipped_rloo_loss)
GRPO = Algorithm("GRPO (scale_rewards {scale_rewards}, beta {beta}, loss {loss_type}",
                 grpo_advantages, grpo_loss)
# --algo -> (the algorithm of one update a step, the one of num_iterations > 1)
ALGORITHMS = {"rloo": (RLOO, CLIPPED_RLOO), "grpo": (GRPO, GRPO)}
ALGOS = tuple(ALGORITHMS)


def algorithm_for(config) -> Algorithm:
    """The row of ``config.algo`` and ``config.num_iterations``."""
    return ALGORITHMS[config.algo][config.num_iterations > 1]


def part_loss_and_grads(policy, algorithm: Algorithm, cache, part: Rollout, adv, config,
                        size: StepSize):
    """One micro-batch's weighted loss (entropy bonus included) and gradient at the policy of
    ``cache`` (:func:`minillm.training.reinforce.reinforce_forward`'s); adv (N,) its advantages.

    Returns (loss, grads keyed like params, mean entropy, :class:`RatioFigures`): the
    parts' losses and gradients add up to the step's.
    """
    out = algorithm.loss(cache.logp, part, adv, config, size)
    # token_loss = -logp  =>  d loss / d token_loss = -dlogp
    bonus, grads, entropy = seeded_backward(policy, (-out.dlogp).reshape(-1), cache,
                                            out.entropy_coef)
    weight = None if out.weight == 1.0 else out.weight
    return (out.value - bonus) * out.weight, add_grads({}, grads, weight=weight), entropy, out.ratios
