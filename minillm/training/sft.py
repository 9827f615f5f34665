"""Supervised fine-tuning (SFT) of an encoder-decoder T5 on instruction-output pairs.

The loss is on the output tokens only: the encoder reads the prompt, the decoder
is teacher-forced on the target, and padding carries the label -100, so

    loss = (1 / N) * sum_{b, t : y_bt != -100} -log p(y_bt | x_b, y_b<t)

with N the number of target tokens in the (accumulated) batch. One optimizer
step, over ``grad_accum`` micro-batches k with n_k target tokens (N = sum n_k):

    g      = sum_k (n_k / N) * grad loss_k          (= the gradient of the whole batch)
    g      = g * min(1, max_norm / |g|)             (clipping by global norm)
    lr_t   = warmup then cosine decay               (minillm.optim.lr_schedule)
    params = AdamW(params, g, lr_t)

Dropout draws from one explicit ``numpy.random.Generator``; its state, the
optimizer moments, the step and the data position (epoch, batch) are the whole
trainer state, so a resumed run is bit-for-bit the uninterrupted one.

Periodic evaluation on held-out prompts: teacher-forced loss and perplexity, and
exact match of greedy decoding, overall and per task. :func:`fit` is the loop:
tqdm progress bar (loss, tokens/s, ETA), ``metrics.jsonl`` in the run folder,
checkpoints (last and best, see :mod:`minillm.training.checkpoint`), a loss-curve PNG.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from minillm.data import IGNORE_INDEX, EncodedDataset, Example, collate, epoch_order
from minillm.evaluation.report import format_eval  # noqa: F401 - re-exported
from minillm.optim import AdamW, ScaledAdamW, clip_grad_norm, lr_schedule

METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "loss.png"


class JSONSettings:
    """JSON round trip for a frozen settings dataclass (trainer_state.json keeps it).

    ``betas`` is a tuple in Python and a list in JSON; unknown keys are an error
    naming them (``_label`` says whose settings they are).
    """

    _label = "setting"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if "betas" in d:
            d["betas"] = list(d["betas"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls._label}(s): {', '.join(unknown)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


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
        for name in ("steps", "batch_size", "grad_accum", "eval_batch_size", "max_new_tokens",
                     "log_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("warmup_steps", "eval_every", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if self.save_every is not None and self.save_every < 0:
            raise ValueError(f"save_every must be non-negative, got {self.save_every}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not self.position_bias_lr_scale > 0:
            raise ValueError(f"position_bias_lr_scale must be positive, got {self.position_bias_lr_scale!r}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be cosine, linear or constant, got {self.schedule!r}")



class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or inf; the run stopped before updating."""


# --------------------------------------------------------------------------- one step


def count_tokens(batch: dict) -> tuple[int, int]:
    """(source tokens, target tokens) of a batch, padding excluded."""
    return int(batch["attention_mask"].sum()), int((batch["labels"] != IGNORE_INDEX).sum())


def sft_loss_and_grads(model, micro_batches: Sequence[dict], rng=None,
                       label_smoothing: float = 0.0) -> tuple[float, dict, int]:
    """Loss and gradient of the mean over every target token of all ``micro_batches``.

    Micro-batch k (n_k target tokens) is weighted n_k / N, N = sum n_k, so the
    result equals one batch holding them all. Returns (loss, grads, N).
    """
    n = [count_tokens(b)[1] for b in micro_batches]
    total = sum(n)
    if total == 0:
        raise ValueError("a batch without target tokens (every label is -100)")
    loss, grads = 0.0, None
    for b, n_k in zip(micro_batches, n, strict=True):
        loss_k, g_k = model.loss_and_grads(b["input_ids"], b["labels"], b["attention_mask"],
                                           rng=rng, label_smoothing=label_smoothing)
        w = n_k / total
        loss += loss_k * w
        if grads is None:
            grads = {k: v * v.dtype.type(w) for k, v in g_k.items()} if len(n) > 1 else g_k
        else:
            for k, v in g_k.items():
                grads[k] += v * v.dtype.type(w)
    return loss, grads, total


def on_model_device(model, batch: dict) -> dict:
    """input_ids, attention_mask and labels of a (host) batch, on the model's device.

    ``collate`` builds NumPy arrays; ``model.xp.asarray`` copies them to the GPU
    once per step when the model lives there (and is a no-op on the CPU).
    """
    xp = model.xp
    return {k: xp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "labels")}


