"""Pretraining by span corruption: SFT's step and run loop on batches of corrupted raw text.

The objective is SFT's, teacher-forced cross-entropy of a target given an input,

    loss = (1 / N) * sum_{b, t} -log p(y_bt | x_b, y_b<t)

where now x_b is a raw example with its noise spans replaced by sentinels and y_b
the spans after their sentinels (:mod:`minillm.data.span_corruption`). So a
pretraining step is :func:`minillm.training.sft.train_step` on such batches, and a
run is :func:`minillm.training.loop.run`: checkpoints, resume bit for bit,
metrics.jsonl, the loss picture, data parallelism, all as ``minillm train``'s.

What is pretraining's own:

- the data: ``raw`` (N, L), the training text packed into raw examples of L
  tokens (:func:`minillm.data.span_corruption.pack`); epoch e visits them in the
  order of the "order" stream of e, ``batch_size`` at a time (the last partial
  batch dropped, as transformers' script does);
- the noise: micro-batch k of step t is corrupted with a mask per row drawn from
  ``seeds.generator(seed, "span_noise", t, k)``, so the data position and the step
  are the whole state, as for dropout, and R ranks with ``--batch-size b`` draw
  what one process with ``--grad-accum R`` draws;
- the evaluation: the teacher-forced loss on held-out text corrupted once (the
  "held_out_noise" stream), the first ``periodic_eval`` examples at each
  ``eval_every``, all of them at the end; the best is the lowest loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

import minillm.seeds as seeds
from minillm.data.batching import EncodedDataset, epoch_order
from minillm.data.span_corruption import check_noise, corrupt_batch
from minillm.evaluation.scores import teacher_forced_nll
from minillm.optim import ScaledAdamW
from minillm.parallel import SINGLE, Single
from minillm.training.loop import Trainer, run
from minillm.training.sft import TrainConfig, TrainState, train_step
from minillm.training.sft_trainer import SFTTrainer


@dataclass(frozen=True)
class Noise:
    """How raw examples are corrupted: T5's noise density and mean span length, and the ids
    of ``<extra_id_0>`` (sentinel j is ``first_sentinel - j``) and ``</s>``."""

    noise_density: float
    mean_span_length: float
    first_sentinel: int
    eos_id: int

    def __post_init__(self) -> None:
        check_noise(self.noise_density, self.mean_span_length)

    def corrupt(self, raw: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """:func:`corrupt_batch` of the raw examples (B, L) with these settings."""
        return corrupt_batch(raw, self.noise_density, self.mean_span_length, rng, self.first_sentinel,
                             self.eos_id)


def held_out_examples(raw: np.ndarray, noise: Noise, seed: int, pad_id: int) -> EncodedDataset:
    """The held-out raw examples (N, L), corrupted once on the "held_out_noise" stream, row by row."""
    batch = noise.corrupt(raw, seeds.generator(seed, "held_out_noise"))
    return EncodedDataset(list(batch["input_ids"]), list(batch["labels"]), pad_id)


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Full batches of an epoch of ``n`` raw examples (one partial batch when n < batch_size)."""
    return max(1, n // batch_size)


class PretrainTrainer(Trainer):
    """The run loop's pretraining part: SFT's step on span-corrupted batches, the held-out loss."""

    name, config_key, kind = "pretrain", "train_config", "pretrain"
    # the training record (mean loss, lr, gradient norm, tokens/s) and the bar's figures: SFT's
    train_record, postfix = SFTTrainer.train_record, SFTTrainer.postfix

    def __init__(self, model, tokenizer, raw: np.ndarray, noise: Noise, config: TrainConfig,
                 state: TrainState, optimizer: ScaledAdamW | None = None,
                 held_out: EncodedDataset | None = None, periodic_eval: int | None = None,
                 run_info: dict | None = None, world: Single = SINGLE, recompute: bool = False):
        self.model, self.tokenizer, self.config, self.state = model, tokenizer, config, state
        self.raw, self.noise, self.held_out, self.periodic_eval = raw, noise, held_out, periodic_eval
        self.optimizer = optimizer if optimizer is not None else ScaledAdamW.from_config(config)
        self.run_info, self.world, self.recompute = run_info, world, recompute
        self._order: tuple[int, list] = (-1, [])  # (epoch, its batches of raw-example indices)

    def next_raw(self) -> np.ndarray:
        """The next batch of raw examples (B, L); moves the data position (epoch, batch_in_epoch)."""
        n, bs, epoch = len(self.raw), self.config.batch_size, self.state.epoch
        if self._order[0] != epoch:  # a pure function of (seed, epoch): rebuilt, never saved
            self._order = epoch, epoch_order(np.zeros(n), bs, self.config.seed, epoch, bucket=False,
                                             drop_last=n >= bs)
        order = self._order[1]
        batch = self.raw[order[self.state.batch_in_epoch]]  # (B, L)
        self.state.batch_in_epoch += 1
        if self.state.batch_in_epoch == len(order):
            self.state.epoch, self.state.batch_in_epoch = self.state.epoch + 1, 0
        return batch

    def step(self) -> dict[str, Any]:
        """Every rank builds all ``grad_accum`` x ranks micro-batches; ``train_step`` takes its share."""
        t, seed = self.state.step, self.config.seed
        micro = [self.noise.corrupt(self.next_raw(), seeds.generator(seed, "span_noise", t, k))
                 for k in range(self.config.grad_accum * self.world.size)]
        return train_step(self.model, self.optimizer, micro, t, self.config, self.config.steps,
                          world=self.world, recompute=self.recompute)

    def evaluate(self, kind: str) -> dict | None:
        """{"loss", "perplexity", "n"}: held-out loss per target token (the first ``periodic_eval``
        examples, or all of them for the final evaluation)."""
        if self.held_out is None or not len(self.held_out):
            return None
        data, n = self.held_out, self.periodic_eval
        if kind != "final_eval" and n and n < len(data):
            data = EncodedDataset(data.sources[:n], data.targets[:n], data.pad_id)
        total, tokens = teacher_forced_nll(self.model, data, self.config.eval_batch_size, self.world)
        loss = total / tokens
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "n": len(data)}

    def eval_record(self, result: dict) -> dict[str, Any]:
        return dict(result)

    def eval_line(self, kind: str, result: dict) -> str:
        return f"step {self.state.step}: held-out loss {result['loss']:.4f} ({result['n']} examples)"

    def best_entry(self, result: dict) -> dict[str, Any]:
        return {"loss": result["loss"]}

    def is_better(self, entry: dict, best: dict) -> bool:
        """The lower held-out loss wins."""
        return entry["loss"] < best["loss"]


def fit_pretrain(model, tokenizer, raw: np.ndarray, noise: Noise, config: TrainConfig, out_dir: str,
                 held_out: EncodedDataset | None = None, periodic_eval: int | None = None,
                 state: TrainState | None = None, optimizer: ScaledAdamW | None = None,
                 run_info: dict | None = None, stop_after: int | None = None, progress: bool = True,
                 plot: bool = True, log=None, world: Single = SINGLE, recompute: bool = False) -> dict:
    """Pretrain ``model`` in place for ``config.steps`` steps; checkpoint into ``out_dir``.

    As :func:`minillm.training.fit` (its arguments, its checkpoints, its returned
    dict), with ``raw`` (N, L) the packed training text, ``noise`` its corruption
    and ``held_out`` the corrupted held-out examples (:func:`held_out_examples`).
    """
    trainer = PretrainTrainer(model, tokenizer, raw, noise, config, state or TrainState(), optimizer,
                              held_out, periodic_eval, run_info, world, recompute)
    out = run(trainer, out_dir, fresh=state is None, stop_after=stop_after, progress=progress,
              plot=plot, log=log)
    return {k: out[k] for k in ("step", "final_eval", "best", "stopped_early", "plots")}
