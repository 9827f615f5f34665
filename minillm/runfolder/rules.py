"""What a folder must be to take a run: a new one, ``--resume`` or ``--overwrite``; held by one process.

    check_out(out, resume, overwrite, start)       # SettingsError in one line; nothing written
    with world_folder(world, out, resume, overwrite, start):
        ...                                        # the lock held (rank 0), the checks passed again
    clear_run(out)                                 # --overwrite: only the files a run writes

A new run goes into a missing folder, an empty one, or one holding only what a
run writes before its first checkpoint commits (:data:`LEFTOVERS`: a run killed
at its start); ``--overwrite`` into any writable folder but a file, or one holding the
starting model; ``--resume`` only into a folder that holds a run. In every case what
the run will replace or delete there (:data:`RUN_FILES`, :data:`RUN_FOLDERS`, and the
files of best/ and reference/) must be the run's own: regular files and real folders,
never links (:func:`check_entries`). The checks run before anything is read or
written, and again once the folder's lock is held (:mod:`minillm.runfolder.lock`):
one process per run folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator

from minillm.plots.charts import PLOT_NAMES
from minillm.runfolder.checkpoint import (
    BEST_DIR,
    BEST_STEP_NAME,
    COMMIT,
    MODEL_FILES,
    OPTIMIZER_NAME,
    REFERENCE_DIR,
    STAGING,
    STATE_NAME,
)
from minillm.runfolder.lock import LOCK_NAME, folder_lock
from minillm.runfolder.metrics import METRICS_NAME

# What a run writes before its first checkpoint commits: a folder holding only these is no
# one else's (e.g. a run killed at its start), and a new run may go into it.
LEFTOVERS = {LOCK_NAME, STAGING, BEST_DIR, REFERENCE_DIR, METRICS_NAME, *PLOT_NAMES}
# What a run replaces or deletes in its folder (and in best/ and reference/): each must be a
# regular file or a real folder of the run, never a link, which would take a write or a delete
# outside the folder.
RUN_FILES = (*MODEL_FILES, OPTIMIZER_NAME, STATE_NAME, METRICS_NAME, *PLOT_NAMES, LOCK_NAME)
RUN_FOLDERS = (BEST_DIR, REFERENCE_DIR, STAGING)
MODEL_FOLDER_FILES = (*MODEL_FILES, BEST_STEP_NAME)


class SettingsError(ValueError):
    """Settings that cannot run (contradictory flags, a run folder in the way): a one-line message.

    The workflows raise it for their settings (``minillm.workflows.SettingsError``).
    """


def _same_or_inside(inner: str, outer: str) -> bool:
    inner, outer = os.path.realpath(inner), os.path.realpath(outer)
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def holds_run(out: str) -> bool:
    """``out`` holds a minillm run (its trainer state, or a committed first checkpoint), read only."""
    return (os.path.lexists(os.path.join(out, STATE_NAME))
            or os.path.lexists(os.path.join(out, STAGING, COMMIT)))


def check_out(out: str, resume: bool, overwrite: bool, start: str | None = None,
              start_name: str = "--init") -> None:
    """The run folder ``out`` may take this run; nothing is written (called again under the lock).

    Refused: ``out`` naming a file; ``out`` that is the start folder ``start`` or holds
    it (even with --overwrite, which would delete it); with --resume, a folder without
    a run; else, without --overwrite, a folder holding a run or anything a run does
    not write (a Hugging Face folder, say).
    """
    if os.path.lexists(out) and not os.path.isdir(out):
        raise SettingsError(f"--out {out} is a file, not a run folder")
    if os.path.isdir(out):
        check_entries(out)
        for folder in (out, *(os.path.join(out, sub) for sub in RUN_FOLDERS)):
            if os.path.isdir(folder) and not os.access(folder, os.W_OK | os.X_OK):
                # before anything (with --overwrite: of the old run) is deleted or written
                raise SettingsError(f"--out {folder} cannot be written (a read-only folder or file "
                                    "system)")
    if start is not None and os.path.isdir(out) and _same_or_inside(start, out):
        raise SettingsError(f"--out must differ from {start_name} and not contain it ({out} holds "
                            f"{start}); a run there would overwrite its starting model")
    if resume:
        if not (os.path.isdir(out) and holds_run(out)):
            raise FileNotFoundError(f"{out}: no checkpoint to resume (trainer_state.json missing)")
        return
    if overwrite or not os.path.isdir(out):
        return
    if holds_run(out):
        raise SettingsError(f"{out} already holds a run; pass --resume to continue it, "
                            "--overwrite to start over, or another --out")
    foreign = sorted(set(os.listdir(out)) - LEFTOVERS)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise SettingsError(f"{out} is not a minillm run folder (it holds {shown}); pass "
                            "--overwrite to write a run into it (replacing a model there), "
                            "or another --out")


def check_entries(out: str) -> None:
    """SettingsError naming the first entry a run would replace or delete in ``out`` (or in its
    best/ and reference/) that is a link, or not a regular file (a file's name) or a real folder
    (best/, reference/, .staging): nothing of a run ever goes through it."""
    def check(folder: str, files: tuple[str, ...], folders: tuple[str, ...]) -> None:
        for name in (*files, *folders):
            path = os.path.join(folder, name)
            if not os.path.lexists(path):
                continue
            mode = os.lstat(path).st_mode
            want, ok = (("a folder", stat.S_ISDIR(mode)) if name in folders
                        else ("a regular file", stat.S_ISREG(mode)))
            if stat.S_ISLNK(mode) or not ok:
                what = "a symbolic link" if stat.S_ISLNK(mode) else f"not {want}"
                raise SettingsError(f"{path} is {what}: a run folder's files and folders are its "
                                    "own (remove it, or choose another --out)")

    check(out, RUN_FILES, RUN_FOLDERS)
    for sub in (BEST_DIR, REFERENCE_DIR):
        if os.path.isdir(os.path.join(out, sub)):
            check(os.path.join(out, sub), MODEL_FOLDER_FILES, (STAGING,))


@contextlib.contextmanager
def run_folder(out: str, resume: bool, overwrite: bool, start: str | None = None,
               start_name: str = "--init") -> Iterator[None]:
    """Hold ``out``'s lock for the run's life, checking the folder again once it is held.

    One process per run folder: a second ``train`` or ``rl`` on it is refused in one
    line naming the holder's process id (:func:`minillm.runfolder.lock.folder_lock`).
    """
    with folder_lock(out):
        check_out(out, resume, overwrite, start, start_name)
        yield


@contextlib.contextmanager
def world_folder(world, out: str, resume: bool, overwrite: bool, start: str | None = None,
                 start_name: str = "--init") -> Iterator[None]:
    """:func:`run_folder` for the ranks of a data-parallel run: rank 0 alone takes the lo

    An agreement point (:mod:`minillm.parallel`): when rank 0 cannot take the folder,
    every rank raises (rank 0's message); the others wait for it, then go on.
    """
    with contextlib.ExitStack() as stack:
        world.on_root(stack.enter_context, run_folder(out, resume, overwrite, start, start_name))
        yield


def clear_run(out: str, folders: tuple[str, ...] = ()) -> None:
    """Remove what a previous run wrote in ``out`` (only the files a run writes; not the lock), and
    the sub-folders ``folders`` (REINFORCE's reference/). A missing ``out`` is left missing.

    Checked first (:func:`check_entries`), so nothing is deleted through a link; a link met
    all the same (made since) is removed itself, never what it points to.
    """
    check_entries(out)
    for name in (n for n in RUN_FILES if n != LOCK_NAME):
        path = os.path.join(out, name)
        if os.path.lexists(path):
            os.remove(path)
    for sub in (BEST_DIR, STAGING, *folders):
        path = os.path.join(out, sub)
        if os.path.islink(path):
            os.remove(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)
