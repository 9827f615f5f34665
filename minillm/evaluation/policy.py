"""Scoring a policy against its reference: token log-probabilities, the KL, held-out reward.

    logp = token_logprobs(model, input_ids, labels, attention_mask, repeats=k)   # (N, L)
    kl = policy_kl(policy, reference, input_ids, labels, attention_mask)         # (N,)
    result = evaluate_policy(policy, reference, tokenizer, reward, examples, encoded)

The held-out figures of a REINFORCE run: the mean reward of greedy decoding
(overall and per task, ``minillm.data.group_by_task``), and with a seed the mean
reward of one sample per prompt and the KL to the reference along those samples,
drawn from the stream ``seeds.generator(sample_seed, "eval_sampling")`` (its own:
evaluating never moves the training samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import minillm.engine as engine
import minillm.seeds as seeds
from minillm.backend import get_xp, to_numpy
from minillm.data.batching import EncodedDataset
from minillm.data.examples import Example, group_by_task
from minillm.evaluation.decode import decode_labels, greedy_outputs, prompt_batch, sample_outputs
from minillm.evaluation.rewards import Reward, score_outputs
from minillm.evaluation.scores import samples
from minillm.ops.cross_entropy import IGNORE_INDEX, cross_entropy_forward, log_softmax


def token_logprobs(model, input_ids, labels, attention_mask=None, repeats: int = 1):
    """log pi(y_t | x, y_<t) for each label: (N, L), 0 where labels == -100 (evaluation mode).

    input_ids (B, S), labels (N, L) with N = B * repeats: the rows of a prompt are
    adjacent, and the prompt is encoded once for all of them.
    """
    xp = model.xp
    memory = engine.encode(model, input_ids, attention_mask)  # (B, S, C)
    if repeats > 1:
        memory = xp.repeat(memory, repeats, axis=0)  # (N, S, C)
        attention_mask = None if attention_mask is None else xp.repeat(attention_mask, repeats, axis=0)
    hidden = engine.decode(model, model.shift_right(labels), memory, attention_mask)  # (N, L, C)
    logits = engine.lm_head(model, hidden)  # (N, L, V)
    N, L, V = logits.shape
    token_loss, _ = cross_entropy_forward(logits.reshape(N * L, V), labels.reshape(-1))
    return -token_loss.reshape(N, L)


def policy_kl(policy, reference, input_ids, labels, attention_mask=None) -> np.ndarray:
    """Per-sequence sum_t KL(pi(.|x, y_<t) || pi_ref(.|x, y_<t)) along given outputs: (N,).

    Exact per position (sum over the vocabulary), summed over each sequence's
    tokens; along samples y ~ pi it is an unbiased, non-negative estimate of the
    sequence-level KL(pi || pi_ref).
    """
    dec = policy.shift_right(labels)
    lp = log_softmax(engine.logits(policy, input_ids, dec, attention_mask))  # (N, L, V)
    lq = log_softmax(engine.logits(reference, input_ids, dec, attention_mask))
    xp = get_xp(lp)
    per_tok = (xp.exp(lp) * (lp - lq)).sum(axis=-1)  # (N, L)
    return to_numpy((per_tok * (labels != IGNORE_INDEX)).sum(axis=1)).astype(np.float64)


def _mean(r: np.ndarray) -> float:
    """The mean of finite rewards; inf when their sum overflows (huge rewards), said by the run."""
    with np.errstate(over="ignore", invalid="ignore"):
        return float(r.mean())


def evaluate_policy(policy, reference, tokenizer, reward: Reward, examples: Sequence[Example],
                    encoded: EncodedDataset, batch_size: int = 150, max_new_tokens: int = 32,
                    sample_seed: int | None = 0) -> dict[str, Any]:
    """Held-out figures: mean reward of greedy decoding (overall and per task) and, with
    ``sample_seed``, mean reward of one sample per prompt and the KL to the reference
    along those samples (see :func:`policy_kl`).

    Returns {"reward", "n", "per_task": {task: mean reward}, "samples"[,
    "sampled_reward", "kl"]}.
    """
    greedy = greedy_outputs(policy, tokenizer, encoded, batch_size, max_new_tokens)
    r = score_outputs(reward, examples, greedy)
    result: dict[str, Any] = {
        "reward": _mean(r), "n": len(examples),
        "per_task": {t: _mean(r[idx]) for t, idx in group_by_task(examples).items()},
        "samples": samples(examples, greedy),
    }
    if sample_seed is not None:
        rng = seeds.generator(sample_seed, "eval_sampling")
        sampled_r, kls = [], []
        xp = policy.xp
        for i in range(0, len(examples), batch_size):
            idx = np.arange(i, min(i + batch_size, len(examples)))
            b = prompt_batch(encoded, idx)
            ids, mask = xp.asarray(b["input_ids"]), xp.asarray(b["attention_mask"])
            labels = sample_outputs(policy, ids, mask, 1, rng, max_new_tokens)
            sampled_r.append(score_outputs(reward, [examples[j] for j in idx],
                                           decode_labels(tokenizer, labels)))
            kls.append(policy_kl(policy, reference, ids, labels, mask))
        result["sampled_reward"] = _mean(np.concatenate(sampled_r))
        result["kl"] = float(np.concatenate(kls).mean())
    return result
