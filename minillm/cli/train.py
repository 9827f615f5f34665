"""``minillm train``: supervised fine-tuning (SFT) of a T5 on instruction-output pairs.

    minillm train                                   # the "small" preset on the built-in suite
    minillm train --preset tiny --steps 50 --out runs/tiny
    minillm train --data train.jsonl --eval-data eval.jsonl   # budget and early stopping: docs/own-data.md
    minillm train --data train.jsonl --epochs 3 --early-stopping-patience 0
    minillm train --init path/to/flan-t5-small --data train.jsonl --lr 3e-4
    minillm train --out runs/sft --resume           # continue a stopped run, bit for bit

The run folder (``--out``, default runs/sft) is a Hugging Face folder plus the
trainer state; see :mod:`minillm.runfolder`. The work is
:func:`minillm.workflows.train` (``TrainSettings`` has a field per flag); this
module parses the flags and prints the final evaluation, the checkpoints and the
pictures (loss.svg, tasks.svg).
"""

from __future__ import annotations

import argparse

from minillm.cli.flags import add_threads_flag, finite, say, settings_from
from minillm.runfolder.checkpoint import SAVE_DTYPES
from minillm.workflows import TrainSettings, format_eval, train
from minillm.workflows.own_data import (
    EPOCHS,
    MAX_EVAL_EVERY,
    MAX_STEPS,
    METRICS,
    MIN_EVAL_EVERY,
    MIN_STEPS,
    PATIENCE,
)
from minillm.workflows.presets import DEFAULT_PRESET, PRESETS
from minillm.workflows.train import DEFAULT_OUT

DTYPES = ("float32", "float64")
PICTURES = {"loss": "loss curve", "tasks": "per-task exact match"}  # what each SVG shows


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="fine-tune a T5 on instruction data (SFT); no arguments: the built-in suite",
        description="Supervised fine-tuning on instruction-output pairs. With no arguments, "
        f"trains the {DEFAULT_PRESET!r} preset on the built-in task suite and reports the "
        "held-out exact match per task.",
    )
    _data_flags(p.add_argument_group("data and model"))
    _training_flags(p.add_argument_group("training (defaults: the preset's)"))
    p.set_defaults(func=run)
    return p


def _data_flags(g) -> None:
    """The data, model and run folder flags."""
    g.add_argument("--data", metavar="FILE.jsonl", default=None,
                   help="training data, JSONL: Alpaca (instruction, input, output) or "
                   "prompt/completion (default: the built-in task suite)")
    g.add_argument("--eval-data", metavar="FILE.jsonl", default=None,
                   help="held-out data (default: the built-in suite's eval split, or 5%% of --data)")
    g.add_argument("--init", metavar="DIR", default=None,
                   help="fine-tune an existing Hugging Face T5 folder (uses its tokenizer.json)")
    g.add_argument("--preset", default=DEFAULT_PRESET,
                   help="model size and training recipe (default: %(default)s): " + "; ".join(
                       f"{p.name}: {p.description}".replace("%", "%%") for p in PRESETS.values()))
    g.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                   help="the run folder (default: %(default)s)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (same settings)")
    g.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that already holds one")
    g.add_argument("--dtype", choices=DTYPES, default=None, help="parameter dtype (default: float32)")
    g.add_argument("--save-dtype", choices=SAVE_DTYPES, default=None,
                   help="store best/ in this dtype when the run stops (bfloat16: rounded to nearest "
                   "even from float32), for transformers and the Hub; the run still trains in --dtype "
                   "and its last checkpoint keeps it, so --resume continues exactly. Not saved with "
                   "the run (default: --dtype)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the model, its gradients and the AdamW moments live; cuda runs on a "
                   "GPU through CuPy (the gpu extra). Not saved with the run: --resume continues on "
                   "the device given here (a GPU agrees with the CPU to float rounding, not bit "
                   "for bit) (default: %(default)s)")
    add_threads_flag(g)
    g.add_argument("--vocab-size", type=int, default=None,
                   help="tokenizer vocabulary to train (ignored with --init) (default: the preset's)")
    g.add_argument("--n-train", type=int, default=None,
                   help="built-in suite: training examples to generate (default: the preset's)")
    g.add_argument("--n-eval", type=int, default=None,
                   help="held-out examples for the final evaluation (default: the preset's)")


