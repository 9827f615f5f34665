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
    A_ij  = s_ij - b_ij,  optionally whitened: (A - mean A) / (std A + 1e-8) over the batch
    loss  = -(1 / (B k)) sum_ij A_ij log pi(y_ij | x_i)  -  entropy_coef * mean_t H_t

Since E[grad log pi] = 0, E[kl grad log pi] is the gradient of the sequence-level
KL(pi || pi_ref) = E_pi[log pi(y) - log pi_ref(y)], so kl_coef * kl in the reward
penalises exactly it (without whitening, the step is unbiased for J - kl_coef KL).
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

Then: clip the global gradient norm, AdamW with warmup + cosine schedule. The
trainer state (step, prompt position, the sampling Generator, the EMA baseline,
the AdamW moments) makes ``--resume`` bit-for-bit, through :mod:`minillm.training.checkpoint`
as for SFT; the reference model is kept in ``OUT/reference``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from minillm.backend import get_xp, to_numpy
from minillm.data import IGNORE_INDEX, EncodedDataset, Example, collate
from minillm.evaluation.report import format_policy_eval
from minillm.evaluation.rewards import Reward, score_outputs
from minillm.ops.cross_entropy import cross_entropy_backward, cross_entropy_forward, log_softmax
from minillm.optim import AdamW, clip_grad_norm, lr_schedule
from minillm.training.sft import METRICS_NAME, JSONSettings, TrainingDiverged, read_metrics, strip_after_eos

REFERENCE_DIR = "reference"
BASELINES = ("rloo", "ema", "none")


