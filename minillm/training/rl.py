"""The REINFORCE trainer: one step (sample, score, advantages, update) and the run.

Each step takes the next ``batch_size`` prompts of the epoch's order, samples k
outputs per prompt from the policy, scores them with the reward, shapes the
rewards with the KL to the frozen reference, forms the advantages and takes one
AdamW step on the surrogate (the estimator: :mod:`minillm.training.reinforce`).
With ``algo`` grpo, or ``num_iterations`` mu > 1, the step forms the advantages
and clipped surrogate of :mod:`minillm.training.grpo` instead and takes mu AdamW
steps on its samples (all at the step's learning rate, each over all of the step's
micro-batches, whose token weights are the step's); ``steps`` counts steps of
samples, so the optimizer's t is steps * mu.

A step is ``grad_accum`` micro-batches of ``batch_size`` prompts (the next
batches of the epoch's order); the advantages are formed over all of them (so
whitening and the EMA baseline see the whole step), and each micro-batch's
surrogate is weighted by its share of the step's sequences, so its
policy-gradient term equals one batch of all the prompts (the entropy bonus is
each micro-batch's token mean, weighted likewise).

Random streams (:mod:`minillm.seeds`): the prompt order of each epoch is
"order"; micro-batch k of step t samples from ``seeds.generator(seed,
"sampling", t, k)``; the held-out samples "eval_sampling". The trainer state
(step, prompt position, the EMA baseline, the AdamW moments) makes ``--resume``
bit-for-bit, through the loop of :mod:`minillm.training.loop` as for SFT; the
reference model is kept in ``OUT/reference``. The best checkpoint has the
highest held-out greedy reward.

Data parallel (``mpiexec -n R``, :mod:`minillm.parallel`): a step is
``grad_accum * R`` micro-batches; rank r samples, scores and differentiates its
contiguous block of them (each prompt's k samples and its leave-one-out baseline
stay on one rank); the per-sequence rewards, KL and lengths are gathered (so every
rank forms the same advantages and statistics), the loss and entropy summed, and
the gradient summed in one Allreduce. R ranks with ``--batch-size b`` are one
process with ``--batch-size b --grad-accum R``. The held-out evaluation is
computed whole on every rank (its samples are one stream across the batches).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import minillm.seeds as seeds
from minillm.backend import to_numpy
from minillm.data.batching import EncodedDataset
from minillm.data.examples import Example
from minillm.evaluation import decode_labels, evaluate_policy, prompt_batch, sample_outputs, token_logprobs
from minillm.evaluation.rewards import Reward, score_outputs
from minillm.model.params import add_grads
from minillm.ops.cross_entropy import IGNORE_INDEX
from minillm.optim import AdamW, clip_grad_norm, lr_schedule
from minillm.parallel import SINGLE, Single, allreduce_grads, shard
from minillm.runfolder import checkpoint as ckpt
from minillm.runfolder.checkpoint import REFERENCE_DIR
from minillm.runfolder.settings import JSONSettings
from minillm.training.checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_optimizer,
    check_run_counts,
)
from minillm.training.grpo import (
    ALGOS,
    LOSS_TYPES,
    SCALE_REWARDS,
    clipped_loss_and_grads,
    group_advantages,
    ratio_summary,
    token_kl_sums,
)
from minillm.training.loop import RunState, Trainer, TrainingDiverged, checked_update, run
from minillm.training.reinforce import BASELINES, compute_advantages, reinforce_backward, reinforce_forward


@dataclass(frozen=True)
class RLConfig(JSONSettings):
    """The REINFORCE trainer's settings (saved in the run folder; ``--resume`` reuses them).

    ``batch_size`` prompts per micro-batch, ``grad_accum`` micro-batches per step
    (on each rank), ``k`` samples per prompt (RLOO needs k >= 2).
    ``temperature`` / ``top_k`` / ``top_p``: the sampler (1.0 / 0 / 1.0 sample the
    policy itself; anything else biases the gradient). ``eval_every`` / ``save_every``
    in steps (0: only at the end; ``save_every`` None: with each evaluation).
    ``algo`` rloo (``baseline``, ``whiten``, ``kl_coef`` in the reward) or grpo
    (``scale_rewards``, ``beta`` * the k3 KL in the loss, ``loss_type``);
    ``num_iterations`` updates per step of samples, clipped at ``epsilon`` /
    ``epsilon_high`` (None: ``epsilon``): :mod:`minillm.training.grpo`.
    """

    _label = "RL setting"  # in error messages (a class attribute, not a field)

    steps: int = 200
    batch_size: int = 16
    grad_accum: int = 1
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
    algo: str = "rloo"
    num_iterations: int = 1
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.04
    scale_rewards: str = "group"
    loss_type: str = "dapo"
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
        """Every field's type and range (one line naming the field): :mod:`.checks`."""
        check_run_counts(self, ("steps", "batch_size", "grad_accum", "k", "max_new_tokens",
                                "eval_batch_size", "log_every"),
                         ("warmup_steps", "eval_every", "seed", "top_k"))
        check_optimizer(self)
        check_choice("baseline", self.baseline, BASELINES)
        if self.baseline == "rloo" and self.k < 2:
            raise ValueError("the rloo baseline needs k >= 2 samples per prompt")
        check_number("ema_decay", self.ema_decay, low=0, high=1, high_open=True)
        check_bool("whiten", self.whiten)
        for name in ("kl_coef", "entropy_coef"):
            check_number(name, getattr(self, name), low=0)
        check_number("temperature", self.temperature, low=0, low_open=True)
        check_choice("algo", self.algo, ALGOS)
        check_int("num_iterations", self.num_iterations, 1)
        check_number("epsilon", self.epsilon, low=0)
        if self.epsilon_high is not None:
            check_number("epsilon_high", self.epsilon_high, low=0)
        check_number("beta", self.beta, low=0)
        check_choice("scale_rewards", self.scale_rewards, SCALE_REWARDS)
        check_choice("loss_type", self.loss_type, LOSS_TYPES)
        if self.algo == "grpo" and self.k < 2:
            raise ValueError("grpo's group advantages need k >= 2 samples per prompt")
        check_number("top_p", self.top_p, low=0, high=1, low_open=True)


