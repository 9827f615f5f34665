"""``minillm train``: supervised fine-tuning (SFT) of a T5 on instruction-output pairs.

    minillm train                                   # the "small" preset on the built-in suite
    minillm train --preset tiny --steps 50 --out runs/tiny
    minillm train --data train.jsonl --eval-data eval.jsonl --epochs 3
    minillm train --init path/to/flan-t5-small --data train.jsonl --lr 3e-4
    minillm train --out runs/sft --resume           # continue a stopped run, bit for bit

The run folder (``--out``, default runs/sft) is a Hugging Face folder plus the
trainer state; see :mod:`minillm.training.checkpoint`. Everything is checked (data, preset,
vocabulary, settings) before the folder is touched, so bad input never damages it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from typing import Any

DEFAULT_OUT = os.path.join("runs", "sft")
DTYPES = ("float32", "float64")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand."""
    from minillm.workflows.presets import DEFAULT_PRESET, PRESETS

    p = subparsers.add_parser(
        "train",
        help="fine-tune a T5 on instruction data (SFT); no arguments: the built-in suite",
        description="Supervised fine-tuning on instruction-output pairs. With no arguments, "
        f"trains the {DEFAULT_PRESET!r} preset on the built-in task suite and reports the "
        "held-out exact match per task.",
    )
    g = p.add_argument_group("data and model")
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
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the model, its gradients and the AdamW moments live; cuda runs on a "
                   "GPU through CuPy (the gpu extra). Not saved with the run: --resume continues on "
                   "the device given here (a GPU agrees with the CPU to float rounding, not bit "
                   "for bit) (default: %(default)s)")
    g.add_argument("--vocab-size", type=int, default=None,
                   help="tokenizer vocabulary to train (ignored with --init) (default: the preset's)")
    g.add_argument("--n-train", type=int, default=None,
                   help="built-in suite: training examples to generate (default: the preset's)")
    g.add_argument("--n-eval", type=int, default=None,
                   help="held-out examples for the final evaluation (default: the preset's)")
    t = p.add_argument_group("training (defaults: the preset's)")
    t.add_argument("--steps", type=int, default=None, help="optimizer steps")
    t.add_argument("--epochs", type=float, default=None,
                   help="train for this many passes over the data instead of --steps")
    t.add_argument("--batch-size", type=int, default=None, help="examples per micro-batch")
    t.add_argument("--grad-accum", type=int, default=None,
                   help="micro-batches per optimizer step (gradient accumulation)")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW)")
    t.add_argument("--warmup-steps", type=int, default=None, help="linear warmup steps")
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--position-bias-lr-scale", type=float, default=None,
                   help="learning-rate multiplier of the relative position tables")
    t.add_argument("--dropout", type=float, default=None, help="dropout rate of a new model")
    t.add_argument("--seed", type=int, default=None, help="seed of data, init and dropout (default: 0)")
    t.add_argument("--eval-every", type=int, default=None,
                   help="evaluate every this many steps (0: only at the end)")
    t.add_argument("--max-source-len", type=int, default=None, help="prompt tokens kept")
    t.add_argument("--max-target-len", type=int, default=None, help="output tokens kept")
    t.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="checkpoint and stop at this step (the schedule still spans --steps); "
                   "continue later with --resume")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--no-plot", action="store_true", help="do not write loss.png")
    p.set_defaults(func=run)
    return p


# --------------------------------------------------------------------------- checks


def _positive(args, names: tuple[str, ...]) -> None:
    for name in names:
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")


def _check_args(args) -> None:
    from minillm.cli import CLIError

    _positive(args, ("steps", "batch_size", "grad_accum", "vocab_size", "n_train", "n_eval",
                     "stop_after"))
    if args.epochs is not None and not args.epochs > 0:
        raise ValueError(f"--epochs must be positive, got {args.epochs}")
    if args.epochs is not None and args.steps is not None:
        raise CLIError("give --steps or --epochs, not both")
    for name in ("max_source_len", "max_target_len"):
        v = getattr(args, name)
        if v is not None and v < 2:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 2, got {v}")
    for name in ("eval_every", "warmup_steps", "seed"):
        v = getattr(args, name)
        if v is not None and v < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be non-negative, got {v}")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.resume and args.overwrite:
        raise CLIError("--resume and --overwrite contradict each other")


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def _load_data(run: dict[str, Any]):
    """(train examples, eval examples, verifiers) for the run's data settings."""

    from minillm.data import load_jsonl, split_held_out

    if run["data"] is None:
        from minillm.data.tasks import TASKS, builtin_dataset

        train = builtin_dataset(run["n_train"], seed=run["seed"], split="train")
        held = builtin_dataset(run["n_eval"], seed=run["seed"] + 1, split="eval")
        verifiers = {name: task.verify for name, task in TASKS.items()}
        return train, held, verifiers
    train = load_jsonl(run["data"])
    if run["eval_data"] is not None:
        held = load_jsonl(run["eval_data"])
    else:  # hold out 5% (1 to 500 examples) of --data, chosen by the seed
        train, held = split_held_out(train, run["seed"])
    held = held[: run["n_eval"]] if run["n_eval"] else held
    return train, held, None


