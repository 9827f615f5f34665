"""``minillm data``: write examples of the built-in task suite as JSONL.

minillm data --task all --n 1000 --out train.jsonl
minillm data --task number_to_french --n 5 --split eval      # to stdout
minillm data --list                                          # tasks, one sample each
"""

from __future__ import annotations

import argparse
import sys

from minillm.cli.flags import settings_from
from minillm.workflows import DataSettings, make_data, task_samples
from minillm.workflows.data import to_jsonl_lines


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
    """Write the requested examples (:func:`minillm.workflows.make_data`), or list the tasks."""
    if args.list:
        for name, description, ex in task_samples(args.seed):
            print(f"{name}: {description}")
            print(f"  prompt: {ex.prompt!r}")
            print(f"  target: {ex.target!r}")
        return 0
    settings = settings_from(DataSettings, args)
    examples = make_data(settings)
    if settings.out is None:
        for line in to_jsonl_lines(examples):
            sys.stdout.write(line + "\n")
    else:
        print(f"wrote {len(examples)} {settings.split} examples to {settings.out}", file=sys.stderr)
    return 0
