"""SFT's run: the data stream, held-out evaluation and the best checkpoint, in the shared loop.

Periodic evaluation on held-out prompts (:func:`minillm.evaluation.evaluate`):
teacher-forced loss and perplexity, and exact match of greedy decoding, overall
and per task; with ``generate_every`` k, only every k-th periodic evaluation
decodes and the others are the loss alone (one forward pass instead of up to
``max_new_tokens``). The best evaluation is picked by the state's early-stopping
rule (:mod:`minillm.training.early_stopping`): without one, the higher exact match
(a tie: the lower loss); with one, its metric, and ``patience`` evaluations without
a better one stop the run. Once the held-out loss rises while the training loss
falls, the evaluation's line says so (once).
:func:`fit` runs :class:`SFTTrainer` in the shared loop (:mod:`minillm.training.loop`):
progress, ``metrics.jsonl``, checkpoints (last and best), loss.svg and tasks.svg. Each
step is :func:`minillm.training.sft.train_step`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from minillm.data.batching import EncodedDataset, batch_stream
from minillm.data.examples import Example
from minillm.evaluation import evaluate
from minillm.optim import ScaledAdamW
from minillm.parallel import SINGLE, Single
from minillm.runfolder.checkpoint import BEST_DIR
from minillm.training.early_stopping import EarlyStopping, Point, evaluations_since, overfitting
from minillm.training.loop import Trainer, run
from minillm.training.sft import TrainConfig, TrainState, train_step


class SFTTrainer(Trainer):
    """SFT's part of the run loop: accumulated steps, held-out exact match and loss."""

    name, config_key = "sft", "train_config"

    def __init__(self, model, tokenizer, train_data: EncodedDataset, config: TrainConfig,
                 state: TrainState, optimizer: ScaledAdamW | None = None,
                 eval_examples: Sequence[Example] | None = None,
                 eval_data: EncodedDataset | None = None, periodic_eval: int | None = None,
                 verifiers: dict | None = None, run_info: dict | None = None,
                 world: Single = SINGLE, recompute: bool = False, generate_every: int = 1):
        self.model, self.tokenizer, self.config, self.state = model, tokenizer, config, state
        self.recompute = recompute
        self.optimizer = optimizer if optimizer is not None else ScaledAdamW.from_config(config)
        self.world = world
        self.stream = batch_stream(train_data, config.batch_size, config.seed, state.epoch,
                                   state.batch_in_epoch)
        self.eval_examples, self.eval_data = eval_examples, eval_data
        self.periodic_eval, self.verifiers, self.run_info = periodic_eval, verifiers, run_info
        self.generate_every = generate_every
        # the best evaluation's metric and the patience (the built-in suite's rule without one)
        saved = state.early_stopping
        self.rule = EarlyStopping(**saved) if saved else EarlyStopping("exact_match", 0)
        self.history: list[Point] = []  # each evaluation's step, held-out and training loss
        self.train_losses: list[float] = []  # the steps' losses since the last evaluation
        self.overfitting_said, self.note = False, None  # the note: said with the next eval line
        self.stop_line: str | None = None  # why the run stopped early (None: it did not)

    def step(self) -> dict[str, Any]:
        """The next ``grad_accum`` micro-batches of each rank (all of them on every rank)."""
        micro = []
        for _ in range(self.config.grad_accum * self.world.size):
            batch, (self.state.epoch, self.state.batch_in_epoch) = next(self.stream)
            micro.append(batch)
        out = train_step(self.model, self.optimizer, micro, self.state.step, self.config,
                         self.config.steps, world=self.world, recompute=self.recompute)
        self.train_losses.append(out["loss"])
        return out

    def train_record(self, window: list[dict], seconds: float) -> dict[str, Any]:
        """The mean loss of the window, the last lr and gradient norm, tokens per second."""
        return {"loss": sum(o["loss"] for o in window) / len(window), "lr": window[-1]["lr"],
                "grad_norm": window[-1]["grad_norm"],
                "tokens_per_s": sum(o["tokens"] for o in window) / max(seconds, 1e-9),
                "epoch": self.state.epoch}

    def postfix(self, record: dict) -> dict[str, str]:
        return {"loss": f"{record['loss']:.4f}", "tok_s": f"{record['tokens_per_s']:,.0f}",
                "lr": f"{record['lr']:.2e}"}

    def evaluate(self, kind: str) -> dict | None:
        """Periodic evaluations on the first ``periodic_eval`` examples, greedy decoding at every
        ``generate_every``-th (the others: the loss alone); the final one on all, decoded."""
        if not self.eval_examples:
            return None
        n = None if kind == "final_eval" else self.periodic_eval
        examples, encoded = list(self.eval_examples), self.eval_data
        if n and n < len(encoded):
            examples = examples[:n]
            encoded = EncodedDataset(encoded.sources[:n], encoded.targets[:n], encoded.pad_id)
        nth = self.state.step // self.config.eval_every if self.config.eval_every else 0
        decode = kind == "final_eval" or self.generate_every <= 1 or nth % self.generate_every == 0
        result = evaluate(self.model, self.tokenizer, examples, encoded, self.config.eval_batch_size,
                          self.config.max_new_tokens, self.verifiers, world=self.world,
                          decode=decode)
        self.note_losses(result["loss"])
        return result

    def note_losses(self, held_out: float) -> None:
        """Keep this evaluation's held-out and mean training loss; the overfitting note once."""
        losses, self.train_losses = self.train_losses, []
        if losses:
            self.history.append(Point(self.state.step, held_out, sum(losses) / len(losses)))
        if not self.overfitting_said:
            self.note = overfitting(self.history)
            self.overfitting_said = self.note is not None

    def eval_record(self, result: dict) -> dict[str, Any]:
        if "exact_match" not in result:  # the loss alone
            return {"loss": result["loss"], "perplexity": result["perplexity"], "n": result["n"]}
        return {"loss": result["loss"], "perplexity": result["perplexity"],
                "exact_match": result["exact_match"], "n": result["n"],
                "per_task": {t: r["exact_match"] for t, r in result["per_task"].items()}}

    def eval_line(self, kind: str, result: dict) -> str:
        line = f"step {self.state.step}: eval loss {result['loss']:.4f}"
        if "exact_match" in result:
            line += f", exact match {result['exact_match']:.3f}"
        note, self.note = self.note, None
        return line if note is None else f"{line}\n{note}"

    def best_entry(self, result: dict) -> dict[str, Any]:
        entry = {"loss": result["loss"]}
        if "exact_match" in result:
            entry = {"exact_match": result["exact_match"], **entry}
        return entry

    def is_better(self, entry: dict, best: dict) -> bool:
        """By the rule's metric: the lower loss, or the higher exact match (a tie: the lower loss)."""
        return self.rule.is_better(entry, best)

    def should_stop(self) -> str | None:
        """After a periodic evaluation: the early-stopping line once ``patience`` evaluations
        have not beaten the best (the stop recorded in the state), else None."""
        best = self.state.best
        if best is None or not self.config.eval_every:
            return None
        waited = evaluations_since(best["step"], self.state.step, self.config.eval_every)
        if not self.rule.should_stop(waited):
            return None
        self.rule = dataclasses.replace(self.rule, stopped_at=self.state.step)
        self.state.early_stopping = dataclasses.asdict(self.rule)
        self.stop_line = self.rule.reason(waited, best)
        return self.stop_line