def train_step(model, optimizer: AdamW | ScaledAdamW, micro_batches: Sequence[dict], step: int,
               config: TrainConfig, total_steps: int, rng) -> dict[str, float]:
    """One optimizer step (``step`` is 0-based); raises TrainingDiverged before a bad update.

    The micro-batches may be host arrays; they are moved to the model's device
    here. Returns {"loss", "lr", "grad_norm", "tokens"} (Python numbers; tokens:
    source + target, no padding).
    """
    tokens = sum(sum(count_tokens(b)) for b in micro_batches)  # on the host, before the copy
    micro_batches = [on_model_device(model, b) for b in micro_batches]
    with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported just below
        loss, grads, _ = sft_loss_and_grads(model, micro_batches, rng, config.label_smoothing)
        norm = clip_grad_norm(grads, config.max_grad_norm)
    if not math.isfinite(loss):
        raise TrainingDiverged(f"step {step + 1}: the loss is {loss} (not finite)")
    if not math.isfinite(norm):
        raise TrainingDiverged(f"step {step + 1}: the gradient norm is {norm} (not finite)")
    lr = lr_schedule(step, lr=config.lr, total_steps=total_steps,
                     warmup_steps=config.warmup_steps, kind=config.schedule,
                     min_lr_ratio=config.min_lr_ratio)
    optimizer.step(model.params, grads, lr)
    return {"loss": float(loss), "lr": float(lr), "grad_norm": float(norm), "tokens": tokens}


# --------------------------------------------------------------------------- data order


def batch_stream(encoded: EncodedDataset, batch_size: int, seed: int, epoch: int = 0,
                 start: int = 0) -> Iterator[tuple[dict, tuple[int, int]]]:
    """Endless (batch, position after it) from data position (epoch, start).

    Epoch e's order is ``minillm.data.epoch_order(lengths, batch_size, seed, e)``
    (length-bucketed, shuffled), a pure function, so a position is all a resumed
    run needs. The position after the last batch of an epoch is (e + 1, 0).
    """
    lengths = encoded.lengths
    while True:
        order = epoch_order(lengths, batch_size, seed, epoch)
        for i in range(start, len(order)):
            pos = (epoch + 1, 0) if i + 1 == len(order) else (epoch, i + 1)
            yield collate(encoded, order[i]), pos
        epoch, start = epoch + 1, 0


# --------------------------------------------------------------------------- evaluation


def strip_after_eos(ids: Sequence[int], eos_id: int, start_id: int | None = None) -> list[int]:
    """Generated ids without the leading decoder start token, cut before the first eos."""
    ids = [int(i) for i in ids]
    if start_id is not None and ids and ids[0] == start_id:
        ids = ids[1:]
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def greedy_outputs(model, tokenizer, encoded: EncodedDataset, batch_size: int = 150,
                   max_new_tokens: int = 32) -> list[str]:
    """Greedy decoding of every source in ``encoded``; the decoded strings, in order.

    Sources are batched by length (less padding); greedy is what exact match scores.
    """
    from minillm.evaluation.evaluate import decode_outputs

    return decode_outputs(model, tokenizer, encoded, batch_size, max_new_tokens=max_new_tokens,
                          num_beams=1)


def teacher_forced_nll(model, encoded: EncodedDataset, batch_size: int = 150) -> tuple[float, int]:
    """(summed negative log-likelihood in nats, number of target tokens) over ``encoded``."""
    order = np.argsort(encoded.lengths[:, 0], kind="stable")
    total, n = 0.0, 0
    for i in range(0, len(order), batch_size):
        b = collate(encoded, order[i : i + batch_size])
        n_b = count_tokens(b)[1]
        total += model.loss(b["input_ids"], b["labels"], b["attention_mask"]) * n_b
        n += n_b
    return total, n


