"""The ``minillm`` command line: one subcommand per module in this package.

Each subcommand module defines ``add_parser(subparsers)`` (which registers its
parser and sets ``func``) and a ``run(args)`` that turns the arguments into the
command's settings, calls its workflow (:mod:`minillm.workflows`) and prints
the result. Errors the workflow raises (ValueError, FileNotFoundError) become one
line on stderr and exit status 2; a diverged run (TrainingDiverged), one line
and exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys

# Subcommand modules, in the order --help lists them.
COMMANDS = ["train", "generate", "eval", "rl", "data"]


class CLIError(Exception):
    """An error in the arguments themselves, reported in one line with exit status 2.

    Everything a command checks beyond parsing is the workflow's to check
    (:mod:`minillm.workflows`): its ValueError / FileNotFoundError is reported the same way.
    """


def settings_from(cls, args: argparse.Namespace, **given):
    """The settings dataclass ``cls`` from parsed ``args``: each field from the flag of its name.

    ``given`` fields are taken as they are instead; lists (``nargs``) become tuples.
    """
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name not in given}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**values, **given)


def say(msg: str) -> None:
    """A note on stderr (stdout carries the command's result)."""
    print(msg, file=sys.stderr, flush=True)


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
    from minillm.workflows import TrainingDiverged

    keep_freed_memory()  # steps reuse freed arrays instead of page-faulting them back in
    try:
        return int(args.func(args) or 0)
    except TrainingDiverged as e:  # not bad input: the run failed, its last checkpoint kept
        print(f"minillm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (CLIError, ValueError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"minillm {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minillm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
