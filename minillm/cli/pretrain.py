"""``minillm pretrain``: T5's span-corruption pretraining on raw text.

    minillm pretrain                                # the built-in corpus (the Python standard library)
    minillm pretrain --text book.txt web.jsonl --steps 5000 --out runs/pt
    minillm pretrain --out runs/pretrain --resume   # continue a stopped run, bit for bit
    minillm train --init runs/pretrain --data train.jsonl     # then fine-tune it

The run folder (``--out``, default runs/pretrain) is a Hugging Face folder plus
the trainer state (:mod:`minillm.runfolder`). The work is
:func:`minillm.workflows.pretrain.pretrain` (``PretrainSettings`` has a field per
flag); this module parses the flags and prints the held-out loss, the
checkpoints and the loss picture.
"""

from __future__ import annotations

import argparse

from minillm.cli.flags import add_threads_flag, finite, say, settings_from
from minillm.runfolder.checkpoint import SAVE_DTYPES
from minillm.workflows.presets import PRESETS, PRETRAIN_PRESET
from minillm.workflows.pretrain import (
    DEFAULT_OUT,
    INPUT_LENGTH,
    MEAN_SPAN_LENGTH,
    N_EVAL,
    NOISE_DENSITY,
    TRAINING,
    PretrainSettings,
    pretrain,
)
from minillm.workflows.pretrain_data import DEFAULT_VOCAB_SIZE


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``pretrain`` subcommand."""
    p = subparsers.add_parser(
        "pretrain", help="pretrain a T5 on raw text by span corruption; no arguments: the standard library",
        description="T5's span-corruption pretraining. With no arguments, trains a tokenizer in T5's "
        "layout and the 'pretrain' preset's T5 (4 heads of 32) on the docstrings of the running "
        "Python's standard library and its language reference, reporting the held-out loss.")
    _data_flags(p.add_argument_group("text, tokenizer and model"))
    _training_flags(p.add_argument_group("span corruption and training"))
    p.set_defaults(func=run)
    return p


def _data_flags(g) -> None:
    g.add_argument("--text", metavar="FILE", nargs="+", default=[],
                   help="training text: plain text (a document per paragraph) or JSONL with a 'text' "
                   "field (*.jsonl) (default: the built-in corpus, read from the running Python)")
    g.add_argument("--eval-text", metavar="FILE", nargs="+", default=[],
                   help="held-out text (default: 1 document in 10, by the sha256 of its text)")
    g.add_argument("--tokenizer", metavar="FILE", default=None,
                   help="a tokenizer.json with T5's sentinels to use (default: train one in T5's layout)")
    g.add_argument("--init", metavar="DIR", default=None,
                   help="continue pretraining a Hugging Face T5 folder (uses its tokenizer.json)")
    g.add_argument("--preset", default=PRETRAIN_PRESET,
                   help="the model's shape (default: %(default)s): " + ", ".join(PRESETS))
    g.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help="the run folder (default: %(default)s)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (same settings)")
    g.add_argument("--overwrite", action="store_true", help="start a new run in an --out that holds one")
    g.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="parameter dtype (default: float32)")
    g.add_argument("--save-dtype", choices=SAVE_DTYPES, default=None,
                   help="store best/ in this dtype when the run stops (not saved with the run)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the model lives; not saved with the run (default: %(default)s)")
    add_threads_flag(g)
    g.add_argument("--vocab-size", type=int, default=None,
                   help=f"the tokenizer to train, 100 sentinels included (default: {DEFAULT_VOCAB_SIZE})")


def _training_flags(t) -> None:
    t.add_argument("--input-length", type=int, default=None,
                   help=f"tokens of a corrupted input; the raw examples are longer "
                   f"(512 -> 568 at T5's noise) (default: {INPUT_LENGTH})")
    t.add_argument("--noise-density", type=finite, default=None,
                   help=f"fraction of the raw tokens corrupted (default: {NOISE_DENSITY})")
    t.add_argument("--mean-span-length", type=finite, default=None,
                   help=f"mean length of a corrupted span (default: {MEAN_SPAN_LENGTH})")
    t.add_argument("--n-eval", type=int, default=None,
                   help=f"held-out examples at each periodic evaluation; the final one takes all "
                   f"(default: {N_EVAL})")
    t.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default: {TRAINING['steps']})")
    t.add_argument("--batch-size", type=int, default=None,
                   help=f"examples per micro-batch, per rank (default: {TRAINING['batch_size']})")
    t.add_argument("--grad-accum", type=int, default=None,
                   help="micro-batches per step on each rank; under mpiexec -n N a step is grad_accum x N")
    t.add_argument("--lr", type=finite, default=None, help=f"peak learning rate (default: {TRAINING['lr']})")
    t.add_argument("--warmup-steps", type=int, default=None,
                   help=f"linear warmup steps (default: {TRAINING['warmup_steps']})")
    t.add_argument("--weight-decay", type=finite, default=None)
    t.add_argument("--position-bias-lr-scale", type=finite, default=None,
                   help="learning-rate multiplier of the relative position tables (default: the preset's)")
    t.add_argument("--dropout", type=finite, default=None, help="dropout rate (default: the preset's)")
    t.add_argument("--seed", type=int, default=None, help="seed of init, order and noise (default: 0)")
    t.add_argument("--eval-every", type=int, default=None,
                   help=f"held-out loss every this many steps (default: {TRAINING['eval_every']})")
    t.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="checkpoint and stop at this step; continue later with --resume")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--no-plot", action="store_true", help="do not write loss.svg")
    t.add_argument("--recompute", action="store_true",
                   help="recompute each block in the backward: less memory, the same gradient")


def run(args: argparse.Namespace) -> int:
    """Pretrain as the flags say; print the held-out loss and where the model is."""
    result = pretrain(settings_from(PretrainSettings, args), log=say)
    if result.final_eval is not None:
        e = result.final_eval
        print(f"held-out span-corruption loss at step {result.step}: {e['loss']:.4f} "
              f"(perplexity {e['perplexity']:.2f}, {e['n']} examples)")
    elif result.stopped_early:
        print(f"stopped at step {result.step} of {result.steps}; continue with "
              f"minillm pretrain --out {result.out} --resume")
    if result.best:
        print(f"best checkpoint: step {result.best['step']}, held-out loss {result.best['loss']:.4f} "
              f"-> {result.out}/best")
    print(f"last checkpoint: step {result.step} -> {result.out}   ({result.seconds:.0f} s)")
    if result.plots:
        print("; ".join(f"{k}: {v}" for k, v in result.plots.items()))
    return 0
