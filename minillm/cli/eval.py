"""``minillm eval``: loss, perplexity, BLEU, ROUGE and exact match of a model folder.

    minillm eval runs/sft                              # the run's own held-out prompts
    minillm eval runs/sft/best --tasks qa              # its best model, the qa ones of them
    minillm eval runs/sft --data test.jsonl --predictions preds.jsonl
    minillm eval runs/sft --num-beams 4 --max-new-tokens 48

Prints one JSON object: loss, perplexity, bleu (0-100), rouge1/rouge2/rougeL
(F-measure, 0-1), exact_match (0-1), overall and per task, the decoding
settings used, and what was evaluated ("data", "n", "run"). For a run folder of
``minillm train`` (or its best/) the defaults are the run's: its held-out
examples, length limits, batch size and dtype, so a finished run prints the
exact match its training ended with. The folder needs config.json,
model.safetensors and tokenizer.json. The work is :func:`minillm.workflows.evaluate`
(``EvalSettings`` has a field per flag).
"""

from __future__ import annotations

import argparse
import json
import sys

from minillm.cli.flags import add_threads_flag, finite, settings_from
from minillm.workflows import EvalSettings, evaluate
from minillm.workflows.evaluate import PLAIN

RUNS = "the run's for a run folder, else "  # the help of a default a run folder sets


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="loss, perplexity, BLEU, ROUGE, exact match of a model on instruction data",
        description=__doc__.split("\n\n")[0])
    p.add_argument("dir", metavar="DIR", help="a Hugging Face T5 folder with tokenizer.json "
                   "(a minillm run folder, or its best/, evaluates the run's held-out examples)")
    p.add_argument("--data", metavar="FILE.jsonl", default=None,
                   help="JSONL data (Alpaca or prompt/completion) (default: the run's held-out "
                   "examples for a run folder, else the built-in suite's eval split)")
    p.add_argument("--n", type=int, default=None,
                   help=f"built-in suite: number of held-out examples (default: {RUNS}{PLAIN['n']})")
    p.add_argument("--tasks", nargs="+", default=None,
                   help="only these built-in tasks (of the run's held-out examples, for a run folder)")
    p.add_argument("--seed", type=int, default=None,
                   help=f"built-in suite seed; sampling seed (default: {RUNS}{PLAIN['seed']})")
    p.add_argument("--predictions", metavar="FILE.jsonl", default=None,
                   help="write one JSON line per example: prompt, target, output, task")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"(default: {RUNS}{PLAIN['batch_size']})")
    p.add_argument("--max-source-len", type=int, default=None,
                   help=f"prompt tokens kept (default: {RUNS}{PLAIN['max_source_len']})")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="output tokens generated; given, also the target truncation length "
                   f"(default: {RUNS}{PLAIN['max_new_tokens']})")
    p.add_argument("--num-beams", type=int, default=1, help="(default: %(default)s)")
    p.add_argument("--length-penalty", type=finite, default=1.0, help="(default: %(default)s)")
    p.add_argument("--do-sample", action="store_true")
    p.add_argument("--temperature", type=finite, default=1.0, help="(default: %(default)s)")
    p.add_argument("--top-k", type=int, default=50, help="(default: %(default)s)")
    p.add_argument("--top-p", type=finite, default=1.0, help="(default: %(default)s)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help=f"(default: {RUNS}{PLAIN['dtype']})")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="(default: %(default)s)")
    add_threads_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate as the flags say (:func:`minillm.workflows.evaluate`); print the result as JSON."""
    result = evaluate(settings_from(EvalSettings, args))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
