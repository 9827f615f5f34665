"""One process per folder: an advisory lock on ``FOLDER/.lock``, held for as long as a run writes there.

    with folder_lock("runs/sft"):     # FolderInUse (a ValueError) if another process holds it
        ...                           # the run

The lock is ``fcntl.flock`` on a file inside the folder, so the OS lets go of it
when its holder ends in any way, kill -9 included: a lock is never stale. The
holder writes its process id into the file, for the message a refused process
gives, and empties the file again when it lets go (a folder at rest has an empty
``.lock``). Where ``fcntl`` does not exist (Windows) the lock is not taken.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from minillm.storage.fileio import FILE_MODE

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".lock"
LOCK_MODE = FILE_MODE


class FolderInUse(ValueError):
    """Another process holds the folder's lock (the message names the folder and its process id)."""


def _holder(fd: int) -> str:
    """The process id written in a held lock file ("?" if the holder has not written it yet)."""
    for _ in range(20):  # the holder writes its pid just after locking: wait briefly for it
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "?"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[str]:
    """Hold ``folder``'s lock for the block (the folder is made if missing); yields the lock file's path.

    Raises :class:`FolderInUse` at once, without waiting, when another process
    holds it, and ValueError in one line when the lock file cannot be opened
    (e.g. ``.lock`` is a symlink: it is never followed).
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    if fcntl is None:  # pragma: no cover - Windows
        yield path
        return
    new = not os.path.lexists(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), LOCK_MODE)
    except OSError as e:
        raise ValueError(f"{path}: cannot open the run folder's lock file ({e.strerror})") from None
    try:
        if new:
            os.fchmod(fd, LOCK_MODE)  # whatever the umask, as the folder's other files
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(f"{folder} is in use by another process (pid {_holder(fd)}); "
                              "wait for it to end, or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # lets go of the lock
