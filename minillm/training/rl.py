"""The REINFORCE trainer: one step (rollout -> advantages -> updates) and the run.

    rollouts, caches, figures = collect_rollouts(...)        sample, score, log-probs (rollout.py)
    adv, ema = algorithm.advantages(figures, config, ema)     the step's advantages (algorithms.py)
    run_updates(...)                                          num_iterations AdamW steps, each over
                                                              every micro-batch: algorithm.loss,
                                                              the seeded backward, apply_update

Each step takes the next ``batch_size`` prompts of the epoch's order, samples k
outputs per prompt from the policy, scores them with the reward, and forms the
advantages and the loss of its algorithm (:data:`minillm.training.algorithms.ALGORITHMS`:
RLOO, the REINFORCE estimator of :mod:`minillm.training.reinforce`; clipped RLOO and
GRPO, :mod:`minillm.training.grpo`). ``num_iterations`` mu: mu AdamW steps on the
step's samples (all at the step's learning rate, each over all of the step's
micro-batches, whose token weights are the step's); ``steps`` counts steps of
samples, so the optimizer's t is steps * mu. The settings: :mod:`.rl_config`.

A step is ``grad_accum`` micro-batches of ``batch_size`` prompts (the next
batches of the epoch's order); the advantages are formed over all of them (so
normalising them and the EMA baseline see the whole step), and each micro-batch's
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
stay on one rank); the per-sequence figures (rewards, KL, lengths:
:class:`~minillm.training.rollout.SequenceFigures`) are gathered (so every rank forms
the same advantages and statistics), the loss and entropy summed, and the gradient
summed in one Allreduce. R ranks with ``--batch-size b`` are one
process with ``--batch-size b --grad-accum R``. The held-out evaluation is
computed whole on every rank (its samples are one stream across the batches).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import minillm.seeds as seeds
from minillm.data.batching import EncodedDataset
from minillm.data.examples import Example
from minillm.evaluation import evaluate_policy
from minillm.evaluation.rewards import Reward
from minillm.model.params import add_grads
from minillm.optim import AdamW, lr_schedule
from minillm.parallel import SINGLE, Single, allreduce_grads
from minillm.runfolder import checkpoint as ckpt
from minillm.runfolder.checkpoint import REFERENCE_DIR
from minillm.training.algorithms import Algorithm, algorithm_for, part_loss_and_grads
from minillm.training.grpo import RatioFigures, ratio_summary
from minillm.training.loop import RunState, Trainer, run
from minillm.training.reinforce import reinforce_forward
from minillm.training.rl_config import RLConfig
from minillm.training.rollout import Rollout, SequenceFigures, StepSize, collect_rollouts
from minillm.training.update import apply_update

__all__ = ["REFERENCE_DIR", "RLConfig", "RLState", "RLTrainer", "fit_rl", "prompt_order", "rl_step"]


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
    micro = (list(indices) if isinstance(indices, list) and all(isinstance(i, np.ndarray) for i in indices)
             else [np.asarray(indices)])
    algorithm = algorithm_for(config)
    rollouts, caches, figures = collect_rollouts(policy, reference, tokenizer, reward, examples,
                                                 encoded, micro, step, config, rng, world)
    with np.errstate(over="ignore", invalid="ignore"):
        adv, ema = algorithm.advantages(figures, config, ema)  # (N,) the step's sequences
    lr = lr_schedule(step, lr=config.lr, total_steps=config.steps, warmup_steps=config.warmup_steps,
                     kind=config.schedule, min_lr_ratio=config.min_lr_ratio,
                     decay_fraction=config.decay_fraction)
    size = StepSize(len(figures.reward), float(figures.tokens.sum()))
    loss, norm, entropy, ratios = run_updates(policy, optimizer, algorithm, rollouts, caches, adv,
                                              size, lr, step, config, world)
    return step_stats(figures, adv, loss, entropy, norm, lr, ratios), ema


def run_updates(policy, optimizer, algorithm: Algorithm, rollouts: list[Rollout], caches: list,
                adv: np.ndarray, size: StepSize, lr: float, step: int, config: RLConfig,
                world: Single):
    """``config.num_iterations`` AdamW steps on the step's samples, each over every micro-batch.

    The first update uses the sampling pass's caches (pi_old itself, rho = 1); each
    later one runs the teacher-forced pass again on the updated policy. Returns (the
    updates' mean loss and mean gradient norm, the sampling policy's entropy, the
    ratios' summary over every update).
    """
    mu = config.num_iterations
    losses, norms, ratio_rows, first_entropy = [], [], [], None
    for i in range(mu):
        loss, entropy, grads, rows = step_gradient(policy, algorithm, rollouts, caches, adv, size,
                                                   config, world)
        grads = allreduce_grads(world, grads, policy.params)
        where = f"step {step + 1}" + (f" (update {i + 1} of {mu})" if mu > 1 else "")
        norms.append(apply_update(policy.params, grads, optimizer, loss, lr, config.max_grad_norm,
                                  where))
        losses.append(loss)
        first_entropy = entropy if first_entropy is None else first_entropy
        ratio_rows.append(world.gather_rows(np.array(rows).reshape(-1, len(RatioFigures._fields))))
    ratios = ratio_summary(np.concatenate(ratio_rows))
    return float(np.mean(losses)), float(np.mean(norms)), first_entropy, ratios


def step_gradient(policy, algorithm: Algorithm, rollouts: list[Rollout], caches: list, adv, size,
                  config: RLConfig, world: Single):
    """The loss, mean entropy and gradient of the step at the current policy (this rank's part
    of them, and its :class:`RatioFigures` rows); the losses and entropy summed over the ranks.

    ``caches``: each micro-batch's teacher-forced pass, used once and dropped (None: run
    the pass again, on the policy as it is now).
    """
    loss, entropy, grads, rows = 0.0, 0.0, {}, []
    with world.together(), np.errstate(over="ignore", invalid="ignore"):
        for n, part in enumerate(rollouts):
            cache, caches[n] = caches[n], None
            if cache is None:  # a later update: the policy has moved
                _, cache = reinforce_forward(policy, part.input_ids, part.labels,
                                             part.attention_mask, repeats=config.k)
            loss_n, g_n, entropy_n, ratios = part_loss_and_grads(policy, algorithm, cache, part,
                                                                 adv[part.rows], config, size)
            del cache
            loss += loss_n
            add_grads(grads, g_n)
            # mean entropy over the step's sampled tokens
            entropy += entropy_n * (part.n_tokens / max(size.n_tokens, 1.0))
            rows.append(ratios)
    loss, entropy = (float(v) for v in world.sum([loss, entropy]))
    return loss, entropy, grads, rows


def step_stats(figures: SequenceFigures, adv, loss, entropy, norm, lr, ratios) -> dict[str, float]:
    """A step's figures (metrics.jsonl): rewards, the KL (k1 per sequence; k3 per token), ..."""
    rewards, n_tok = figures.reward, figures.tokens
    return {
        "loss": loss, "reward": float(rewards.mean()), "reward_std": float(rewards.std()),
        "kl": float(figures.kl.mean()), "kl_token": float(figures.k3_kl.sum()) / max(float(n_tok.sum()), 1.0),
        "entropy": entropy, "adv_mean": float(adv.mean()), "adv_std": float(adv.std()),
        "adv_abs_max": float(np.abs(adv).max()), **ratios,
        "output_tokens": float(n_tok.mean()), "lr": float(lr), "grad_norm": float(norm),
    }


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
        ckpt.save_model(ckpt.own_folder(os.path.join(out_dir, REFERENCE_DIR)), self.reference,
                        self.tokenizer)

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
    and progress bar are those of :func:`minillm.training.sft_trainer.fit`; metrics records carry
    the mean reward, KL, entropy and advantage statistics.

    ``world``: the ranks of a data-parallel run (:mod:`minillm.parallel`).

    Returns {"step", "initial_eval", "final_eval", "best", "stopped_early"}.
    """
    trainer = RLTrainer(policy, reference, tokenizer, reward, train_examples, train_data, config,
                        state or RLState(), optimizer, eval_examples, eval_data, run_info, world)
    return run(trainer, out_dir, fresh=state is None, stop_after=stop_after, progress=progress,
               log=log)
