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
import math
import sys

# Subcommand modules, in the order --help lists them.
COMMANDS = ["train", "generate", "eval", "rl", "data"]


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


class Parser(argparse.ArgumentParser):
    """argparse's parser with its errors in one line (``minillm train: error: ...``), exit 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def finite(text: str) -> float:
    """A flag's number: a float that is finite (``inf`` and ``nan`` are refused)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def check_argv(argv: list[str]) -> str | None:
    """The one-line complaint about an argument that is not valid UTF-8 (None when all are)."""
    for i, a in enumerate(argv, start=1):
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            shown = a.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
            return f"minillm: error: argument {i} ('{shown}') is not valid UTF-8"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="minillm",
        description="A pure-NumPy T5: train (SFT), tune (REINFORCE), generate, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"minillm.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    bad = check_argv(argv)
    if bad:  # before parsing: nothing is read or written for an argument that is not text
        print(bad, file=sys.stderr)
        return 2
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and getattr(args, "command", None) == "generate" and not any(
                a.startswith("-") for a in extra):
            # argparse cannot put a PROMPT... positional after flags (``generate DIR --top-k 5 "hi"``)
            args.prompts = [*args.prompts, *extra]
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help (0), or a bad flag already said in one line (2)
        return int(e.code or 0)
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
    except (ValueError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"minillm {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minillm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
