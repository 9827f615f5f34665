"""The journal that commits a set of files into a folder as one unit, and its recovery.

    with staged_commit(DIR, last="trainer_state.json") as staging:
        ...write files into staging...

1. every file is written into ``DIR/.staging/`` (each write itself atomic);
2. ``.staging/COMMIT`` (the list of names) is written atomically: the commit point;
3. each staged file is renamed over its counterpart in ``DIR`` (``os.replace``);
4. ``.staging/`` is removed.

A process killed before step 2 leaves ``DIR`` untouched (:func:`recover_journal`
discards the staging); killed after it, :func:`recover_journal` finishes the renames.

The journal is data, never trusted: :func:`read_journal` accepts only plain file
names of the folder (no separator, no ``..`` or other dot-name, no NUL, not
absolute) naming regular files of the staging (``lstat``: a symlink is refused,
never followed). Any other journal, or a ``.staging`` that is not a folder, is
discarded with a one-line note on stderr, and nothing outside ``DIR`` is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
from collections.abc import Iterator

from minillm.storage.fileio import FILE_MODE, write_json

STAGING = ".staging"
COMMIT = "COMMIT"


def _fsync_dir(folder: str) -> None:
    """Make the renames in ``folder`` durable (where the OS allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_commit(folder: str | os.PathLike, last: str | None = None) -> Iterator[str]:
    """Yield a staging folder; files written there replace those of ``folder`` as one unit.

    See the module docstring. An exception inside the block (or a kill) leaves
    ``folder`` as it was. The file ``last`` (e.g. the state that names the step) is moved last.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    recover_journal(folder)  # an earlier interrupted commit first
    staging = os.path.join(folder, STAGING)
    os.makedirs(staging)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    names = sorted(n for n in os.listdir(staging) if not n.startswith("."))
    for n in names:  # temp files are created 0600; a model folder is for everyone to read
        os.chmod(os.path.join(staging, n), FILE_MODE)
    names.sort(key=lambda n: n == last)
    write_json(os.path.join(staging, COMMIT), names)  # the commit point
    _finish(folder, names)


def _is_plain_name(name: object) -> bool:
    """A file name of the folder itself: no separator, no ``..`` or other dot-name, no NUL."""
    seps = {os.sep} | ({os.altsep} if os.altsep else set())
    return (isinstance(name, str) and name != "" and not name.startswith(".") and name != COMMIT
            and "\0" not in name and not any(sep in name for sep in seps)
            and not os.path.isabs(name) and os.path.basename(name) == name)


def read_journal(staging: str) -> list[str]:
    """The file names ``staging/COMMIT`` lists, each checked; ValueError naming what is wrong.

    FileNotFoundError when there is no COMMIT (the checkpoint was not committed). A
    name must be plain (:func:`_is_plain_name`) and, while still staged, a regular
    file (``lstat``: a symlink is refused, not followed); its counterpart in the
    folder, if any, must not be a folder.
    """
    path = os.path.join(staging, COMMIT)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: missing")
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise ValueError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as f:
            names = json.loads(f.read(1 << 16).decode("utf-8"))
    except (ValueError, RecursionError):
        raise ValueError(f"{path}: not a JSON list of file names") from None
    if not isinstance(names, list):
        raise ValueError(f"{path}: not a JSON list of file names")
    folder = os.path.dirname(staging)
    for name in names:
        if not _is_plain_name(name):
            raise ValueError(f"{path}: {name!r} is not a plain file name of the folder")
        src, dst = os.path.join(staging, name), os.path.join(folder, name)
        if os.path.lexists(src) and not stat.S_ISREG(os.lstat(src).st_mode):
            raise ValueError(f"{src}: not a regular file")
        if os.path.isdir(dst) and not os.path.islink(dst):
            raise ValueError(f"{path}: {name!r} names a folder of {folder}")
    return names


def _finish(folder: str, names: list[str]) -> None:
    """Steps 3-4: move the staged files ``names`` (the checked journal) into place, drop the staging."""
    staging = os.path.join(folder, STAGING)
    for name in names:
        src = os.path.join(staging, name)
        if os.path.lexists(src):  # absent: already moved before an interruption
            os.replace(src, os.path.join(folder, name))
    _fsync_dir(folder)
    shutil.rmtree(staging)


def note(msg: str) -> None:
    """A one-line note on stderr (a discarded journal, a repaired best/)."""
    print(f"minillm: {msg}", file=sys.stderr, flush=True)


def recover_journal(folder: str | os.PathLike) -> None:
    """Finish ``folder``'s committed commit, or discard an uncommitted or foreign staging."""
    folder = os.fspath(folder)
    staging = os.path.join(folder, STAGING)
    if os.path.islink(staging) or (os.path.lexists(staging) and not os.path.isdir(staging)):
        os.unlink(staging)  # only the link itself: never what it points to
        note(f"{staging} is not a folder; removed it")
        return
    if not os.path.isdir(staging):
        return
    try:
        names = read_journal(staging)
    except FileNotFoundError:  # not committed: the folder is still the previous checkpoint
        names = None
    except (OSError, ValueError) as e:
        note(f"{e}; the unfinished commit in {staging} is discarded, nothing else is touched")
        names = None
    if names is None:
        shutil.rmtree(staging)
    else:
        _finish(folder, names)
