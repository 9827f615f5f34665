"""``minillm rl``: tune a T5 with REINFORCE (RLOO, or GRPO) against a reward function.

    minillm rl runs/sft --out runs/rl                        # built-in suite, each task's verifier
    minillm rl runs/sft --out runs/rl --tasks sort_words --steps 150 --kl-coef 0.1
    minillm rl runs/sft --out runs/rl --data train.jsonl --reward rouge_l
    minillm rl runs/sft --out runs/rl --algo grpo --beta 0.04 --num-iterations 4
    minillm rl runs/sft --out runs/rl --data train.jsonl --reward myreward:score
    minillm rl --out runs/rl --resume                        # continue, bit for bit

DIR is the starting model (a Hugging Face T5 folder with tokenizer.json, e.g. an
SFT run folder); it is also the frozen reference of the KL penalty, copied into
``OUT/reference``. The run folder is that of ``minillm train`` (see
:mod:`minillm.runfolder`). The work is :func:`minillm.workflows.rl`
(``RLSettings`` has a field per flag); this module parses the flags and prints
the evaluations before and after. The REINFORCE flags are made from
:class:`minillm.training.rl_config.RLConfig`, where each setting is defined once.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from minillm.cli.flags import add_threads_flag, say, settings_from
from minillm.runfolder.checkpoint import SAVE_DTYPES
from minillm.training.rl_config import RLConfig, flag_settings
from minillm.workflows import RLSettings, format_policy_eval, rl
from minillm.workflows.rl_settings import DEFAULT_OUT


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``rl`` subcommand."""
    p = subparsers.add_parser(
        "rl", help="tune a T5 with REINFORCE (RLOO or GRPO) against a reward function",
        description="REINFORCE with a leave-one-out baseline: sample k outputs per prompt, score "
        "them, push up the log-probability of the better ones; a KL penalty keeps the policy near "
        "the starting model. --algo grpo: TRL's GRPO (group-normalised advantages, a per-token "
        "KL in the loss); --num-iterations: clipped updates that reuse each batch of samples.")
    p.add_argument("dir", metavar="DIR", nargs="?", default=None,
                   help="the starting Hugging Face T5 folder, with tokenizer.json (not needed "
                   "with --resume)")
    _data_flags(p.add_argument_group("data, reward and run folder"))
    _training_flags(p.add_argument_group("REINFORCE ([default])"))
    p.set_defaults(func=run)
    return p


def _data_flags(g) -> None:
    """The data, reward, model and run folder flags."""
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
    g.add_argument("--save-dtype", choices=SAVE_DTYPES, default=None,
                   help="store best/ in this dtype when the run stops (bfloat16: rounded to nearest "
                   "even from float32); the last checkpoint and reference/ keep --dtype, so --resume "
                   "continues exactly. Not saved with the run [--dtype]")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the policy, the frozen reference and the AdamW moments live; cuda "
                   "runs on a GPU through CuPy (the gpu extra). Not saved with the run: --resume "
                   "continues on the device given here [cpu]")
    add_threads_flag(g)
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (same settings)")
    g.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that already holds one")


def _training_flags(t) -> None:
    """The REINFORCE settings, a flag for each RLConfig field that has one (its help, choices
    and default from there): None by default, so that --resume can tell which were given."""
    hints = typing.get_type_hints(RLConfig)
    for f in flag_settings():
        t.add_argument(*(_flag(n) for n in (f.name, *f.metadata["aliases"])), dest=f.name,
                       help=_help(f), **_parse(hints[f.name], f.metadata["choices"]))
    t.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="checkpoint and stop at this step; continue later with --resume")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _help(f: dataclasses.Field) -> str:
    """The setting's meaning and its default: ``[0.0003]``, or what ``shown`` says."""
    shown = str(f.default) if f.metadata["shown"] is None else f.metadata["shown"]
    return f.metadata["help"] + (f" [{shown}]" if shown else "")


def _parse(hint, choices) -> dict:
    """How argparse reads a setting of type ``hint``: a switch for a bool, else its type."""
    if hint is bool:
        return {"action": "store_true", "default": None}
    kind = next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))  # int | None -> int
    return {"type": kind, "choices": choices}


def run(args: argparse.Namespace) -> int:
    """Tune as the flags say (:func:`minillm.workflows.rl`); print the before/after evaluation."""
    result = rl(settings_from(RLSettings, args), log=say)
    if result.initial_eval is not None:
        print("held-out evaluation at step 0 (the starting model):")
        print(format_policy_eval(result.initial_eval))
    if result.final_eval is not None:
        print(f"held-out evaluation at step {result.step}:")
        print(format_policy_eval(result.final_eval))
        print(f"reward {result.final_eval['reward']:.4f}")
    elif result.stopped_early:
        print(f"stopped at step {result.step} of {result.steps}; continue with "
              f"minillm rl --out {result.out} --resume")
    print(f"last checkpoint: step {result.step} -> {result.out}   ({result.seconds:.0f} s)")
    return 0
