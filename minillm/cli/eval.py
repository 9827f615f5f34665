"""``minillm eval``: loss, perplexity, BLEU, ROUGE and exact match of a model folder.

    minillm eval runs/sft                              # the built-in suite's held-out split
    minillm eval runs/sft --data test.jsonl --predictions preds.jsonl
    minillm eval runs/sft --num-beams 4 --max-new-tokens 48

Prints one JSON object: loss, perplexity, bleu (0-100), rouge1/rouge2/rougeL
(F-measure, 0-1), exact_match (0-1), overall and per task, and the decoding
settings used. The folder needs config.json, model.safetensors and tokenizer.json.
The work is :func:`minillm.workflows.evaluate` (``EvalSettings`` has a field per flag).
"""

from __future__ import annotations

import argparse
import json
import sys

from minillm.cli import finite, settings_from
from minillm.workflows import EvalSettings, evaluate


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="loss, perplexity, BLEU, ROUGE, exact match of a model on instruction data",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="a Hugging Face T5 folder with tokenizer.json")
    p.add_argument("--data", metavar="FILE.jsonl", default=None,
                   help="JSONL data (Alpaca or prompt/completion); default: the built-in suite's eval split")
    p.add_argument("--n", type=int, default=500, help="built-in suite: number of held-out examples")
    p.add_argument("--tasks", nargs="+", default=None, help="built-in suite: only these tasks")
    p.add_argument("--seed", type=int, default=0, help="built-in suite seed; sampling seed")
    p.add_argument("--predictions", metavar="FILE.jsonl", default=None,
                   help="write one JSON line per example: prompt, target, output, task")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-source-len", type=int, default=256)
    p.add_argument("--max-new-tokens", type=int, default=64, help="also the target truncation length")
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--length-penalty", type=finite, default=1.0)
    p.add_argument("--do-sample", action="store_true")
    p.add_argument("--temperature", type=finite, default=1.0)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=finite, default=1.0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate as the flags say (:func:`minillm.workflows.evaluate`); print the result as JSON."""
    result = evaluate(settings_from(EvalSettings, args))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
