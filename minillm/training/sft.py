"""Supervised fine-tuning (SFT) of an encoder-decoder T5 on instruction-output pairs.

The loss is on the output tokens only: the encoder reads the prompt, the decoder
is teacher-forced on the target, and padding carries the label -100, so

    loss = (1 / N) * sum_{b, t : y_bt != -100} -log p(y_bt | x_b, y_b<t)

with N the number of target tokens in the (accumulated) batch. One optimizer
step, over ``grad_accum`` micro-batches k with n_k target tokens (N = sum n_k):

    g      = sum_k (n_k / N) * grad loss_k          (= the gradient of the whole batch)
    g      = g * min(1, max_norm / |g|)             (clipping by global norm)
    lr_t   = warmup, then the schedule's decay      (minillm.optim.lr_schedule: cosine, wsd, ...)
    params = AdamW(params, g, lr_t)

Dropout of micro-batch k of step t draws from its own stream,
``seeds.generator(seed, "dropout", t, k)``, the batch order from the "order"
stream of each epoch; so the optimizer moments, the step and the data position
(epoch, batch) are the whole trainer state, a resumed run is bit-for-bit the
uninterrupted one, and any split of a step's micro-batches draws the same masks.

``recompute`` (``minillm train --recompute``): each block keeps only its input and
is recomputed in the backward (:mod:`minillm.engine.stack`), the same gradient for
less memory and about a third more compute. Like the device, it is a setting of
the invocation, not of the run: it is not saved, and a run may be resumed with
either value.

Data parallel (``mpiexec -n R``, :mod:`minillm.parallel`): a step is
``grad_accum * R`` micro-batches, the same on every rank; rank r computes the
contiguous block ``parallel.shard(grad_accum * R, R, r)`` with the weights n_k / N
of the whole step, and one Allreduce sums the gradient. R ranks with
``--batch-size b`` are one process with ``--batch-size b --grad-accum R``.

The run around these steps (the data stream, held-out evaluation, the loop) is
:mod:`minillm.training.sft_trainer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import minillm.engine as engine
import minillm.seeds as seeds
from minillm.model.params import add_grads
from minillm.ops.cross_entropy import IGNORE_INDEX
from minillm.optim import AdamW, ScaledAdamW, lr_schedule
from minillm.parallel import SINGLE, Single, allreduce_grads, shard
from minillm.runfolder.settings import JSONSettings
from minillm.training.checks import check_number, check_optimizer, check_run_counts
from minillm.training.loop import RunState
from minillm.training.update import apply_update


@dataclass(frozen=True)
class TrainConfig(JSONSettings):
    """The trainer's settings (saved in the run folder; ``--resume`` reuses them).

    ``steps``: optimizer steps; each consumes ``grad_accum`` micro-batches of
    ``batch_size`` examples. ``eval_every`` / ``save_every``: in optimizer steps
    (0: only at the end; ``save_every`` None: with each evaluation).
    ``position_bias_lr_scale``: learning-rate multiplier of the relative position
    tables (see :class:`ScaledAdamW`).
    """

    _label = "trainer setting"  # in error messages (a class attribute, not a field)

    steps: int = 2000
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 2e-3
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    decay_fraction: float = 0.25
    weight_decay: float = 0.01
    position_bias_lr_scale: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 0
    eval_every: int = 500
    save_every: int | None = None
    eval_batch_size: int = 150
    max_new_tokens: int = 32
    log_every: int = 10

    def __post_init__(self) -> None:
        """Every field's type and range (one line naming the field): :mod:`.checks`."""
        check_run_counts(self, ("steps", "batch_size", "grad_accum", "eval_batch_size",
                                "max_new_tokens", "log_every"), ("warmup_steps", "eval_every", "seed"))
        check_optimizer(self)
        check_number("position_bias_lr_scale", self.position_bias_lr_scale, low=0, low_open=True)
        check_number("label_smoothing", self.label_smoothing, low=0, high=1, high_open=True)


@dataclass
class TrainState(RunState):
    """SFT's run state; ``best`` is {"exact_match", "loss", "step"} ({"loss", "step"} of an
    evaluation without decoding). ``early_stopping``: the metric that picks the best, the
    patience and the step where the run stopped (:class:`minillm.training.early_stopping.
    EarlyStopping` as a dict), or None (the best is the higher exact match; never saved then).
    """

    early_stopping: dict | None = None
    saved_when_set = ("early_stopping",)  # fields trainer_state.json holds only when not None


# --------------------------------------------------------------------------- one step


def count_tokens(batch: dict) -> tuple[int, int]:
    """(source tokens, target tokens) of a batch, padding excluded."""
    return int(batch["attention_mask"].sum()), int((batch["labels"] != IGNORE_INDEX).sum())