def _training_flags(t) -> None:
    """The trainer's settings (None by default: the preset's)."""
    t.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps (default: the preset's; with --data, {EPOCHS} epochs within "
                   f"{MIN_STEPS}-{MAX_STEPS} steps)")
    t.add_argument("--epochs", type=finite, default=None,
                   help="train for this many passes over the data instead of --steps")
    t.add_argument("--batch-size", type=int, default=None,
                   help="examples per micro-batch (per rank under mpiexec)")
    t.add_argument("--grad-accum", type=int, default=None,
                   help="micro-batches per optimizer step on each rank (gradient accumulation); "
                   "under mpiexec -n N a step is grad_accum x N micro-batches")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW)")
    t.add_argument("--warmup-steps", type=int, default=None, help="linear warmup steps")
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--position-bias-lr-scale", type=float, default=None,
                   help="learning-rate multiplier of the relative position tables")
    t.add_argument("--dropout", type=float, default=None, help="dropout rate of a new model")
    t.add_argument("--seed", type=int, default=None, help="seed of data, init and dropout (default: 0)")
    t.add_argument("--eval-every", type=int, default=None,
                   help="evaluate every this many steps (0: only at the end); default: the preset's, "
                   f"with --data an epoch within {MIN_EVAL_EVERY}-{MAX_EVAL_EVERY} steps")
    t.add_argument("--early-stopping-patience", type=int, default=None, metavar="N",
                   help="stop once N evaluations in a row have not beaten the best one (0: never); "
                   f"default: {PATIENCE} with --data, else never")
    t.add_argument("--best-metric", choices=METRICS, default=None,
                   help="the held-out metric that picks best/ and early stopping (transformers' "
                   "metric_for_best_model): loss (lower) or exact_match (higher; every periodic "
                   "evaluation then decodes); default: loss with --data, else exact_match")
    t.add_argument("--max-source-len", type=int, default=None, help="prompt tokens kept")
    t.add_argument("--max-target-len", type=int, default=None, help="output tokens kept")
    t.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="checkpoint and stop at this step (the schedule still spans --steps); "
                   "continue later with --resume")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--no-plot", action="store_true",
                   help="do not write the pictures (loss.svg, tasks.svg in the run folder)")
    t.add_argument("--recompute", action="store_true",
                   help="keep only each block's input, recompute it in backward: less memory, "
                   "about a third more compute (the same gradient). Not saved with the run: "
                   "--resume takes it or not")


def run(args: argparse.Namespace) -> int:
    """Train as the flags say (:func:`minillm.workflows.train`); print the final evaluation."""
    result = train(settings_from(TrainSettings, args), log=say)
    if result.final_eval is not None:
        of = f"of best/, step {result.best['step']}" if result.early_stop else f"at step {result.step}"
        print(f"held-out evaluation {of} (greedy decoding):")
        print(format_eval(result.final_eval))
        print(f"exact_match {result.final_eval['exact_match']:.4f}")
    elif result.stopped_early:
        print(f"stopped at step {result.step} of {result.steps}; continue with "
              f"minillm train --out {result.out} --resume")
    if result.early_stop:
        print(f"early stopping ended the run at step {result.step} of {result.steps}")
    if result.best:
        figures = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in result.best.items()
                            if k != "step")
        print(f"best checkpoint: step {result.best['step']}, {figures} -> {result.best_dir}")
    print(f"last checkpoint: step {result.step} -> {result.out}   ({result.seconds:.0f} s)")
    pictures = [f"{PICTURES[k]}: {path}" for k, path in result.plots.items()]
    if pictures:
        print("; ".join(pictures))
    return 0
