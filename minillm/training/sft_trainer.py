"""SFT's run: the data stream, held-out evaluation and the best checkpoint, in the shared loop.

Periodic evaluation on held-out prompts (:func:`minillm.evaluation.evaluate`):
teacher-forced loss and perplexity, and exact match of greedy decoding, overall
and per task; the best is the higher exact match (a tie: the lower loss).
:func:`fit` runs :class:`SFTTrainer` in the shared loop (:mod:`minillm.training.loop`):
progress, ``metrics.jsonl``, checkpoints (last and best), loss.svg and tasks.svg. Each
step is :func:`minillm.training.sft.train_step`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from minillm.data.batching import EncodedDataset, batch_stream
from minillm.data.examples import Example
from minillm.evaluation import evaluate
from minillm.optim import ScaledAdamW
from minillm.parallel import SINGLE, Single
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
                 world: Single = SINGLE, recompute: bool = False):
        self.model, self.tokenizer, self.config, self.state = model, tokenizer, config, state
        self.recompute = recompute
        self.optimizer = optimizer if optimizer is not None else ScaledAdamW.from_config(config)
        self.world = world
        self.stream = batch_stream(train_data, config.batch_size, config.seed, state.epoch,
                                   state.batch_in_epoch)
        self.eval_examples, self.eval_data = eval_examples, eval_data
        self.periodic_eval, self.verifiers, self.run_info = periodic_eval, verifiers, run_info

    def step(self) -> dict[str, Any]:
        """The next ``grad_accum`` micro-batches of each rank (all of them on every rank)."""
        micro = []
        for _ in range(self.config.grad_accum * self.world.size):
            batch, (self.state.epoch, self.state.batch_in_epoch) = next(self.stream)
            micro.append(batch)
        return train_step(self.model, self.optimizer, micro, self.state.step, self.config,
                          self.config.steps, world=self.world, recompute=self.recompute)

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
        """Periodic evaluations on the first ``periodic_eval`` examples; the final one on all."""
        if not self.eval_examples:
            return None
        n = None if kind == "final_eval" else self.periodic_eval
        examples, encoded = list(self.eval_examples), self.eval_data
        if n and n < len(encoded):
            examples = examples[:n]
            encoded = EncodedDataset(encoded.sources[:n], encoded.targets[:n], encoded.pad_id)
        return evaluate(self.model, self.tokenizer, examples, encoded, self.config.eval_batch_size,
                        self.config.max_new_tokens, self.verifiers, world=self.world)

    def eval_record(self, result: dict) -> dict[str, Any]:
        return {"loss": result["loss"], "perplexity": result["perplexity"],
                "exact_match": result["exact_match"], "n": result["n"],
                "per_task": {t: r["exact_match"] for t, r in result["per_task"].items()}}

    def eval_line(self, kind: str, result: dict) -> str:
        return (f"step {self.state.step}: eval loss {result['loss']:.4f}, "
                f"exact match {result['exact_match']:.3f}")

    def best_entry(self, result: dict) -> dict[str, Any]:
        return {"exact_match": result["exact_match"], "loss": result["loss"]}

    def is_better(self, entry: dict, best: dict) -> bool:
        """Higher exact match wins; a tie goes to the lower loss."""
        if entry["exact_match"] != best["exact_match"]:
            return entry["exact_match"] > best["exact_match"]
        return entry["loss"] < best["loss"]


def fit(model, tokenizer, train_data: EncodedDataset, config: TrainConfig, out_dir: str,
        eval_examples: Sequence[Example] | None = None, eval_data: EncodedDataset | None = None,
        periodic_eval: int | None = None, verifiers: dict | None = None,
        state: TrainState | None = None, optimizer: ScaledAdamW | None = None,
        run_info: dict | None = None, stop_after: int | None = None, progress: bool = True,
        plot: bool = True, log: Callable[[str], None] | None = None,
        world: Single = SINGLE, recompute: bool = False) -> dict[str, Any]:
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

    Returns {"step", "final_eval" (or None), "best", "stopped_early", "plots" ({"loss"/"tasks":
    the SVG file written})}.
    Raises TrainingDiverged on a NaN/inf loss, keeping the last checkpoint.
    """
    trainer = SFTTrainer(model, tokenizer, train_data, config, state or TrainState(), optimizer,
                         eval_examples, eval_data, periodic_eval, verifiers, run_info, world,
                         recompute)
    out = run(trainer, out_dir, fresh=state is None, stop_after=stop_after, progress=progress,
              plot=plot, log=log)
    return {k: out[k] for k in ("step", "final_eval", "best", "stopped_early", "plots")}