@dataclass
class RLState(RunState):
    """REINFORCE's run state: the EMA baseline besides; ``best`` is {"reward", "step"}."""

    ema: float | None = None


def prompt_order(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Epoch ``epoch``'s batches of prompt indices: a permutation cut into full batches.

    A pure function of (n, batch_size, seed, epoch) (the "order" stream of the
    epoch), so (epoch, batch) is all a resumed run needs. With fewer than
    ``batch_size`` prompts, one batch of all.
    """
    perm = seeds.generator(seed, "order", epoch).permutation(n)
    if n <= batch_size:
        return [perm]
    return [perm[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


# --------------------------------------------------------------------------- one step


def rl_step(policy, reference, optimizer: AdamW, tokenizer, reward: Reward,
            examples: Sequence[Example], encoded: EncodedDataset, indices, step: int,
            config: RLConfig, rng: np.random.Generator | None = None, ema: float | None = None,
            world: Single = SINGLE):
    """One REINFORCE step on the prompts ``indices`` (see the module docstring).

    ``indices``: one micro-batch of prompt indices, or a list of the step's
    micro-batches (all of them: under data parallelism each rank takes its
    ``shard``). Samples k outputs per prompt with ``rng`` (None: micro-batch j
    draws from the "sampling" stream of (step, j)), scores them, forms the
    advantages over the whole step, and updates ``policy`` in place. Raises
    RewardError for a failing reward, TrainingDiverged for a non-finite loss or
    gradient (before the update) or a parameter or AdamW moment the update made
    non-finite (after it: the policy is then changed, and must not be
    checkpointed); an error on one rank is raised on every rank.
    Returns (stats dict, the new EMA baseline).
    """
    k = config.k
    xp = policy.xp
    micro = (list(indices) if isinstance(indices, list) and all(isinstance(i, np.ndarray) for i in indices)
             else [np.asarray(indices)])
    sizes = [len(i) * k for i in micro]  # sequences of each micro-batch
    ends = np.cumsum(sizes)
    mine = shard(len(micro), world.size, world.rank)
    local, rows = [], []
    with world.together():  # an error on one rank (a failing reward) is raised on every rank
        for j in mine:
            idx = micro[j]
            b = prompt_batch(encoded, idx)  # host arrays
            input_ids = xp.asarray(b["input_ids"])
            mask = xp.asarray(b["attention_mask"])
            rng_j = seeds.generator(config.seed, "sampling", step, j) if rng is None else rng
            labels = sample_outputs(policy, input_ids, mask, k, rng_j, config.max_new_tokens,
                                    config.temperature, config.top_k, config.top_p)  # (B*k, L)
            texts = decode_labels(tokenizer, labels)
            rewards = score_outputs(reward, [examples[int(i)] for i in idx for _ in range(k)], texts)
            with np.errstate(over="ignore", invalid="ignore"):
                logp, cache = reinforce_forward(policy, input_ids, labels, mask, repeats=k)  # (B*k, L)
                ref_logp = token_logprobs(reference, input_ids, labels, mask, repeats=k)
                kl = to_numpy((logp - ref_logp).sum(axis=1)).astype(np.float64)  # (B*k,) k1 per sequence
                k3 = token_kl_sums(logp, ref_logp, labels)  # (B*k,) sum_t k3 per sequence
            n_tok = to_numpy(labels != IGNORE_INDEX).sum(axis=1)  # (B*k,)
            local.append((j, cache, (input_ids, mask, labels, logp, ref_logp)))
            rows.append(np.stack([rewards, kl, n_tok.astype(np.float64), k3], axis=1))  # (B*k, 4)
    table = world.gather_rows(np.concatenate(rows) if rows else np.zeros((0, 4)))  # (N, 4)
    rewards, kl, n_tok, k3 = table[:, 0], table[:, 1], table[:, 2], table[:, 3]
    with np.errstate(over="ignore", invalid="ignore"):
        if config.algo == "grpo":
            adv = group_advantages(rewards.reshape(-1, k), config.scale_rewards)
        else:
            shaped = rewards - config.kl_coef * kl
            adv, ema = compute_advantages(shaped.reshape(-1, k), config.baseline, ema,
                                          config.ema_decay, config.whiten)
    adv = adv.reshape(-1)  # (N,) in the order of the step's sequences
    n_seq, n_valid = int(ends[-1]), float(n_tok.sum())
    lr = lr_schedule(step, lr=config.lr, total_steps=config.steps, warmup_steps=config.warmup_steps,
                     kind=config.schedule, min_lr_ratio=config.min_lr_ratio)
    if config.algo != "rloo" or config.num_iterations > 1:
        loss, norm, entropy, updates = _clipped_updates(policy, optimizer, local, sizes, ends, adv,
                                                        n_seq, n_valid, lr, step, config, world)
        return _stats(rewards, kl, k3, n_tok, adv, loss, entropy, norm, lr, updates), ema
    # REINFORCE: rho = 1, nothing clipped
    loss, entropy, grads = 0.0, 0.0, {}
    with world.together(), np.errstate(over="ignore", invalid="ignore"):
        for j, cache, _ in local:
            lo, hi = int(ends[j]) - sizes[j], int(ends[j])
            loss_j, g_j, entropy_j = reinforce_backward(policy, adv[lo:hi], cache,
                                                        config.entropy_coef)
            w = sizes[j] / n_seq  # the surrogate's mean over the step's sequences
            loss += loss_j * w
            add_grads(grads, g_j, weight=None if sizes[j] == n_seq else w)
            # mean entropy over the step's sampled tokens
            entropy += entropy_j * (float(n_tok[lo:hi].sum()) / max(n_valid, 1.0))
    loss, entropy = (float(v) for v in world.sum([loss, entropy]))
    grads = allreduce_grads(world, grads, policy.params)
    norm = _update(policy, optimizer, loss, grads, lr, step, config)
    updates = {"clip_frac": 0.0, "clip_frac_low": 0.0, "clip_frac_high": 0.0, "ratio_min": 1.0,
               "ratio_max": 1.0, "ratio_std": 0.0}
    return _stats(rewards, kl, k3, n_tok, adv, loss, entropy, norm, lr, updates), ema


def _stats(rewards, kl, k3, n_tok, adv, loss, entropy, norm, lr, updates) -> dict[str, float]:
    """A step's figures (metrics.jsonl): rewards, the KL (k1 per sequence; k3 per token), ..."""
    return {
        "loss": loss, "reward": float(rewards.mean()), "reward_std": float(rewards.std()),
        "kl": float(kl.mean()), "kl_token": float(k3.sum()) / max(float(n_tok.sum()), 1.0),
        "entropy": entropy, "adv_mean": float(adv.mean()), "adv_std": float(adv.std()),
        "adv_abs_max": float(np.abs(adv).max()), **updates,
        "output_tokens": float(n_tok.mean()), "lr": float(lr), "grad_norm": float(norm),
    }


def _update(policy, optimizer: AdamW, loss: float, grads, lr: float, step: int, config: RLConfig,
            update: str = "") -> float:
    """Clip the (summed) gradient, check it, take the AdamW step, check the state; the norm."""
    with np.errstate(over="ignore", invalid="ignore"):
        norm = clip_grad_norm(grads, config.max_grad_norm)
    if not (math.isfinite(loss) and math.isfinite(norm)):
        raise TrainingDiverged(f"step {step + 1}{update}: loss {loss}, gradient norm {norm} "
                               "(not finite)")
    checked_update(policy.params, grads, optimizer, lr, f"step {step + 1}{update}")
    return norm


def _clipped_updates(policy, optimizer, local, sizes, ends, adv, n_seq: int, n_valid: float,
                     lr: float, step: int, config: RLConfig, world: Single):
    """``num_iterations`` AdamW steps on the clipped surrogate of the step's samples (grpo.py).

    ``local``: this rank's micro-batches (j, cache, (input_ids, mask, labels, logp, ref_logp));
    their token weights are the whole step's (n_seq sequences, n_valid tokens), so their
    gradients add up to one batch of all. The first update reuses the sampling pass (pi_old
    itself, rho = 1); each later one runs the teacher-forced pass on the updated policy.
    Returns (mean loss, mean gradient norm, the sampling policy's entropy, the updates' clip
    and ratio figures).
    """
    mu, k = config.num_iterations, config.k
    old = {j: batch[3].copy() for j, _, batch in local}  # pi_old's token log-probs, fixed
    caches = {j: cache for j, cache, _ in local}
    losses, norms, ratio_rows, first_entropy = [], [], [], None
    for i in range(mu):
        loss, entropy, grads, rows = 0.0, 0.0, {}, []
        with world.together(), np.errstate(over="ignore", invalid="ignore"):
            for j, _, (input_ids, mask, labels, _, ref_logp) in local:
                lo, hi = int(ends[j]) - sizes[j], int(ends[j])
                cache = caches.pop(j, None)
                if cache is None:  # a later update: the policy has moved
                    _, cache = reinforce_forward(policy, input_ids, labels, mask, repeats=k)
                loss_j, g_j, entropy_j, row = clipped_loss_and_grads(
                    policy, cache, old[j], ref_logp, adv[lo:hi], config, n_seq=n_seq,
                    n_tokens=n_valid)
                del cache
                loss += loss_j
                add_grads(grads, g_j)
                entropy += entropy_j * (float((to_numpy(labels) != IGNORE_INDEX).sum())
                                        / max(n_valid, 1.0))
                rows.append(row)
        loss, entropy = (float(v) for v in world.sum([loss, entropy]))
        grads = allreduce_grads(world, grads, policy.params)
        norms.append(_update(policy, optimizer, loss, grads, lr, step, config,
                             f" (update {i + 1} of {mu})" if mu > 1 else ""))
        losses.append(loss)
        first_entropy = entropy if first_entropy is None else first_entropy
        ratio_rows.append(world.gather_rows(np.array(rows).reshape(-1, 8)))
    updates = ratio_summary(np.concatenate(ratio_rows))
    return float(np.mean(losses)), float(np.mean(norms)), first_entropy, updates


# --------------------------------------------------------------------------- the trainer


class RLTrainer(Trainer):
    """REINFORCE's part of the run loop: sampled steps, held-out reward, the reference folder."""

    name, config_key, kind, initial_eval = "rl", "rl_config", "rl", True

    def __init__(self, policy, reference, tokenizer, reward: Reward,
                 train_examples: Sequence[Example], train_data: EncodedDataset, config: RLConfig,
                 state: RLState, optimizer: AdamW | None = None,
                 eval_examples: Sequence[Example] | None = None,
                 eval_data: EncodedDataset | None = None, run_info: dict | None = None,
                 world: Single = SINGLE):
        if policy.device != reference.device:
            raise ValueError(f"the policy is on {policy.device} but the reference on {reference.device}")
        self.model, self.reference, self.tokenizer, self.reward = policy, reference, tokenizer, reward
        self.config, self.state, self.run_info = config, state, run_info
        self.optimizer = optimizer if optimizer is not None else AdamW(
            lr=config.lr, betas=tuple(config.betas), eps=config.eps, weight_decay=config.weight_decay)
        self.world = world
        self.train_examples, self.train_data = train_examples, train_data
        self.eval_examples, self.eval_data = eval_examples, eval_data

    def start(self, out_dir: str) -> None:
        ckpt.save_model(os.path.join(out_dir, REFERENCE_DIR), self.reference, self.tokenizer)

    def step(self) -> dict[str, Any]:
        """rl_step on the next ``grad_accum`` batches of each rank; its figures and seconds ("step_s")."""
        c, s = self.config, self.state
        t0 = time.perf_counter()
        micro = []
        for _ in range(c.grad_accum * self.world.size):
            order = prompt_order(len(self.train_examples), c.batch_size, c.seed, s.epoch)
            micro.append(order[s.batch_in_epoch])
            s.batch_in_epoch += 1
            if s.batch_in_epoch == len(order):
                s.epoch, s.batch_in_epoch = s.epoch + 1, 0
        stats, s.ema = rl_step(self.model, self.reference, self.optimizer, self.tokenizer,
                               self.reward, self.train_examples, self.train_data, micro, s.step, c,
                               ema=s.ema, world=self.world)
        return {**stats, "step_s": time.perf_counter() - t0}

    def train_record(self, window: list[dict], seconds: float) -> dict[str, Any]:
        """The figures of the last step of the window."""
        return dict(window[-1])

    def postfix(self, record: dict) -> dict[str, str]:
        shown = {"reward": f"{record['reward']:.3f}", "kl": f"{record['kl']:.3f}",
                 "H": f"{record['entropy']:.2f}"}
        if self.config.num_iterations > 1:
            shown["clip"] = f"{record['clip_frac']:.3f}"
        return shown

    def evaluate(self, kind: str) -> dict | None:
        if not self.eval_examples:
            return None
        return evaluate_policy(self.model, self.reference, self.tokenizer, self.reward,
                               self.eval_examples, self.eval_data, self.config.eval_batch_size,
                               self.config.max_new_tokens, self.config.seed)

    def eval_record(self, result: dict) -> dict[str, Any]:
        return {k: result[k] for k in ("reward", "sampled_reward", "kl", "n", "per_task")}

    def eval_line(self, kind: str, result: dict) -> str:
        line = (f"step {self.state.step}: held-out reward {result['reward']:.3f} (greedy), "
                f"{result['sampled_reward']:.3f} (sampled)")
        return line if kind == "initial_eval" else f"{line}, KL {result['kl']:.3f}"

    def best_entry(self, result: dict) -> dict[str, Any]:
        return {"reward": result["reward"]}

    def is_better(self, entry: dict, best: dict) -> bool:
        return entry["reward"] > best["reward"]


def fit_rl(policy, reference, tokenizer, reward: Reward, train_examples: Sequence[Example],
           train_data: EncodedDataset, config: RLConfig, out_dir: str,
           eval_examples: Sequence[Example] | None = None, eval_data: EncodedDataset | None = None,
           state: RLState | None = None, optimizer: AdamW | None = None,
           run_info: dict | None = None, stop_after: int | None = None, progress: bool = True,
           log: Callable[[str], None] | None = None, world: Single = SINGLE) -> dict[str, Any]:
    """Train ``policy`` in place with REINFORCE for ``config.steps`` steps; checkpoint into ``out_dir``.

    ``reference``: the frozen starting model (saved once in ``out_dir/reference``), on
    the policy's device: the run computes there (prompts are copied to it as they
    enter a step, the AdamW moments are allocated beside the params) and writes its
    checkpoints from host copies. The device is not part of ``config``.
    ``state`` / ``optimizer``: from a checkpoint, to resume (None: a fresh run, which
    first evaluates and writes a step-0 checkpoint). The run folder, metrics.jsonl
    and progress bar are those of :func:`minillm.training.sft.fit`; metrics records carry
    the mean reward, KL, entropy and advantage statistics.

    ``world``: the ranks of a data-parallel run (:mod:`minillm.parallel`).

    Returns {"step", "initial_eval", "final_eval", "best", "stopped_early"}.
    """
    trainer = RLTrainer(policy, reference, tokenizer, reward, train_examples, train_data, config,
                        state or RLState(), optimizer, eval_examples, eval_data, run_info, world)
    return run(trainer, out_dir, fresh=state is None, stop_after=stop_after, progress=progress,
               log=log)
