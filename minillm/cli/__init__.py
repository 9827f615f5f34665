"""The ``minillm`` command line: one subcommand per module in this package (:data:`COMMANDS`).

Each subcommand module defines ``add_parser(subparsers)`` (which registers its
parser and sets ``func``) and a ``run(args)`` that turns the arguments into the
command's settings, calls its workflow (:mod:`minillm.workflows`) and prints
the result; what they share is :mod:`minillm.cli.flags`. Errors the workflow
raises (ValueError, FileNotFoundError) become one line on stderr and exit
status 2; a diverged run (TrainingDiverged), one line and exit status 1.

Under ``mpiexec -n N`` (N > 1, :mod:`minillm.parallel`) every rank runs the same
command; rank 0 alone prints (stdout and notes), and an error every rank agreed
on is said once, by rank 0, each rank exiting with the same status. An error
that one rank met outside the agreement points is said by that rank, which then
ends them all (``MPI_Abort``) rather than leave the others waiting.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order --help lists them.
COMMANDS = ["train", "generate", "eval", "rl", "data"]


class Parser(argparse.ArgumentParser):
    """argparse's parser with its errors in one line (``minillm train: error: ...``), exit 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


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
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while the command starts, before its own handler
        print("minillm: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
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
    from minillm.parallel import launched_size

    keep_freed_memory()  # steps reuse freed arrays instead of page-faulting them back in
    if launched_size() != 1:
        return _main_ranks(args)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"minillm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        code = exit_code(e)
        if code is None:
            raise
        print(f"minillm {args.command}: error: {error_message(e)}", file=sys.stderr)
        return code


# The errors that are not bugs, by class name: a run that stopped (its last checkpoint kept), 1;
# bad input or an unusable machine (a file, a flag, a folder, the disk, the memory), 2.
STOPPED = ("TrainingDiverged", "RunStopped")
REFUSED = ("ValueError", "FileNotFoundError", "KeyError", "OSError", "MemoryError")


def exit_code(error: BaseException) -> int | None:
    """1 for a run that stopped (diverged, or its folder could not be written: its last
    checkpoint is kept), 2 for bad input (ValueError, FileNotFoundError, KeyError, an OSError
    such as a read-only or full disk, MemoryError), None for anything else (a bug: its
    traceback). An error another rank raised (:class:`minillm.parallel.ParallelError`) by its
    class names."""
    from minillm.parallel import ParallelError

    kinds = (error.kinds if isinstance(error, ParallelError)
             else tuple(c.__name__ for c in type(error).__mro__))
    if any(k in kinds for k in STOPPED):
        return 1
    if any(k in kinds for k in REFUSED):
        return 2
    return None


def error_message(error: BaseException) -> str:
    """The error's one line: an OSError as "FILE: reason", a MemoryError as "out of memory"."""
    from minillm.parallel import error_message as message

    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    if isinstance(error, MemoryError):
        return f"out of memory ({message(error) or 'an allocation failed'})"
    return message(error).splitlines()[0] if message(error) else type(error).__name__


def _main_ranks(args: argparse.Namespace) -> int:
    """The command on one rank of ``mpiexec -n N``: rank 0 prints; errors said once (module docstring)."""
    import os
    import traceback

    from minillm.parallel import get_world, is_agreed

    world = get_world()
    if not world.is_root:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if world.is_root:
            print(f"minillm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        code = exit_code(e)
        if is_agreed(e):
            if world.is_root:
                if code is None:
                    traceback.print_exc()
                else:
                    print(f"minillm {args.command}: error: {error_message(e)}", file=sys.stderr)
            return 1 if code is None else code
        if code is None:
            traceback.print_exc()
        else:
            print(f"minillm {args.command}: error (rank {world.rank}): {error_message(e)}",
                  file=sys.stderr, flush=True)
        world.abort(1 if code is None else code)
        return 1 if code is None else code


if __name__ == "__main__":
    sys.exit(main())
