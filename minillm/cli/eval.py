"""``minillm eval``: loss, perplexity, BLEU, ROUGE and exact match of a model folder.

    minillm eval runs/sft                              # the built-in suite's held-out split
    minillm eval runs/sft --data test.jsonl --predictions preds.jsonl
    minillm eval runs/sft --num-beams 4 --max-new-tokens 48

Prints one JSON object: loss, perplexity, bleu (0-100), rouge1/rouge2/rougeL
(F-measure, 0-1), exact_match (0-1), overall and per task, and the decoding
settings used. The folder needs config.json, model.safetensors and tokenizer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


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
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--do-sample", action="store_true")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import numpy as np

    import minillm
    from minillm.cli import check_device
    from minillm.data.tokenizer import Tokenizer, check_vocab
    from minillm.evaluation import evaluate_model
    from minillm.storage.fileio import atomic_path

    check_device(args.device)
    tok_path = os.path.join(args.dir, "tokenizer.json")
    if not os.path.isdir(args.dir):
        raise FileNotFoundError(f"{args.dir}: not a folder")
    if not os.path.exists(tok_path):
        raise FileNotFoundError(f"{tok_path}: missing (minillm eval needs the folder's tokenizer)")
    if args.data is not None:
        from minillm.data import load_jsonl

        examples = load_jsonl(args.data)
        verifiers = None
    else:
        from minillm.data import tasks

        examples = tasks.builtin_dataset(args.n, seed=args.seed, split="eval", tasks=args.tasks)
        verifiers = {name: t.verify for name, t in tasks.TASKS.items()}
    model = minillm.from_pretrained(args.dir, dtype=args.dtype, device=args.device)
    tokenizer = Tokenizer.from_file(tok_path)
    check_vocab(tokenizer, model.config.vocab_size)
    gen = dict(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
               length_penalty=args.length_penalty, do_sample=args.do_sample)
    if args.do_sample:
        gen.update(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   rng=np.random.default_rng(args.seed))
    result = evaluate_model(model, tokenizer, examples, max_source_len=args.max_source_len,
                            max_target_len=args.max_new_tokens, batch_size=args.batch_size,
                            progress=not args.no_progress, verifiers=verifiers, **gen)
    outputs = result.pop("outputs")
    if args.predictions:
        with atomic_path(args.predictions) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for ex, out in zip(examples, outputs, strict=True):
                f.write(json.dumps({"prompt": ex.prompt, "target": ex.target, "output": out,
                                    "task": ex.task}, ensure_ascii=False) + "\n")
        result["predictions"] = args.predictions
    result["data"] = args.data or "builtin:eval"
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
