"""Atomic file writes: write to a temporary file beside the target, then rename; JSON read back.

A reader (or a crash) never sees a half-written file: either the old file
or the new one is there. :func:`read_json` reads by the one rule of
:mod:`minillm.storage.reading`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from minillm.storage.reading import LIMITS, read_input

FILE_MODE = 0o644  # a file for everyone to read (a run folder's files, a model folder's)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    On an exception the temporary file is removed and the target is untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:  # flush to disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> None:
    """Atomically write a UTF-8 text file (permissions ``mode`` when given; else mkstemp's 0600)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        if mode is not None:
            os.chmod(tmp, mode)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str) -> Any:
    """``json.loads`` that refuses NaN and Infinity and turns every failure into one ValueError.

    Deep nesting (RecursionError) and a bad document both become ValueError with a
    short reason, for the caller to prefix with the file (and line).
    """
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


def read_json(path: str | os.PathLike, kind: str = "config",
              folder: str | os.PathLike | None = None) -> Any:
    """The JSON document in ``path``; every failure is one ValueError naming the file.

    Read by the one rule of :mod:`minillm.storage.reading`: a regular file (inside
    ``folder`` when it is a folder's), of at most ``LIMITS[kind]`` bytes.
    FileNotFoundError when it is missing; ValueError for a folder, a FIFO or device, a
    file too large, unreadable bytes, bytes that are not UTF-8, invalid JSON, NaN/Infinity
    or nesting too deep.
    """
    path = os.fspath(path)
    data = read_input(path, LIMITS[kind], folder)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        return parse_json(text)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