def sft_loss_and_grads(model, micro_batches: Sequence[dict], rng=None,
                       label_smoothing: float = 0.0, total: int | None = None,
                       recompute: bool = False) -> tuple[float, dict, int]:
    """Loss and gradient of the mean over every target token of all ``micro_batches``.

    Micro-batch k (n_k target tokens) is weighted n_k / N, N = sum n_k, so the
    result equals one batch holding them all. ``rng``: the dropout Generator of
    every micro-batch, or a sequence of one per micro-batch (None: no dropout).
    ``total``: N when these micro-batches are a share of a larger step (a rank's
    share under data parallelism): the loss and gradient are then that share's
    part of the step's. ``recompute``: recompute each block in the backward
    (:func:`minillm.engine.loss_and_grads`, the lean form of
    :meth:`minillm.model.T5.loss_and_grads`). Returns (loss, grads, N).
    """
    n = [count_tokens(b)[1] for b in micro_batches]
    total = sum(n) if total is None else total
    if total == 0:
        raise ValueError("a batch without target tokens (every label is -100)")
    rngs = rng if isinstance(rng, list | tuple) else [rng] * len(n)
    loss, grads = 0.0, {}
    for b, n_k, rng_k in zip(micro_batches, n, rngs, strict=True):
        loss_k, g_k = engine.loss_and_grads(model, b["input_ids"], b["labels"], b["attention_mask"],
                                            rng=rng_k, label_smoothing=label_smoothing,
                                            recompute=recompute)
        w = n_k / total
        loss += loss_k * w
        # g = sum_k (n_k / N) grad loss_k; the whole batch in one (weight 1) keeps its arrays
        add_grads(grads, g_k, weight=None if n_k == total else w)
    return loss, grads, total


def on_model_device(model, batch: dict) -> dict:
    """input_ids, attention_mask and labels of a (host) batch, on the model's device.

    ``collate`` builds NumPy arrays; ``model.xp.asarray`` copies them to the GPU
    once per step when the model lives there (and is a no-op on the CPU).
    """
    xp = model.xp
    return {k: xp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "labels")}


def dropout_generators(seed: int, step: int, indices) -> list[np.random.Generator]:
    """The dropout Generator of each micro-batch ``indices`` of ``step``: a stream per (step, k)."""
    return [seeds.generator(seed, "dropout", step, int(k)) for k in indices]


def train_step(model, optimizer: AdamW | ScaledAdamW, micro_batches: Sequence[dict], step: int,
               config: TrainConfig, total_steps: int, rng=None,
               world: Single = SINGLE, recompute: bool = False) -> dict[str, float]:
    """One optimizer step (``step`` is 0-based); TrainingDiverged when it goes non-finite.

    ``micro_batches``: all of the step's micro-batches (host arrays; under data
    parallelism every rank passes them all and computes its ``shard`` of them,
    then the gradient is summed over the ranks). ``rng``: one dropout Generator
    for every micro-batch (None: micro-batch k draws from the stream of (step, k),
    :func:`dropout_generators`). The micro-batches computed here are moved to the
    model's device. ``recompute``: keep only each block's input, recompute the
    block in the backward (the same gradient, less memory).

    A non-finite loss or gradient is caught before the update; a parameter or
    AdamW moment that the update made NaN or inf, after it (the model is then
    already changed in place, so the caller must not checkpoint it; the run loop
    does not). The ranks see the same summed loss, gradient and parameters, so
    they stop together; an error on one rank stops every rank (``world.together``).

    Returns {"loss", "lr", "grad_norm", "tokens"} (Python numbers; tokens:
    source + target of the whole step, no padding).
    """
    tokens = sum(sum(count_tokens(b)) for b in micro_batches)  # on the host, before the copy
    total = sum(count_tokens(b)[1] for b in micro_batches)
    mine = shard(len(micro_batches), world.size, world.rank)
    rngs = dropout_generators(config.seed, step, mine) if rng is None else rng
    with world.together():  # an error on one rank is raised on every rank
        local = [on_model_device(model, micro_batches[k]) for k in mine]
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported just below
            loss, grads, _ = sft_loss_and_grads(model, local, rngs, config.label_smoothing, total,
                                                recompute=recompute)
    loss = float(world.sum([loss])[0])
    grads = allreduce_grads(world, grads, model.params)
    lr = lr_schedule(step, lr=config.lr, total_steps=total_steps,
                     warmup_steps=config.warmup_steps, kind=config.schedule,
                     min_lr_ratio=config.min_lr_ratio, decay_fraction=config.decay_fraction)
    norm = apply_update(model.params, grads, optimizer, loss, lr, config.max_grad_norm,
                        f"step {step + 1}")
    return {"loss": loss, "lr": float(lr), "grad_norm": float(norm), "tokens": tokens}
