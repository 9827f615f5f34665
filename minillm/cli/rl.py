"""``minillm rl``: tune a T5 with REINFORCE (RLOO) against a reward function.

    minillm rl runs/sft --out runs/rl                        # built-in suite, each task's verifier
    minillm rl runs/sft --out runs/rl --tasks sort_words --steps 150 --kl-coef 0.1
    minillm rl runs/sft --out runs/rl --data train.jsonl --reward rouge_l
    minillm rl runs/sft --out runs/rl --data train.jsonl --reward myreward:score
    minillm rl --out runs/rl --resume                        # continue, bit for bit

DIR is the starting model (a Hugging Face T5 folder with tokenizer.json, e.g. an
SFT run folder); it is also the frozen reference of the KL penalty, copied into
``OUT/reference``. The run folder is that of ``minillm train`` (see
:mod:`minillm.training.checkpoint`); :mod:`minillm.training.reinforce` has the estimator, :mod:`minillm.evaluation.rewards`
the rewards. Everything is checked before the folder is touched.
"""

from __future__ import annotations

import argparse
import os
import time

DEFAULT_OUT = os.path.join("runs", "rl")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``rl`` subcommand."""
    from minillm.training.reinforce import BASELINES, RLConfig

    d = RLConfig()
    p = subparsers.add_parser(
        "rl", help="tune a T5 with REINFORCE (RLOO) against a reward function",
        description="REINFORCE with a leave-one-out baseline: sample k outputs per prompt, score "
        "them, push up the log-probability of the better ones; a KL penalty keeps the policy near "
        "the starting model.")
    # The REINFORCE settings default to None, so that --resume can tell which were given.
    p.add_argument("dir", metavar="DIR", nargs="?", default=None,
                   help="the starting Hugging Face T5 folder, with tokenizer.json (not needed "
                   "with --resume)")
    g = p.add_argument_group("data, reward and run folder")
    g.add_argument("--out", metavar="DIR2", default=DEFAULT_OUT, help=f"the run folder [{DEFAULT_OUT}]")
    g.add_argument("--data", metavar="FILE.jsonl",
                   help="prompts (and references) to train on, JSONL as for minillm train "
                   "(default: the built-in task suite)")
    g.add_argument("--eval-data", metavar="FILE.jsonl", default=None,
                   help="held-out prompts (default: the built-in eval split, or 5%% of --data)")
    g.add_argument("--tasks", default=None,
                   help="built-in suite only: comma-separated task names (default: all)")
    g.add_argument("--reward", default=None,
                   help="exact_match, bleu, rouge_l, verify (the built-in task verifiers), "
                   "task:NAME, or module:function taking (prompt, output, reference) -> float "
                   "[verify for the built-in suite; required with --data]")
    g.add_argument("--n-train", type=int, default=2000, help="built-in suite: training prompts [2000]")
    g.add_argument("--n-eval", type=int, default=200, help="held-out prompts evaluated [200]")
    g.add_argument("--max-source-len", type=int, default=64, help="prompt tokens kept [64]")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="parameter dtype [float32]")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the policy, the frozen reference and the AdamW moments live; cuda "
                   "runs on a GPU through CuPy (the gpu extra). Not saved with the run: --resume "
                   "continues on the device given here [cpu]")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (same settings)")
    g.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that already holds one")
    t = p.add_argument_group("REINFORCE ([default])")
    t.add_argument("--steps", type=int, help=f"optimizer steps [{d.steps}]")
    t.add_argument("--batch-size", type=int, help=f"prompts per step [{d.batch_size}]")
    t.add_argument("--k", type=int, help=f"samples per prompt [{d.k}]")
    t.add_argument("--baseline", choices=BASELINES,
                   help="rloo: mean reward of the prompt's other k-1 samples; ema: moving "
                   f"average of batch means; none [{d.baseline}]")
    t.add_argument("--ema-decay", type=float, help=f"for --baseline ema [{d.ema_decay}]")
    t.add_argument("--whiten", action="store_true", default=None,
                   help="normalise the advantages to mean 0, std 1 over each batch")
    t.add_argument("--kl-coef", type=float,
                   help=f"beta in reward - beta * sum_t log(pi/pi_ref), per sequence [{d.kl_coef}]")
    t.add_argument("--entropy-coef", type=float,
                   help=f"bonus on the mean per-token entropy [{d.entropy_coef}]")
    t.add_argument("--lr", type=float, help=f"peak learning rate, AdamW [{d.lr}]")
    t.add_argument("--warmup-steps", type=int, help=f"linear warmup [{d.warmup_steps}]")
    t.add_argument("--schedule", choices=("constant", "cosine", "linear"), help=f"[{d.schedule}]")
    t.add_argument("--weight-decay", type=float, help=f"[{d.weight_decay}]")
    t.add_argument("--max-grad-norm", type=float, help=f"clipping [{d.max_grad_norm}]")
    t.add_argument("--temperature", type=float,
                   help=f"sampling temperature; 1 samples the policy itself [{d.temperature}]")
    t.add_argument("--top-k", type=int, help=f"sampling top-k; 0: off [{d.top_k}]")
    t.add_argument("--top-p", type=float, help=f"sampling top-p; 1: off [{d.top_p}]")
    t.add_argument("--max-new-tokens", type=int, help=f"output tokens sampled [{d.max_new_tokens}]")
    t.add_argument("--seed", type=int, help=f"seed of the data, prompt order and sampling [{d.seed}]")
    t.add_argument("--eval-every", type=int,
                   help=f"evaluate every this many steps; 0: only at the end [{d.eval_every}]")
    t.add_argument("--save-every", type=int,
                   help="checkpoint every this many steps [with each evaluation]")
    t.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="checkpoint and stop at this step; continue later with --resume")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


SETTINGS = ("steps", "batch_size", "k", "baseline", "ema_decay", "whiten", "kl_coef", "entropy_coef",
            "lr", "warmup_steps", "schedule", "weight_decay", "max_grad_norm", "temperature", "top_k",
            "top_p", "max_new_tokens", "seed", "eval_every", "save_every")


# --------------------------------------------------------------------------- data


def _load_data(run: dict):
    """(train examples, held-out examples) for the run's data settings."""

    from minillm.data import load_jsonl, split_held_out

    if run["data"] is None:
        from minillm.data.tasks import builtin_dataset

        train = builtin_dataset(run["n_train"], seed=run["seed"] + 5, split="train", tasks=run["tasks"])
        held = builtin_dataset(run["n_eval"], seed=run["seed"] + 1, split="eval", tasks=run["tasks"])
        return train, held
    train = load_jsonl(run["data"])
    if not train:
        raise ValueError(f"{run['data']}: no examples")
    if run["eval_data"] is not None:
        held = load_jsonl(run["eval_data"])
    else:  # hold out 5% (1 to 500 examples) of --data, chosen by the seed
        train, held = split_held_out(train, run["seed"])
    return train, held[: run["n_eval"]]


