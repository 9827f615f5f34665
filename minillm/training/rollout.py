"""A REINFORCE step's samples: each micro-batch's rollout, and every sequence's figures.

For the micro-batches of a step (``grad_accum * R`` of them; rank r takes its
contiguous ``shard``), micro-batch j of B prompts:

    labels   ~ pi_old(. | x)                k samples per prompt, from the stream ("sampling", step, j)
    reward   = R(x, y)                      the reward of each sample
    logp_old = log pi_old(y_t | x, y_<t)    the teacher-forced pass (its cache is the first
                                            update's forward), held fixed for the step
    ref_logp = log pi_ref(y_t | x, y_<t)    the frozen reference, computed once

and per sequence the figures that the advantages and the statistics need
(:class:`SequenceFigures`), gathered from every rank, so every rank forms the same
advantages. The step's sequences are ordered micro-batch by micro-batch; a
:class:`Rollout` knows its rows in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

import minillm.seeds as seeds
from minillm.backend import to_numpy
from minillm.data.batching import EncodedDataset
from minillm.data.examples import Example
from minillm.evaluation import decode_labels, prompt_batch, sample_outputs, token_logprobs
from minillm.evaluation.rewards import Reward, score_outputs
from minillm.ops.cross_entropy import IGNORE_INDEX
from minillm.parallel import Single, shard
from minillm.training.grpo import token_kl_sums
from minillm.training.reinforce import PolicyCache, reinforce_forward


class Rollout(NamedTuple):
    """One micro-batch of a step: B prompts and their k samples each (N = B k sequences), on the
    model's device. Fixed for the step: every update of the step reads it."""

    rows: slice          # its N sequences among the step's (their advantages are adv[rows])
    input_ids: Any       # (B, S) the prompts
    attention_mask: Any  # (B, S)
    labels: Any          # (N, L) the samples, -100 after </s>
    logp_old: Any        # (N, L) log pi_old(y_t): the policy that sampled them, 0 where ignored
    ref_logp: Any        # (N, L) log pi_ref(y_t): the frozen reference
    n_tokens: int        # its sampled tokens


class SequenceFigures(NamedTuple):
    """Per-sequence figures of a step's samples (N,) each, float64: the columns the ranks gather."""

    reward: np.ndarray    # R(x, y)
    kl: np.ndarray        # k1: sum_t log pi_old(y_t) - log pi_ref(y_t)
    tokens: np.ndarray    # sampled tokens (</s> included)
    k3_kl: np.ndarray     # sum_t k3 (the per-token estimator of the GRPO loss)

    @classmethod
    def gather(cls, parts: Sequence[SequenceFigures], world: Single) -> SequenceFigures:
        """This rank's micro-batches' figures, then every rank's in rank order: the step's (N,)."""
        mine = [np.stack(p, axis=1) for p in parts]  # (N_j, 4) each
        table = world.gather_rows(np.concatenate(mine) if mine else np.zeros((0, len(cls._fields))))
        return cls(*(table[:, c] for c in range(len(cls._fields))))  # (N,) each


class StepSize(NamedTuple):
    """The step's sequences and sampled tokens (every micro-batch of every rank)."""

    n_seq: int
    n_tokens: float


def collect_rollouts(policy, reference, tokenizer, reward: Reward, examples: Sequence[Example],
                     encoded: EncodedDataset, micro: Sequence[np.ndarray], step: int, config,
                     rng: np.random.Generator | None, world: Single):
    """This rank's micro-batches of ``micro`` (prompt indices), sampled and scored.

    Micro-batch j draws from ``seeds.generator(config.seed, "sampling", step, j)``
    (``rng``: one Generator for all instead). A failing reward on one rank is raised on
    every rank. Returns (this rank's :class:`Rollout` s, their :class:`PolicyCache` s,
    the step's :class:`SequenceFigures` from every rank).
    """
    starts = np.cumsum([0] + [len(i) * config.k for i in micro])  # each micro-batch's first row
    rollouts, caches, figures = [], [], []
    with world.together():  # an error on one rank (a failing reward) is raised on every rank
        for j in shard(len(micro), world.size, world.rank):
            rng_j = seeds.generator(config.seed, "sampling", step, j) if rng is None else rng
            rows = slice(int(starts[j]), int(starts[j + 1]))
            part, cache, fig = sample_rollout(policy, reference, tokenizer, reward, examples,
                                              encoded, micro[j], rows, rng_j, config)
            rollouts.append(part)
            caches.append(cache)
            figures.append(fig)
    return rollouts, caches, SequenceFigures.gather(figures, world)


def sample_rollout(policy, reference, tokenizer, reward: Reward, examples: Sequence[Example],
                   encoded: EncodedDataset, idx: np.ndarray, rows: slice,
                   rng: np.random.Generator, config) -> tuple[Rollout, PolicyCache, SequenceFigures]:
    """k samples for each prompt of ``idx`` (config: k, max_new_tokens and the sampler), their
    rewards, the teacher-forced pass of the policy and the reference's log-probs."""
    k, xp = config.k, policy.xp
    b = prompt_batch(encoded, idx)  # host arrays
    input_ids, mask = xp.asarray(b["input_ids"]), xp.asarray(b["attention_mask"])
    labels = sample_outputs(policy, input_ids, mask, k, rng, config.max_new_tokens,
                            config.temperature, config.top_k, config.top_p)  # (N, L)
    texts = decode_labels(tokenizer, labels)
    rewards = score_outputs(reward, [examples[int(i)] for i in idx for _ in range(k)], texts)
    with np.errstate(over="ignore", invalid="ignore"):
        logp, cache = reinforce_forward(policy, input_ids, labels, mask, repeats=k)  # (N, L)
        ref_logp = token_logprobs(reference, input_ids, labels, mask, repeats=k)
        kl = to_numpy((logp - ref_logp).sum(axis=1)).astype(np.float64)  # (N,) k1 per sequence
        k3 = token_kl_sums(logp, ref_logp, labels)  # (N,) sum_t k3 per sequence
    n_tok = to_numpy(labels != IGNORE_INDEX).sum(axis=1)  # (N,)
    part = Rollout(rows, input_ids, mask, labels, logp.copy(), ref_logp, int(n_tok.sum()))
    return part, cache, SequenceFigures(rewards, kl, n_tok.astype(np.float64), k3)
