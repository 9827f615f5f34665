"""The ``minillm`` command line: one subcommand per module in this package.

Each subcommand module defines ``add_parser(subparsers)`` (which registers its
parser and sets ``func``) and does its heavy imports inside its run function,
so ``minillm --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order --help lists them.
COMMANDS = ["train", "generate", "eval", "rl", "data"]


class CLIError(Exception):
    """An error the CLI reports in one line, exiting with status 2."""


def check_device(device: str) -> None:
    """Fail in one line (CLIError) when ``device`` is unusable: 'cuda' without CuPy or a GPU.

    Subcommands call this before they read or write anything, so a bad
    ``--device`` never leaves a half-made run folder behind.
    """
    from minillm.backend import xp_for

    try:
        xp_for(device)
    except RuntimeError as e:
        raise CLIError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minillm",
        description="A pure-NumPy T5: train (SFT), tune (REINFORCE), generate, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"minillm.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from minillm.backend import keep_freed_memory

    keep_freed_memory()  # steps reuse freed arrays instead of page-faulting them back in
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"minillm {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minillm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