def fit(model, tokenizer, train_data: EncodedDataset, config: TrainConfig, out_dir: str,
        eval_examples: Sequence[Example] | None = None, eval_data: EncodedDataset | None = None,
        periodic_eval: int | None = None, verifiers: dict | None = None,
        state: TrainState | None = None, optimizer: ScaledAdamW | None = None,
        run_info: dict | None = None, stop_after: int | None = None, progress: bool = True,
        plot: bool = True, log: Callable[[str], None] | None = None,
        world: Single = SINGLE, recompute: bool = False,
        early_stopping: EarlyStopping | None = None, generate_every: int = 1) -> dict[str, Any]:
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
    loss.svg and tasks.svg at the end (:mod:`minillm.plots`).

    ``world``: the ranks of a data-parallel run (:mod:`minillm.parallel`); rank 0
    alone writes ``out_dir``, the progress bar and the log. ``recompute``: keep only
    each block's input and recompute it in the backward (less memory, about a
    third more compute, the same gradient); not part of ``config``, like the device.

    ``early_stopping`` (a fresh run; a resumed one has it in ``state``): its metric picks
    the best evaluation and ``patience`` evaluations without a better one stop the run
    (:mod:`minillm.training.early_stopping`); then, as transformers' ``load_best_model_at_end``,
    ``model`` gets best/'s parameters (read from ``out_dir/best``, on every rank) and the final
    evaluation, on all the held-out examples, is best/'s. ``generate_every``: decode at every
    that many periodic evaluations, the others are the loss alone (the final one decodes).

    Returns {"step", "final_eval" (or None), "best", "stopped_early", "early_stop" (the line
    of an early stop, or None), "plots" ({"loss"/"tasks": the SVG file written})}.
    Raises TrainingDiverged on a NaN/inf loss, keeping the last checkpoint.
    """
    if state is None:
        state = TrainState(early_stopping=dataclasses.asdict(early_stopping) if early_stopping
                           else None)
        fresh = True
    else:
        fresh = False
    trainer = SFTTrainer(model, tokenizer, train_data, config, state, optimizer, eval_examples,
                         eval_data, periodic_eval, verifiers, run_info, world, recompute,
                         generate_every)
    out = run(trainer, out_dir, fresh=fresh, stop_after=stop_after, progress=progress,
              plot=plot, log=log)
    out["early_stop"] = trainer.stop_line
    if trainer.stop_line is not None:
        load_best(model, out_dir)
        out["final_eval"] = trainer.evaluate("final_eval")
    return {k: out[k] for k in ("step", "final_eval", "best", "stopped_early", "early_stop",
                                "plots")}


def load_best(model, out_dir: str) -> None:
    """best/'s parameters into ``model``, in place (each array keeps its dtype and device)."""
    from minillm.model.t5 import T5

    best = T5.from_pretrained(os.path.join(out_dir, BEST_DIR), dtype=model.dtype, device=model.device)
    for name, value in best.params.items():
        model.params[name][...] = value