@dataclass(frozen=True)
class RLConfig(JSONSettings):
    """The REINFORCE trainer's settings (saved in the run folder; ``--resume`` reuses them).

    ``batch_size`` prompts per step, ``k`` samples per prompt (RLOO needs k >= 2).
    ``temperature`` / ``top_k`` / ``top_p``: the sampler (1.0 / 0 / 1.0 sample the
    policy itself; anything else biases the gradient). ``eval_every`` / ``save_every``
    in steps (0: only at the end; ``save_every`` None: with each evaluation).
    """

    _label = "RL setting"  # in error messages (a class attribute, not a field)

    steps: int = 200
    batch_size: int = 16
    k: int = 8
    lr: float = 3e-4
    warmup_steps: int = 10
    schedule: str = "constant"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    baseline: str = "rloo"
    ema_decay: float = 0.9
    whiten: bool = False
    kl_coef: float = 0.1
    entropy_coef: float = 0.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 32
    seed: int = 0
    eval_every: int = 50
    save_every: int | None = None
    eval_batch_size: int = 150
    log_every: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "k", "max_new_tokens", "eval_batch_size", "log_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("warmup_steps", "eval_every", "seed", "top_k"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if self.save_every is not None and self.save_every < 0:
            raise ValueError(f"save_every must be non-negative, got {self.save_every}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        if self.baseline == "rloo" and self.k < 2:
            raise ValueError("the rloo baseline needs k >= 2 samples per prompt")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm!r}")
        for name in ("kl_coef", "entropy_coef", "weight_decay"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be cosine, linear or constant, got {self.schedule!r}")


# --------------------------------------------------------------------------- entropy op


def entropy_forward(logits):
    """H_n = -sum_v p_nv log p_nv, p = softmax(logits).  logits (N, V) -> H (N,), cache."""
    xp = get_xp(logits)
    logp = log_softmax(logits)  # (N, V)
    H = -(xp.exp(logp) * logp).sum(axis=-1)  # (N,)
    return H, (logp, H)


def entropy_backward(dH, cache):
    """dH (N,) -> dlogits (N, V).

    H = -sum_v p_v log p_v  =>  dH/dz_j = -p_j (log p_j + H)   (softmax Jacobian).
    """
    logp, H = cache
    xp = get_xp(logp)
    p = xp.exp(logp)  # (N, V)
    return -(p * (logp + H[:, None])) * dH[:, None].astype(logp.dtype, copy=False)


# --------------------------------------------------------------------------- sampling


def sampled_labels(ids, eos_token_id: int):
    """Generated ids (N, 1+L), decoder start first -> labels (N, L): -100 after the first ``</s>``.

    The ``</s>`` itself is a sampled token (its probability is part of pi(y)); a
    row that never produced it keeps all L tokens (cut by max_new_tokens).
    """
    xp = get_xp(ids)
    labels = ids[:, 1:].copy()  # (N, L)
    is_eos = labels == eos_token_id
    after = (xp.cumsum(is_eos, axis=1) - is_eos) > 0  # (N, L) strictly after the first eos
    labels[after] = IGNORE_INDEX
    return labels


def sample_outputs(model, input_ids, attention_mask, k: int, rng: np.random.Generator,
                   max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 1.0):
    """k samples per prompt: input_ids (B, S) -> labels (B*k, L), rows of a prompt adjacent."""
    from minillm.generation import generate

    ids = generate(model, input_ids, attention_mask, max_new_tokens=max_new_tokens, do_sample=True,
                   temperature=temperature, top_k=top_k, top_p=top_p, num_return_sequences=k,
                   rng=rng)  # (B*k, 1+L)
    return sampled_labels(ids, model.config.eos_token_id)


def decode_labels(tokenizer, labels) -> list[str]:
    """labels (N, L) -> N strings (each cut before its ``</s>``)."""
    eos = tokenizer.eos_token_id
    out = []
    for row in to_numpy(labels):
        out.append(tokenizer.decode(strip_after_eos(row[row != IGNORE_INDEX], eos)))
    return out


# --------------------------------------------------------------------------- the estimator


def token_logprobs(model, input_ids, labels, attention_mask=None, repeats: int = 1):
    """log pi(y_t | x, y_<t) for each label: (N, L), 0 where labels == -100 (evaluation mode).

    input_ids (B, S), labels (N, L) with N = B * repeats: the rows of a prompt are
    adjacent, and the prompt is encoded once for all of them.
    """
    xp = model.xp
    memory = model.encode(input_ids, attention_mask)  # (B, S, C)
    if repeats > 1:
        memory = xp.repeat(memory, repeats, axis=0)  # (N, S, C)
        attention_mask = None if attention_mask is None else xp.repeat(attention_mask, repeats, axis=0)
    hidden = model.decode(model.shift_right(labels), memory, attention_mask)  # (N, L, C)
    logits = model.lm_head(hidden)  # (N, L, V)
    N, L, V = logits.shape
    token_loss, _ = cross_entropy_forward(logits.reshape(N * L, V), labels.reshape(-1))
    return -token_loss.reshape(N, L)


def reinforce_forward(model, input_ids, labels, attention_mask=None, repeats: int = 1):
    """Teacher-forced pass over sampled outputs: token log-probs (N, L) and the cache.

    input_ids (B, S) and attention_mask (B, S), labels (N, L) from
    :func:`sampled_labels`, N = B * repeats: the ``repeats`` samples of a prompt
    are adjacent rows, and the prompt is encoded once for all of them (its
    memory gradient is their sum). Dropout is off: the gradient is of the
    sampling policy.
    """
    logits, model_cache = model.forward(input_ids, model.shift_right(labels), attention_mask,
                                        repeats=repeats)
    N, L, V = logits.shape
    token_loss, ce_cache = cross_entropy_forward(logits.reshape(N * L, V), labels.reshape(-1))
    logp = -token_loss.reshape(N, L)  # (N, L), 0 where ignored
    return logp, (model_cache, ce_cache, labels, logp, logits.reshape(N * L, V))


def reinforce_backward(model, advantages, cache, entropy_coef: float = 0.0):
    """The surrogate loss and its gradient, for fixed advantages A (N,).

        loss = -(1/N) sum_i A_i sum_t log pi(y_it)  -  entropy_coef * (1/n_tok) sum_{i,t} H_it

    grad loss = -(1/N) sum_i A_i grad log pi(y_i) - ...: the REINFORCE estimator
    (negated, for descent). Returns (loss, grads keyed like params, mean entropy).
    """
    model_cache, ce_cache, labels, logp, logits = cache
    xp = get_xp(logits)
    N, L = labels.shape
    dtype = logits.dtype
    valid = (labels != IGNORE_INDEX).reshape(-1)  # (N*L,)
    A = xp.asarray(advantages, dtype=dtype).reshape(N)  # (N,)
    logp_seq = logp.sum(axis=1)  # (N,) log pi(y_i | x_i)
    loss = -float((A * logp_seq).sum()) / N
    # loss = (1/N) sum_i A_i sum_t token_loss_it  =>  d loss / d token_loss_it = A_i / N
    seed = xp.repeat(A / N, L)  # (N*L,) the same seed on every token of a sequence
    dlogits, _ = cross_entropy_backward(seed, ce_cache)
    H, h_cache = entropy_forward(logits)  # (N*L,) reported even without the bonus
    n_tok = max(int(valid.sum()), 1)
    mean_entropy = float((H * valid).sum()) / n_tok
    if entropy_coef:
        loss -= entropy_coef * mean_entropy
        # loss -= c * (1/n_tok) sum valid * H
        dlogits += entropy_backward(-entropy_coef * valid.astype(dtype) / n_tok, h_cache)
    grads = model.backward(dlogits.reshape(N, L, -1), model_cache)
    return loss, grads, mean_entropy


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
                       whiten: bool = False) -> tuple[np.ndarray, float | None]:
    """Advantages A (B, k) of shaped rewards (B, k), and the updated EMA baseline.

    rloo: A = r - leave-one-out mean; ema: A = r - b with b the moving average of
    past batch means (b <- decay b + (1 - decay) mean(r) after use; the first batch,
    with no past, uses its own mean); none: A = r. whiten: (A - mean) / (std + 1e-8).
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
    if whiten:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    return adv, ema


# --------------------------------------------------------------------------- one step


def prompt_batch(encoded: EncodedDataset, indices) -> dict:
    """input_ids (B, S) and attention_mask (B, S) of the prompts ``indices``."""
    b = collate(encoded, np.asarray(indices))
    return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}


def rl_step(policy, reference, optimizer: AdamW, tokenizer, reward: Reward,
            examples: Sequence[Example], encoded: EncodedDataset, indices, step: int,
            config: RLConfig, rng: np.random.Generator, ema: float | None = None):
    """One REINFORCE step on the prompts ``indices`` (see the module docstring).

    Samples k outputs per prompt with ``rng``, scores them, forms the advantages,
    and updates ``policy`` in place. Raises RewardError for a failing reward,
    TrainingDiverged (before the update) for a non-finite loss or gradient.
    Returns (stats dict, the new EMA baseline).
    """
    k = config.k
    xp = policy.xp
    b = prompt_batch(encoded, indices)
    input_ids = xp.asarray(b["input_ids"])
    mask = xp.asarray(b["attention_mask"])
    labels = sample_outputs(policy, input_ids, mask, k, rng, config.max_new_tokens,
                            config.temperature, config.top_k, config.top_p)  # (B*k, L)
    texts = decode_labels(tokenizer, labels)
    rewards = score_outputs(reward, [examples[int(i)] for i in indices for _ in range(k)], texts)

    with np.errstate(over="ignore", invalid="ignore"):
        logp, cache = reinforce_forward(policy, input_ids, labels, mask, repeats=k)  # (B*k, L)
        ref_logp = token_logprobs(reference, input_ids, labels, mask, repeats=k)
        kl = to_numpy((logp - ref_logp).sum(axis=1)).astype(np.float64)  # (B*k,) k1 per sequence
        shaped = rewards - config.kl_coef * kl
        adv, ema = compute_advantages(shaped.reshape(-1, k), config.baseline, ema,
                                      config.ema_decay, config.whiten)
        loss, grads, entropy = reinforce_backward(policy, adv.reshape(-1), cache,
                                                  config.entropy_coef)
        norm = clip_grad_norm(grads, config.max_grad_norm)
    if not (math.isfinite(loss) and math.isfinite(norm)):
        raise TrainingDiverged(f"step {step + 1}: loss {loss}, gradient norm {norm} (not finite)")
    lr = lr_schedule(step, lr=config.lr, total_steps=config.steps, warmup_steps=config.warmup_steps,
                     kind=config.schedule, min_lr_ratio=config.min_lr_ratio)
    optimizer.step(policy.params, grads, lr)
    n_tok = to_numpy(labels != IGNORE_INDEX).sum(axis=1)
    stats = {
        "loss": loss, "reward": float(rewards.mean()), "reward_std": float(rewards.std()),
        "kl": float(kl.mean()), "entropy": entropy, "adv_mean": float(adv.mean()),
        "adv_std": float(adv.std()), "adv_abs_max": float(np.abs(adv).max()),
        "output_tokens": float(n_tok.mean()), "lr": float(lr), "grad_norm": float(norm),
    }
    return stats, ema


# --------------------------------------------------------------------------- evaluation


def policy_kl(policy, reference, input_ids, labels, attention_mask=None) -> np.ndarray:
    """Per-sequence sum_t KL(pi(.|x, y_<t) || pi_ref(.|x, y_<t)) along given outputs: (N,).

    Exact per position (sum over the vocabulary), summed over each sequence's
    tokens; along samples y ~ pi it is an unbiased, non-negative estimate of the
    sequence-level KL(pi || pi_ref).
    """
    dec = policy.shift_right(labels)
    lp = log_softmax(policy.logits(input_ids, dec, attention_mask))  # (N, L, V)
    lq = log_softmax(reference.logits(input_ids, dec, attention_mask))
    xp = get_xp(lp)
    per_tok = (xp.exp(lp) * (lp - lq)).sum(axis=-1)  # (N, L)
    return to_numpy((per_tok * (labels != IGNORE_INDEX)).sum(axis=1)).astype(np.float64)


def evaluate_policy(policy, reference, tokenizer, reward: Reward, examples: Sequence[Example],
                    encoded: EncodedDataset, batch_size: int = 150, max_new_tokens: int = 32,
                    sample_seed: int | None = 0) -> dict[str, Any]:
    """Held-out figures: mean reward of greedy decoding (overall and per task) and, with
    ``sample_seed``, mean reward of one sample per prompt and the KL to the reference
    along those samples (see :func:`policy_kl`)."""
    from minillm.training.sft import greedy_outputs

    greedy = greedy_outputs(policy, tokenizer, encoded, batch_size, max_new_tokens)
    r = score_outputs(reward, examples, greedy)
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.task or "all", []).append(i)
    result: dict[str, Any] = {
        "reward": float(r.mean()), "n": len(examples),
        "per_task": {t: float(r[idx].mean()) for t, idx in sorted(groups.items())},
        "samples": [{"prompt": examples[i].prompt, "target": examples[i].target,
                     "output": greedy[i]} for i in range(min(3, len(examples)))],
    }
    if sample_seed is not None:
        rng = np.random.default_rng([sample_seed, 3])
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
        result["sampled_reward"] = float(np.concatenate(sampled_r).mean())
        result["kl"] = float(np.concatenate(kls).mean())
    return result


# --------------------------------------------------------------------------- the loop


@dataclass
class RLState:
    """Everything that changes in a run besides the parameters and the AdamW moments."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    rng_state: dict | None = None
    ema: float | None = None
    best: dict | None = None  # {"reward", "step"}


