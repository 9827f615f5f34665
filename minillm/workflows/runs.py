"""What ``train`` and ``rl`` share about their run folder: its data's provenance, resuming, best/.

A run folder (:mod:`minillm.runfolder`) is data. On resume nothing it names is
imported or called; the one thing outside it that it names is its data:
``run.data`` / ``run.eval_data``, the absolute paths of the JSONL files the run
started with. They are read again only when they are regular files whose sha256
is the one saved beside them (a folder can thus make minillm read only a file
whose content it already knows).

    run["data"], run["data_sha256"] = ... data_sources(settings)     # a new run: what it reads
    state = read_run(out, "sft")                                      # --resume: the checked state
    check_run_files(state["run"])                                     # its data, unchanged
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from minillm.runfolder import checkpoint
from minillm.storage.reading import open_input
from minillm.workflows.checks import Log, SettingsError, flag

RESUMED = "of the run being resumed"  # whose data files check_same_file names by default


def file_digest(path: str) -> str:
    """sha256 of a file's bytes (hex), read by the one rule (a regular file), a MiB at a time."""
    h = hashlib.sha256()
    with open_input(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_same_file(path: Any, digest: Any, name: str, whose: str = RESUMED) -> None:
    """On resume: the data file ``path`` is still a regular file with the ``digest`` it started with.

    ``path`` comes from the run folder (trainer_state.json), so it is data: it must be
    an absolute path naming a regular file (not a device, a FIFO or a folder), and the
    file is read only to hash it; it is trained on only when its sha256 is the saved one.
    ``whose`` ends the messages ("of the run being resumed").
    """
    if path is None:
        return
    where = f"{checkpoint.STATE_NAME}: run.{name}"
    if not isinstance(path, str) or "\0" in path or not os.path.isabs(path):
        raise ValueError(f"{where} is {path!r}, not the absolute path of a data file")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ValueError(f"{where}_sha256 is {digest!r}, not the sha256 of {path}")
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: missing ({flag(name)} {whose})")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a regular file ({flag(name)} {whose})")
    if file_digest(path) != digest:
        if whose == RESUMED:
            raise SettingsError(f"{path} changed since the run started ({flag(name)}); "
                                "resuming would not continue the same run")
        raise SettingsError(f"{path} changed since the run started ({flag(name)} {whose})")


def data_sources(settings) -> dict[str, Any]:
    """``data`` / ``eval_data`` as absolute paths with their sha256, for the run's trainer state."""
    run: dict[str, Any] = {}
    for key in ("data", "eval_data"):
        given = getattr(settings, key)
        path = os.path.abspath(given) if given else None
        try:
            run[f"{key}_sha256"] = file_digest(path) if path else None
        except (ValueError, FileNotFoundError) as e:  # a FIFO, a device, a folder, missing
            raise type(e)(f"{e} ({flag(key)})") from None
        run[key] = path
    return run


def check_run_files(run: dict[str, Any], whose: str = RESUMED) -> None:
    """On resume (or ``minillm eval`` of a run): the run's data files are still there, unchanged."""
    check_same_file(run.get("data"), run.get("data_sha256"), "data", whose)
    check_same_file(run.get("eval_data"), run.get("eval_data_sha256"), "eval_data", whose)


def read_run(out: str, kind: str) -> dict:
    """The trainer state of the run to resume in ``out`` (``kind`` "sft" or "rl")."""
    if not checkpoint.has_checkpoint(out):
        raise FileNotFoundError(f"{out}: no checkpoint to resume (trainer_state.json missing)")
    from minillm.training import RLConfig, TrainConfig

    state = checkpoint.read_state(out, {"train_config": TrainConfig, "rl_config": RLConfig})
    if kind == "rl" and state.get("kind") != "rl":
        raise SettingsError(f"{out} holds a minillm train run, not an rl run")
    return state


def check_world(out: str, state: dict, world) -> None:
    """On resume: the ranks are as many as those the run was trained on (else one line)."""
    saved = state.get("world_size", 1)
    if saved != world.size:
        how = "in one process (no mpiexec)" if saved == 1 else f"with mpiexec -n {saved}"
        raise SettingsError(f"{out} was trained on {saved} rank(s), this is {world.size}: a step "
                            f"is grad_accum x ranks micro-batches; resume it {how}")


def check_not_finished(out: str, step: int, steps: int) -> None:
    if step >= steps:
        raise SettingsError(f"{out}: the run already reached step {step} of {steps}; "
                            "pass a larger --steps to train further")


def warn_ignored(settings, names: Sequence[str], command: str, log: Log) -> None:
    """On resume, say which given settings the run's own settings override."""
    ignored = [flag(n) for n in names if getattr(settings, n) is not None]
    if ignored:
        log(f"minillm {command}: --resume continues with the run's own settings; "
            f"ignoring {', '.join(ignored)}")


def run_fingerprint(model, n_train: int, config) -> str:
    """What every rank of a data-parallel run must hold alike: sizes, settings, a parameter sum."""
    from minillm.backend import to_numpy

    total = sum(float(to_numpy(v).astype("float64").sum()) for _, v in sorted(model.params.items()))
    return json.dumps([model.num_parameters(), repr(total), n_train, config.to_dict()])


def store_best(out: str, tokenizer, save_dtype: str | None, model_dtype, log: Log) -> None:
    """best/ stored in ``save_dtype`` (--save-dtype) at the end of a call; the checkpoint is left as is."""
    if save_dtype is None:
        return
    step = checkpoint.store_best(out, tokenizer, save_dtype, str(model_dtype))
    if step is None:
        log(f"--save-dtype {save_dtype}: the run has no best/ yet (no held-out evaluation); nothing stored")
    else:
        log(f"{os.path.join(out, checkpoint.BEST_DIR)} (step {step}) stored in {save_dtype}")
