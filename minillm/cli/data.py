"""``minillm data``: write examples of the built-in task suite as JSONL.

minillm data --task all --n 1000 --out train.jsonl
minillm data --task number_to_french --n 5 --split eval      # to stdout
minillm data --list                                          # tasks, one sample each
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``data`` subcommand."""
    p = subparsers.add_parser(
        "data",
        help="generate built-in task data as JSONL",
        description="Write examples of the built-in instruction tasks as Alpaca JSONL "
        "(instruction, input, output, task).",
    )
    p.add_argument("--task", default="all", help="a task name, or 'all' to mix every task")
    p.add_argument("--n", type=int, default=100, help="number of examples (default 100)")
    p.add_argument("--split", choices=["train", "eval"], default="train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output file (default: stdout)")
    p.add_argument("--list", action="store_true", help="list the tasks with one sample each")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the requested examples; ValueError for an unknown task or a bad --n."""
    import numpy as np

    from minillm.data import to_jsonl_lines, write_jsonl
    from minillm.data.tasks import TASKS, builtin_dataset, resolve_tasks

    if args.list:
        rng = np.random.default_rng(args.seed)
        for name, task in TASKS.items():
            ex = task.sample(rng, "train")
            print(f"{name}: {task.description}")
            print(f"  prompt: {ex.prompt!r}")
            print(f"  target: {ex.target!r}")
        return 0
    if args.n < 1:
        raise ValueError(f"--n must be positive, got {args.n}")
    names = resolve_tasks(args.task)
    examples = builtin_dataset(args.n, seed=args.seed, split=args.split, tasks=names)
    if args.out is None:
        for line in to_jsonl_lines(examples):
            sys.stdout.write(line + "\n")
    else:
        write_jsonl(examples, args.out)
        print(f"wrote {len(examples)} {args.split} examples to {args.out}", file=sys.stderr)
    return 0