def prompt_order(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Epoch ``epoch``'s batches of prompt indices: a permutation cut into full batches.

    A pure function of (n, batch_size, seed, epoch), so (epoch, batch) is all a
    resumed run needs. With fewer than ``batch_size`` prompts, one batch of all.
    """
    perm = np.random.default_rng([seed, 2, epoch]).permutation(n)
    if n <= batch_size:
        return [perm]
    return [perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def fit_rl(policy, reference, tokenizer, reward: Reward, train_examples: Sequence[Example],
           train_data: EncodedDataset, config: RLConfig, out_dir: str,
           eval_examples: Sequence[Example] | None = None, eval_data: EncodedDataset | None = None,
           state: RLState | None = None, optimizer: AdamW | None = None,
           run_info: dict | None = None, stop_after: int | None = None, progress: bool = True,
           log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``policy`` in place with REINFORCE for ``config.steps`` steps; checkpoint into ``out_dir``.

    ``reference``: the frozen starting model (saved once in ``out_dir/reference``), on
    the policy's device: the run computes there (prompts are copied to it as they
    enter a step, the AdamW moments are allocated beside the params) and writes its
    checkpoints from host copies. The device is not part of ``config``.
    ``state`` / ``optimizer``: from a checkpoint, to resume (None: a fresh run, which
    first evaluates and writes a step-0 checkpoint). The run folder, metrics.jsonl
    and progress bar are those of :func:`minillm.training.sft.fit`; metrics records carry
    the mean reward, KL, entropy and advantage statistics.

    Returns {"step", "initial_eval", "final_eval", "best", "stopped_early"}.
    """
    from tqdm import tqdm

    from minillm.training import checkpoint as ckpt
    from minillm.training.sft import write_metrics

    if policy.device != reference.device:
        raise ValueError(f"the policy is on {policy.device} but the reference on {reference.device}")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    os.makedirs(out_dir, exist_ok=True)
    metrics_path = os.path.join(out_dir, METRICS_NAME)
    fresh = state is None
    state = state or RLState()
    if state.rng_state is None:
        rng = np.random.default_rng([config.seed, 1])  # sampling
    else:
        rng = np.random.Generator(getattr(np.random, state.rng_state["bit_generator"])())
        rng.bit_generator.state = state.rng_state
    if optimizer is None:
        optimizer = AdamW(lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                          weight_decay=config.weight_decay)
    records = [r for r in read_metrics(metrics_path) if r.get("step", 0) <= state.step]
    dtype = str(policy.dtype)

    def save(improved: bool = False) -> None:
        state.rng_state = rng.bit_generator.state
        payload = {"kind": "rl", "step": state.step, "epoch": state.epoch,
                   "batch_in_epoch": state.batch_in_epoch, "rng_state": state.rng_state,
                   "ema": state.ema, "best": state.best, "dtype": dtype,
                   "rl_config": config.to_dict(), "run": run_info or {}}
        ckpt.save_checkpoint(out_dir, policy, tokenizer, optimizer, payload)
        if improved:
            ckpt.save_model(os.path.join(out_dir, ckpt.BEST_DIR), policy, tokenizer)

    def run_eval(kind: str) -> dict | None:
        if not eval_examples:
            return None
        result = evaluate_policy(policy, reference, tokenizer, reward, eval_examples, eval_data,
                                 config.eval_batch_size, config.max_new_tokens, config.seed)
        records.append({"step": state.step, "kind": kind, "reward": result["reward"],
                        "sampled_reward": result["sampled_reward"], "kl": result["kl"],
                        "n": result["n"], "per_task": result["per_task"]})
        write_metrics(metrics_path, records)
        if state.best is None or result["reward"] > state.best["reward"]:
            state.best = {"reward": result["reward"], "step": state.step}
            result["improved"] = True
        return result

    initial_eval = None
    if fresh:
        records = []
        ckpt.save_model(os.path.join(out_dir, REFERENCE_DIR), reference, tokenizer)
        initial_eval = run_eval("initial_eval")
        save(improved=initial_eval is not None)
        if initial_eval is not None:
            log(f"step 0: held-out reward {initial_eval['reward']:.3f} (greedy), "
                f"{initial_eval['sampled_reward']:.3f} (sampled)")
    write_metrics(metrics_path, records)

    save_every = config.eval_every if config.save_every is None else config.save_every
    stop = min(config.steps, stop_after) if stop_after is not None else config.steps
    n = len(train_examples)
    bar = tqdm(total=config.steps, initial=state.step, desc="rl", unit="step", dynamic_ncols=True,
               file=sys.stderr, disable=not progress)
    t_start = time.perf_counter()
    final_eval = None
    try:
        while state.step < stop:
            order = prompt_order(n, config.batch_size, config.seed, state.epoch)
            indices = order[state.batch_in_epoch]
            t0 = time.perf_counter()
            try:
                stats, state.ema = rl_step(policy, reference, optimizer, tokenizer, reward,
                                           train_examples, train_data, indices, state.step, config,
                                           rng, state.ema)
            except TrainingDiverged as e:
                raise TrainingDiverged(f"{e}; stopped. The last good checkpoint is kept in "
                                       f"{out_dir}") from None
            state.batch_in_epoch += 1
            if state.batch_in_epoch == len(order):
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            state.step += 1
            bar.update(1)
            if state.step % config.log_every == 0 or state.step == stop:
                rec = {"step": state.step, "kind": "train", **stats,
                       "step_s": time.perf_counter() - t0,
                       "elapsed_s": time.perf_counter() - t_start}
                records.append(rec)
                write_metrics(metrics_path, records)
                bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl']:.3f}",
                                H=f"{stats['entropy']:.2f}")
            is_last = state.step == config.steps
            result = None
            if is_last:
                result = final_eval = run_eval("final_eval")
            elif config.eval_every and state.step % config.eval_every == 0:
                result = run_eval("eval")
                if result is not None:
                    bar.write(f"step {state.step}: held-out reward {result['reward']:.3f} (greedy), "
                              f"{result['sampled_reward']:.3f} (sampled), KL {result['kl']:.3f}")
            improved = bool(result and result.get("improved"))
            if improved or is_last or state.step == stop or (
                    save_every and state.step % save_every == 0):
                save(improved)
    except KeyboardInterrupt:
        bar.close()
        log(f"interrupted at step {state.step}; the last checkpoint is in {out_dir} "
            "(continue with --resume)")
        raise
    finally:
        bar.close()
    return {"step": state.step, "initial_eval": initial_eval, "final_eval": final_eval,
            "best": state.best, "stopped_early": state.step < config.steps}


__all__ = [
    "BASELINES", "REFERENCE_DIR", "RLConfig", "RLState", "compute_advantages", "decode_labels",
    "entropy_backward", "entropy_forward", "evaluate_policy", "fit_rl", "format_policy_eval",
    "policy_kl", "prompt_order", "reinforce_backward", "reinforce_forward",
    "reinforce_loss_and_grads", "rl_step", "rloo_baseline", "sample_outputs", "sampled_labels",
    "token_logprobs",
]