def _check_reward(reward, examples) -> None:
    """The verify reward needs built-in tasks: say so before any training."""
    from minillm.data.tasks import TASKS

    if reward.name == "verify":
        bad = sorted({str(ex.task) for ex in examples if ex.task not in TASKS})
        if bad:
            raise ValueError(f"--reward verify scores built-in tasks only; the data has task(s) "
                             f"{', '.join(bad)} (choose exact_match, bleu, rouge_l or module:function)")


def _encode(examples, tokenizer, max_source_len: int):
    import warnings

    from minillm.data import encode_examples

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return encode_examples(examples, tokenizer, max_source_len, 64)[0]


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Check everything, start or resume the run, train, and print the before/after evaluation."""
    from minillm.cli import CLIError, check_device
    from minillm.cli.train import check_same_file, clear_run, file_digest, say
    from minillm.data.tokenizer import Tokenizer, check_vocab
    from minillm.evaluation.rewards import get_reward
    from minillm.model.t5 import T5
    from minillm.optim import AdamW
    from minillm.training import checkpoint as ckpt
    from minillm.training.reinforce import REFERENCE_DIR, RLConfig, RLState, fit_rl, format_policy_eval
    from minillm.training.sft import TrainingDiverged

    t0 = time.perf_counter()
    out = args.out
    for name in ("n_train", "n_eval", "stop_after"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if args.max_source_len < 2:
        raise ValueError(f"--max-source-len must be at least 2, got {args.max_source_len}")
    if args.resume and args.overwrite:
        raise CLIError("--resume and --overwrite contradict each other")
    check_device(args.device)

    if args.resume:
        if not ckpt.has_checkpoint(out):
            raise FileNotFoundError(f"{out}: no checkpoint to resume (trainer_state.json missing)")
        state_json = ckpt.read_state(out)
        if state_json.get("kind") != "rl":
            raise CLIError(f"{out} holds a minillm train run, not an rl run")
        run_info = state_json["run"]
        cfg = RLConfig.from_dict(state_json["rl_config"])
        ignored = [f"--{n.replace('_', '-')}" for n in SETTINGS if n != "steps" and
                   getattr(args, n) is not None]
        ignored += [f"--{n.replace('_', '-')}" for n in ("data", "eval_data", "tasks", "reward")
                    if getattr(args, n) is not None]
        if ignored:
            say(f"minillm rl: --resume continues with the run's own settings; "
                 f"ignoring {', '.join(ignored)}")
        if args.steps is not None:
            cfg = RLConfig.from_dict({**cfg.to_dict(), "steps": args.steps})
        check_same_file(run_info.get("data"), run_info.get("data_sha256"), "--data")
        check_same_file(run_info.get("eval_data"), run_info.get("eval_data_sha256"), "--eval-data")
        train_ex, eval_ex = _load_data(run_info)
        reward = get_reward(run_info["reward"])
        policy, tokenizer, opt_state, _ = ckpt.load_checkpoint(out, device=args.device)
        reference = T5.from_pretrained(os.path.join(out, REFERENCE_DIR), dtype=str(policy.dtype),
                                       device=args.device)
        optimizer = AdamW(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                          weight_decay=cfg.weight_decay)
        optimizer.load_state_dict(opt_state)
        state = RLState(step=state_json["step"], epoch=state_json["epoch"],
                        batch_in_epoch=state_json["batch_in_epoch"],
                        rng_state=state_json["rng_state"], ema=state_json.get("ema"),
                        best=state_json.get("best"))
        if state.step >= cfg.steps:
            raise CLIError(f"{out}: the run already reached step {state.step} of {cfg.steps}; "
                           "pass a larger --steps to train further")
        say(f"resuming {out} at step {state.step} of {cfg.steps}")
    else:
        if args.dir is None:
            raise CLIError("give the starting model folder DIR (or --resume)")
        if not os.path.isdir(args.dir):
            raise FileNotFoundError(f"{args.dir}: not a folder (DIR is a Hugging Face T5 folder)")
        tok_path = os.path.join(args.dir, ckpt.TOKENIZER_NAME)
        if not os.path.exists(tok_path):
            raise FileNotFoundError(f"{tok_path}: missing (DIR needs the model's tokenizer.json)")
        if ckpt.has_checkpoint(out) and not args.overwrite:
            raise CLIError(f"{out} already holds a run; pass --resume to continue it, "
                           "--overwrite to start over, or another --out")
        if os.path.abspath(out) == os.path.abspath(args.dir):
            raise CLIError("--out must differ from DIR (DIR is the frozen reference)")
        if args.data is None and args.reward is None:
            args.reward = "verify"
        if args.reward is None:
            raise CLIError("--reward is required with --data (exact_match, bleu, rouge_l, verify, "
                           "task:NAME or module:function)")
        if args.data is not None and args.tasks is not None:
            raise CLIError("--tasks selects built-in tasks; it does not apply to --data")
        cfg = RLConfig(**{n: getattr(args, n) for n in SETTINGS if getattr(args, n) is not None})
        reward = get_reward(args.reward)
        tasks = None
        if args.tasks is not None:
            from minillm.data.tasks import resolve_tasks

            tasks = resolve_tasks([t.strip() for t in args.tasks.split(",") if t.strip()])
        run_info = {
            "start": os.path.abspath(args.dir),
            "data": os.path.abspath(args.data) if args.data else None,
            "eval_data": os.path.abspath(args.eval_data) if args.eval_data else None,
            "tasks": tasks, "reward": args.reward, "n_train": args.n_train, "n_eval": args.n_eval,
            "seed": cfg.seed, "max_source_len": args.max_source_len,
        }
        for key in ("data", "eval_data"):
            if run_info[key] and not os.path.isfile(run_info[key]):
                raise FileNotFoundError(f"{getattr(args, key)}: no such file "
                                        f"(--{key.replace('_', '-')})")
            run_info[f"{key}_sha256"] = file_digest(run_info[key]) if run_info[key] else None
        train_ex, eval_ex = _load_data(run_info)
        tokenizer = Tokenizer.from_file(tok_path)
        policy = T5.from_pretrained(args.dir, dtype=args.dtype, device=args.device)
        check_vocab(tokenizer, policy.config.vocab_size)
        reference = T5.from_pretrained(args.dir, dtype=args.dtype, device=args.device)
        optimizer, state = None, None
    _check_reward(reward, list(train_ex) + list(eval_ex))
    train_enc = _encode(train_ex, tokenizer, run_info["max_source_len"])
    eval_enc = _encode(eval_ex, tokenizer, run_info["max_source_len"]) if eval_ex else None
    if not args.resume:
        if args.overwrite and os.path.isdir(out):
            import shutil

            clear_run(out)
            if os.path.isdir(os.path.join(out, REFERENCE_DIR)):
                shutil.rmtree(os.path.join(out, REFERENCE_DIR))
        say(f"REINFORCE ({cfg.baseline} baseline, kl_coef {cfg.kl_coef}) of {args.dir} with reward "
             f"{reward.name!r}: {len(train_ex)} training and {len(eval_ex)} held-out prompts; "
             f"{cfg.steps} steps of {cfg.batch_size} prompts x {cfg.k} samples; run folder {out}")
    try:
        result = fit_rl(policy, reference, tokenizer, reward, train_ex, train_enc, cfg, out,
                        eval_examples=eval_ex, eval_data=eval_enc, state=state, optimizer=optimizer,
                        run_info=run_info, stop_after=args.stop_after,
                        progress=not args.no_progress, log=say)
    except TrainingDiverged as e:
        raise CLIError(str(e)) from None
    wall = time.perf_counter() - t0
    if result["initial_eval"] is not None:
        print("held-out evaluation at step 0 (the starting model):")
        print(format_policy_eval(result["initial_eval"]))
    if result["final_eval"] is not None:
        print(f"held-out evaluation at step {result['step']}:")
        print(format_policy_eval(result["final_eval"]))
        print(f"reward {result['final_eval']['reward']:.4f}")
    elif result["stopped_early"]:
        print(f"stopped at step {result['step']} of {cfg.steps}; continue with "
              f"minillm rl --out {out} --resume")
    print(f"last checkpoint: step {result['step']} -> {out}   ({wall:.0f} s)")
    return 0
