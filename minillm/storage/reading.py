"""The one rule for every file minillm reads, from a folder or a flag; and line streams with a limit.

    with open_input(path, LIMITS["config"], folder=DIR) as f:   # a checked binary file
        data = f.read()
    data = read_input(path, LIMITS["tokenizer"], folder=DIR)   # its bytes, at most the limit
    for lineno, line in read_lines(stream, "train.jsonl"):     # bytes lines of at most MAX_LINE

The rule, each failure one line naming the file (ValueError; FileNotFoundError when it
is missing):

1. a regular file, after resolving links: never a folder, a FIFO (reading one waits
   forever), a device (``/dev/zero`` never ends) or a socket. The type is checked before
   the file is opened (opening some devices has effects) and again on the open file, so
   nothing swapped in between is read;
2. a file of a folder (``folder``) stays inside it once its links are resolved: a model
   or run folder cannot make minillm read a file elsewhere. The one exception is the
   layout of the Hugging Face hub's cache, whose ``snapshots/REV/NAME`` links into the
   repository's ``blobs/``;
3. no larger than the file can legitimately be (:data:`LIMITS`, by kind), checked from
   its size before it is read, then by reading at most the limit; a file read as a
   stream instead (data, prompts, metrics) has lines of at most :data:`MAX_LINE` bytes,
   so memory is bounded by what the reader keeps, not by the file.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

KiB, MiB = 1 << 10, 1 << 20
# The largest each kind of file minillm reads whole can legitimately be, in bytes.
LIMITS = {
    "config": 1 * MiB,  # config.json, generation_config.json, best/best_step.json (a few KB)
    "state": 1 * MiB,  # trainer_state.json (a few KB: settings, data position, best figures)
    "tokenizer config": 16 * MiB,  # tokenizer_config.json, special_tokens_map.json (chat templates)
    "index": 16 * MiB,  # model.safetensors.index.json (one line per tensor)
    "tokenizer": 64 * MiB,  # tokenizer.json (Gemma 3's, among the largest in use, is 33 MB)
}
MAX_LINE = 1 * MiB  # a line of a data file (JSONL), a prompt on stdin, a metrics record
KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
         (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(st: os.stat_result) -> str | None:
    """What a file that is not a regular one is ("a FIFO", ...); None for a regular file."""
    if stat.S_ISREG(st.st_mode):
        return None
    return next((name for test, name in KINDS if test(st.st_mode)), "not a regular file")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_inside(path: str, folder: str | os.PathLike) -> None:
    """ValueError unless ``path``, its links resolved, lies in ``folder`` (or, in a hub snapshot,
    in the repository's ``blobs/``)."""
    real, root = os.path.realpath(path), os.path.realpath(folder)
    if _inside(real, root):
        return
    parent = os.path.dirname(root)
    if os.path.basename(parent) == "snapshots":  # the hub's cache: snapshots/REV/NAME -> blobs/SHA
        if _inside(real, os.path.join(os.path.dirname(parent), "blobs")):
            return
    raise ValueError(f"{path}: a link to {real}, outside {os.fspath(folder)} (a folder's files "
                     "are its own)")


def _too_large(path: str, size: int, limit: int) -> ValueError:
    return ValueError(f"{path}: {size:,} bytes, more than such a file can be ({limit:,})")


def open_input(path: str | os.PathLike, limit: int | None = None,
               folder: str | os.PathLike | None = None) -> BinaryIO:
    """``path`` opened for reading in binary, under the module's rule; the caller closes it.

    ``limit``: the most bytes the file may hold (None: read as a stream, no limit);
    ``folder``: the folder whose file it is (None: a path given by the user, whose links
    are the user's own).
    """
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: missing")
    if folder is not None:
        check_inside(path, folder)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        _check_stat(path, os.stat(path), limit)  # before opening: opening a device may act
        fd = os.open(path, flags)  # (O_NONBLOCK: a FIFO swapped in since is not waited on)
    except OSError as e:
        raise (FileNotFoundError if e.errno == errno.ENOENT else ValueError)(
            f"{path}: cannot read ({e.strerror or e})") from None
    try:
        _check_stat(path, os.fstat(fd), limit)  # what was opened
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _check_stat(path: str, st: os.stat_result, limit: int | None) -> None:
    """ValueError unless ``st`` is a regular file of at most ``limit`` bytes."""
    kind = _not_regular(st)
    if kind is not None:
        raise ValueError(f"{path}: {kind}, not a regular file")
    if limit is not None and st.st_size > limit:
        raise _too_large(path, st.st_size, limit)


def read_input(path: str | os.PathLike, limit: int, folder: str | os.PathLike | None = None) -> bytes:
    """The bytes of ``path`` (:func:`open_input`), at most ``limit`` of them (a file that grows
    past it while read is refused too)."""
    path = os.fspath(path)
    with open_input(path, limit, folder) as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(data) > limit:
        raise _too_large(path, len(data), limit)
    return data


def read_lines(stream: BinaryIO, name: str, limit: int = MAX_LINE) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, the line's bytes with its newline) of a binary stream, lazily.

    A line longer than ``limit`` bytes is a ValueError naming ``name`` and the line, raised
    after reading at most ``limit + 1`` bytes of it (``/dev/zero`` on stdin ends there).
    """
    lineno = 0
    while True:
        lineno += 1
        try:
            line = stream.readline(limit + 1)
        except OSError as e:
            raise ValueError(f"{name}, line {lineno}: cannot read ({e.strerror or e})") from None
        if not line:
            return
        if len(line) > limit:
            raise ValueError(f"{name}, line {lineno}: longer than {limit:,} bytes (the most a line "
                             "may hold)")
        yield lineno, line


def text_lines(stream: BinaryIO, name: str, limit: int = MAX_LINE) -> Iterator[str]:
    """The UTF-8 lines of a binary stream (stdin's prompts; a text stream's lines as they are),
    without their line ends, lazily; a line that is too long or not UTF-8 is one ValueError
    naming ``name`` and the line."""
    for lineno, raw in read_lines(stream, name, limit):
        try:
            yield (raw.decode("utf-8") if isinstance(raw, bytes) else raw).rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise ValueError(f"{name}, line {lineno}: not UTF-8 text (byte {e.start} of the "
                             "line)") from None