def evaluate(model, tokenizer, examples: Sequence[Example], encoded: EncodedDataset,
             batch_size: int = 150, max_new_tokens: int = 32,
             verifiers: dict[str, Callable[[Example, str], float]] | None = None) -> dict[str, Any]:
    """Held-out metrics: loss, perplexity, exact match (greedy decoding), overall and per task.

    exact_match = (1/n) sum_i [strip(output_i) == strip(target_i)], a fraction 0-1;
    perplexity = exp(summed target-token NLL / target tokens). Examples without a
    task are grouped under "all". ``verifiers`` (task name -> score function, e.g.
    the built-in tasks' ``verify``) add a "score" per task (semantic equivalence
    for code). Returns {"loss", "perplexity", "exact_match", "n", "per_task": {task:
    {"exact_match", "n"[, "score"]}}, "samples": a few (prompt, target, output)}.
    """
    from minillm.metrics import exact_match, perplexity

    nll, n_tok = teacher_forced_nll(model, encoded, batch_size)
    outputs = greedy_outputs(model, tokenizer, encoded, batch_size, max_new_tokens)
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.task or "all", []).append(i)
    per_task = {}
    for task in sorted(groups):
        idx = groups[task]
        row = {"exact_match": exact_match([outputs[i] for i in idx],
                                          [examples[i].target for i in idx]), "n": len(idx)}
        if verifiers and task in verifiers:
            row["score"] = float(np.mean([verifiers[task](examples[i], outputs[i]) for i in idx]))
        per_task[task] = row
    return {
        "loss": nll / max(n_tok, 1),
        "perplexity": perplexity(nll, n_tok) if n_tok else math.inf,
        "exact_match": exact_match(outputs, [ex.target for ex in examples]),
        "n": len(examples),
        "per_task": per_task,
        "samples": [{"prompt": examples[i].prompt, "target": examples[i].target,
                     "output": outputs[i]} for i in range(min(3, len(examples)))],
    }


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainState:
    """Everything that changes during a run besides the parameters and the moments."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    rng_state: dict | None = None
    best: dict | None = None  # {"exact_match", "loss", "step"}


def _is_better(result: dict, best: dict | None) -> bool:
    """Higher exact match wins; a tie goes to the lower loss."""
    if best is None:
        return True
    if result["exact_match"] != best["exact_match"]:
        return result["exact_match"] > best["exact_match"]
    return result["loss"] < best["loss"]


def read_metrics(path: str) -> list[dict]:
    """The records of a metrics.jsonl (a missing file gives none; a torn last line is dropped)."""
    import json

    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def write_metrics(path: str, records: list[dict]) -> None:
    import json

    from minillm.storage.fileio import write_text

    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def fit(model, tokenizer, train_data: EncodedDataset, config: TrainConfig, out_dir: str,
        eval_examples: Sequence[Example] | None = None, eval_data: EncodedDataset | None = None,
        periodic_eval: int | None = None, verifiers: dict | None = None,
        state: TrainState | None = None, optimizer: ScaledAdamW | None = None,
        run_info: dict | None = None, stop_after: int | None = None, progress: bool = True,
        plot: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``model`` in place for ``config.steps`` optimizer steps; checkpoint into ``out_dir``.

    The run computes where ``model`` lives (``T5.to("cuda")`` for a GPU): each
    batch is copied there as it enters the step, the AdamW moments are allocated
    beside the params, and checkpoints are written from host copies. The device
    is not part of ``config``: a run may be resumed on another one.
    ``state`` / ``optimizer``: from a checkpoint, to resume (None: a fresh run,
    which first writes a step-0 checkpoint). ``periodic_eval``: evaluate on the
    first that many eval examples at each ``eval_every`` (None: all); the final
    evaluation uses all. ``run_info``: JSON saved in the trainer state (data
    sources, preset, ...). ``stop_after``: stop (with a checkpoint) once this
    step is reached, although the schedule spans ``config.steps``. ``plot``: write
    loss.png at the end (when matplotlib is importable).

    Returns {"step", "final_eval" (or None), "best", "stopped_early"}.
    Raises TrainingDiverged on a NaN/inf loss, keeping the last checkpoint.
    """
    from minillm.training import checkpoint as ckpt

    log = log or (lambda msg: print(msg, file=sys.stderr))
    os.makedirs(out_dir, exist_ok=True)
    metrics_path = os.path.join(out_dir, METRICS_NAME)
    fresh = state is None
    state = state or TrainState()
    if state.rng_state is None:
        rng = np.random.default_rng([config.seed, 1])  # dropout; model init used [seed, 0]
    else:
        rng = np.random.Generator(getattr(np.random, state.rng_state["bit_generator"])())
        rng.bit_generator.state = state.rng_state
    if optimizer is None:
        optimizer = ScaledAdamW.from_config(config)
    # Records written after the checkpoint we resume from are not part of this run.
    records = [r for r in read_metrics(metrics_path) if r.get("step", 0) <= state.step]
    dtype = str(model.dtype)

    def save(best_result: dict | None = None) -> None:
        state.rng_state = rng.bit_generator.state
        payload = {
            "step": state.step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch,
            "rng_state": state.rng_state, "best": state.best, "dtype": dtype,
            "train_config": config.to_dict(), "run": run_info or {},
        }
        ckpt.save_checkpoint(out_dir, model, tokenizer, optimizer, payload)
        if best_result is not None:
            ckpt.save_model(os.path.join(out_dir, ckpt.BEST_DIR), model, tokenizer)

    def run_eval(n: int | None) -> dict | None:
        if not eval_examples:
            return None
        ex = list(eval_examples)[:n] if n else list(eval_examples)
        enc = eval_data if n is None or n >= len(eval_data) else EncodedDataset(
            eval_data.sources[:n], eval_data.targets[:n], eval_data.pad_id)
        return evaluate(model, tokenizer, ex, enc, config.eval_batch_size, config.max_new_tokens,
                        verifiers)

    if fresh:
        save()
        records = []
    write_metrics(metrics_path, records)

    save_every = config.eval_every if config.save_every is None else config.save_every
    stop = min(config.steps, stop_after) if stop_after is not None else config.steps
    stream = batch_stream(train_data, config.batch_size, config.seed, state.epoch,
                          state.batch_in_epoch)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, initial=state.step, desc="sft", unit="step",
                   dynamic_ncols=True, file=sys.stderr)
    t_last, tok_since, loss_since, n_since = time.perf_counter(), 0, 0.0, 0
    t_start = time.perf_counter()
    final_eval = None
    try:
        while state.step < stop:
            micro = []
            for _ in range(config.grad_accum):
                batch, (state.epoch, state.batch_in_epoch) = next(stream)
                micro.append(batch)
            try:
                out = train_step(model, optimizer, micro, state.step, config, config.steps, rng)
            except TrainingDiverged as e:
                raise TrainingDiverged(
                    f"{e}; stopped. The last good checkpoint (step {_saved_step(out_dir)}) "
                    f"is kept in {out_dir}") from None
            state.step += 1
            tok_since += out["tokens"]
            loss_since += out["loss"]
            n_since += 1
            if bar is not None:
                bar.update(1)
            if state.step % config.log_every == 0 or state.step == stop:
                now = time.perf_counter()
                tps = tok_since / max(now - t_last, 1e-9)
                rec = {"step": state.step, "kind": "train", "loss": loss_since / n_since,
                       "lr": out["lr"], "grad_norm": out["grad_norm"],
                       "tokens_per_s": tps, "epoch": state.epoch,
                       "elapsed_s": now - t_start}
                records.append(rec)
                write_metrics(metrics_path, records)
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{tps:,.0f}",
                                    lr=f"{out['lr']:.2e}")
                t_last, tok_since, loss_since, n_since = now, 0, 0.0, 0
            is_last = state.step == config.steps
            result = None
            if config.eval_every and state.step % config.eval_every == 0 and not is_last:
                result = run_eval(periodic_eval)
                if result is not None:
                    records.append(_eval_record(state.step, result, "eval"))
                    write_metrics(metrics_path, records)
                    if bar is not None:
                        bar.write(f"step {state.step}: eval loss {result['loss']:.4f}, "
                                  f"exact match {result['exact_match']:.3f}")
            if is_last:
                result = final_eval = run_eval(None)
                if result is not None:
                    records.append(_eval_record(state.step, result, "final_eval"))
                    write_metrics(metrics_path, records)
            improved = result is not None and _is_better(result, state.best)
            if improved:
                state.best = {"exact_match": result["exact_match"], "loss": result["loss"],
                              "step": state.step}
            if improved or is_last or state.step == stop or (
                    save_every and state.step % save_every == 0):
                save(result if improved else None)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        log(f"interrupted at step {state.step}; the last checkpoint is in {out_dir} "
            "(continue with --resume)")
        raise
    finally:
        if bar is not None:
            bar.close()
        if plot:
            _plot(os.path.join(out_dir, PLOT_NAME), records)
    return {"step": state.step, "final_eval": final_eval, "best": state.best,
            "stopped_early": state.step < config.steps}


def _saved_step(out_dir: str) -> str:
    from minillm.training.checkpoint import read_state

    try:
        return str(read_state(out_dir)["step"])
    except (OSError, ValueError, KeyError):
        return "?"


def _eval_record(step: int, result: dict, kind: str) -> dict:
    return {"step": step, "kind": kind, "loss": result["loss"],
            "perplexity": result["perplexity"], "exact_match": result["exact_match"],
            "n": result["n"],
            "per_task": {t: r["exact_match"] for t, r in result["per_task"].items()}}


def _plot(png_path: str, records: list[dict]) -> None:
    """The loss-curve PNG, when matplotlib is importable (never fails the run)."""
    try:
        from minillm.training.plot import plot_loss
    except ImportError:  # pragma: no cover
        return
    try:
        plot_loss(records, png_path)
    except Exception as e:  # noqa: BLE001 - a plot must not end a training run
        print(f"minillm: loss curve not written ({e})", file=sys.stderr)