def check_same_file(path: str | None, digest: str | None, flag: str) -> None:
    from minillm.cli import CLIError

    if path is None:
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing ({flag} of the run being resumed)")
    if digest and file_digest(path) != digest:
        raise CLIError(f"{path} changed since the run started ({flag}); "
                       "resuming would not continue the same run")


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Check everything, build or resume the run, train, and print the final evaluation."""
    from minillm.cli import CLIError, check_device
    from minillm.optim import ScaledAdamW
    from minillm.training import checkpoint as ckpt
    from minillm.training.sft import (
        TrainConfig,
        TrainingDiverged,
        TrainState,
        fit,
        format_eval,
    )
    from minillm.workflows.presets import get_preset

    t0 = time.perf_counter()
    _check_args(args)
    check_device(args.device)
    out = args.out

    if args.resume:
        if not ckpt.has_checkpoint(out):
            raise FileNotFoundError(f"{out}: no checkpoint to resume (trainer_state.json missing)")
        state_json = ckpt.read_state(out)
        run_info = state_json["run"]
        cfg = TrainConfig.from_dict(state_json["train_config"])
        ignored = [f"--{n.replace('_', '-')}" for n in (
            "data", "eval_data", "init", "dtype", "vocab_size", "n_train", "n_eval", "batch_size",
            "grad_accum", "lr", "warmup_steps", "weight_decay", "position_bias_lr_scale", "dropout",
            "seed", "eval_every",
            "max_source_len", "max_target_len") if getattr(args, n) is not None]
        if ignored:
            say(f"minillm train: --resume continues with the run's own settings; "
                 f"ignoring {', '.join(ignored)}")
        if args.epochs is not None:
            raise CLIError("--resume takes --steps to extend a run, not --epochs")
        if args.steps is not None:
            cfg = TrainConfig.from_dict({**cfg.to_dict(), "steps": args.steps})
        check_same_file(run_info.get("data"), run_info.get("data_sha256"), "--data")
        check_same_file(run_info.get("eval_data"), run_info.get("eval_data_sha256"), "--eval-data")
        train_ex, eval_ex, verifiers = _load_data(run_info)
        model, tokenizer, opt_state, _ = ckpt.load_checkpoint(out, device=args.device)
        optimizer = ScaledAdamW.from_config(cfg)
        optimizer.load_state_dict(opt_state)
        state = TrainState(step=state_json["step"], epoch=state_json["epoch"],
                           batch_in_epoch=state_json["batch_in_epoch"],
                           rng_state=state_json["rng_state"], best=state_json.get("best"))
        if state.step >= cfg.steps:
            raise CLIError(f"{out}: the run already reached step {state.step} of {cfg.steps}; "
                           "pass a larger --steps to train further")
        say(f"resuming {out} at step {state.step} of {cfg.steps}")
    else:
        preset = get_preset(args.preset)
        if ckpt.has_checkpoint(out) and not args.overwrite:
            raise CLIError(f"{out} already holds a run; pass --resume to continue it, "
                           "--overwrite to start over, or another --out")
        seed = 0 if args.seed is None else args.seed
        run_info = {
            "preset": preset.name,
            "data": os.path.abspath(args.data) if args.data else None,
            "eval_data": os.path.abspath(args.eval_data) if args.eval_data else None,
            "init": os.path.abspath(args.init) if args.init else None,
            "n_train": args.n_train or preset.n_train,
            "n_eval": args.n_eval or (preset.n_eval if args.data is None else None),
            "n_eval_periodic": preset.n_eval_periodic,
            "seed": seed,
            "max_source_len": args.max_source_len or preset.max_source_len,
            "max_target_len": args.max_target_len or preset.max_target_len,
        }
        for key in ("data", "eval_data"):
            if run_info[key] and not os.path.isfile(run_info[key]):
                raise FileNotFoundError(f"{getattr(args, key)}: no such file (--{key.replace('_', '-')})")
            run_info[f"{key}_sha256"] = file_digest(run_info[key]) if run_info[key] else None
        train_ex, eval_ex, verifiers = _load_data(run_info)
        training = dict(preset.training, seed=seed)
        for flag in ("steps", "batch_size", "grad_accum", "lr", "warmup_steps", "weight_decay",
                     "position_bias_lr_scale", "eval_every"):
            if getattr(args, flag) is not None:
                training[flag] = getattr(args, flag)
        if args.epochs is not None:
            from minillm.data import num_batches

            per_epoch = num_batches(len(train_ex), training["batch_size"])
            training["steps"] = max(1, round(args.epochs * per_epoch / training.get("grad_accum", 1)))
        cfg = TrainConfig(**training)
        dtype = args.dtype or "float32"
        model, tokenizer = _build_model(args, preset, run_info, train_ex, seed, dtype)
        optimizer, state = None, None
    train_enc, _ = _encode(train_ex, tokenizer, run_info, "training")
    eval_enc = _encode(eval_ex, tokenizer, run_info, "held-out")[0] if eval_ex else None
    if not args.resume:
        if args.overwrite and os.path.isdir(out):
            clear_run(out)
        say(f"{model.num_parameters():,} parameters ({_describe(model.config)}), "
             f"vocab {model.config.vocab_size}; {len(train_ex)} training and {len(eval_ex)} "
             f"held-out examples; {cfg.steps} steps of {cfg.batch_size * cfg.grad_accum} "
             f"examples; run folder {out}")
    try:
        result = fit(model, tokenizer, train_enc, cfg, out, eval_examples=eval_ex,
                     eval_data=eval_enc, periodic_eval=run_info.get("n_eval_periodic"),
                     verifiers=verifiers, state=state, optimizer=optimizer, run_info=run_info,
                     stop_after=args.stop_after, progress=not args.no_progress,
                     plot=not args.no_plot, log=say)
    except TrainingDiverged as e:
        raise CLIError(str(e)) from None
    wall = time.perf_counter() - t0
    if result["final_eval"] is not None:
        print(f"held-out evaluation at step {result['step']} (greedy decoding):")
        print(format_eval(result["final_eval"]))
        print(f"exact_match {result['final_eval']['exact_match']:.4f}")
    elif result["stopped_early"]:
        print(f"stopped at step {result['step']} of {cfg.steps}; continue with "
              f"minillm train --out {out} --resume")
    best = result["best"]
    if best:
        print(f"best checkpoint: step {best['step']}, exact match {best['exact_match']:.4f} "
              f"-> {os.path.join(out, ckpt.BEST_DIR)}")
    print(f"last checkpoint: step {result['step']} -> {out}   ({wall:.0f} s)")
    return 0


def _describe(c) -> str:
    return (f"d_model {c.d_model}, {c.num_heads} heads x {c.d_kv}, d_ff {c.d_ff}, "
            f"{c.num_layers}+{c.num_decoder_layers} layers, {c.feed_forward_proj}")


def _encode(examples, tokenizer, run_info, what):
    import warnings

    from minillm.data import encode_examples

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        enc, stats = encode_examples(examples, tokenizer, run_info["max_source_len"],
                                     run_info["max_target_len"])
    if stats.truncated_sources or stats.truncated_targets:
        say(f"{what} data: {stats.summary()} (--max-source-len {run_info['max_source_len']}, "
             f"--max-target-len {run_info['max_target_len']})")
    return enc, stats


def _build_model(args, preset, run_info, train_ex, seed, dtype):
    """(model, tokenizer): from --init, or a new model with a tokenizer trained on the data."""
    import numpy as np

    from minillm.data.tokenizer import Tokenizer, check_vocab
    from minillm.model.t5 import T5

    if args.init:
        folder = args.init
        tok_path = os.path.join(folder, "tokenizer.json")
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: not a folder (--init wants a Hugging Face T5 folder)")
        if not os.path.exists(tok_path):
            raise FileNotFoundError(f"{tok_path}: missing (--init needs the model's tokenizer.json)")
        tokenizer = Tokenizer.from_file(tok_path)
        model = T5.from_pretrained(folder, dtype=dtype, device=args.device)
        if args.dropout is not None:
            model = T5(model.config.replace(dropout_rate=args.dropout), model.params)
        check_vocab(tokenizer, model.config.vocab_size)
        return model, tokenizer
    from minillm.config import T5Config

    vocab = args.vocab_size or preset.vocab_size
    if run_info["data"] is None:
        from minillm.data.tasks import TASKS

        phrasings = [p for t in TASKS.values() for p in t.instructions + t.heldout_instructions]
    else:
        phrasings = []
    texts = [ex.prompt for ex in train_ex] + [ex.target for ex in train_ex] + phrasings
    tokenizer = Tokenizer.train(texts, vocab_size=vocab)
    model_cfg = dict(preset.model)
    if args.dropout is not None:
        model_cfg["dropout_rate"] = args.dropout
    config = T5Config(vocab_size=tokenizer.vocab_size, **model_cfg)
    check_vocab(tokenizer, config.vocab_size)
    model = T5.init(config, np.random.default_rng([seed, 0]), dtype=dtype, device=args.device)
    return model, tokenizer


def clear_run(out: str) -> None:
    """Remove what a previous run wrote in ``out`` (only the files a run writes)."""
    import shutil

    from minillm.training import checkpoint as ckpt
    from minillm.training.sft import METRICS_NAME, PLOT_NAME

    names = ("config.json", "model.safetensors", ckpt.GENERATION_CONFIG_NAME,
             ckpt.TOKENIZER_NAME, "tokenizer_config.json", ckpt.OPTIMIZER_NAME, ckpt.STATE_NAME,
             METRICS_NAME, PLOT_NAME)
    for name in names:
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.remove(path)
    for sub in (ckpt.BEST_DIR, ckpt.STAGING):
        if os.path.isdir(os.path.join(out, sub)):
            shutil.rmtree(os.path.join(out, sub))
