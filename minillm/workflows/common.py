"""What the workflows share: one error type, checks of settings, run folders and their data.

A run folder (``minillm train --out DIR``, ``minillm rl --out DIR``) is described
in :mod:`minillm.training.checkpoint`. The helpers here check what a run is
given before the folder is touched, hold the folder's lock for the run's life
(one process per run folder), load the run's data from the ``run`` dict saved
in its trainer state (so ``--resume`` reloads exactly the same data), and clear
a folder for ``--overwrite``.

A run folder is data. On resume nothing it names is imported or called; the one
thing outside it that it names is its data: ``run.data`` / ``run.eval_data``, the
absolute paths of the JSONL files the run started with. They are read again only
when they are regular files whose sha256 is the one saved beside them (a folder
can thus make minillm read only a file whose content it already knows).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from minillm.data import Example, encode_examples, load_jsonl, split_held_out
from minillm.data.tasks import TASKS, builtin_dataset
from minillm.storage.lock import folder_lock
from minillm.training import METRICS_NAME, PLOT_NAMES, checkpoint

Log = Callable[[str], None]
RESUMED = "of the run being resumed"  # whose data files check_same_file names by default


class SettingsError(ValueError):
    """Settings that cannot run (contradictory flags, a run folder in the way): a one-line message."""


def log_to_stderr(msg: str) -> None:
    """The default ``log`` of every workflow: one line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def flag(name: str) -> str:
    """The command-line flag of a settings field: ``n_train`` -> ``--n-train``."""
    return "--" + name.replace("_", "-")


# --------------------------------------------------------------------------- checks


def apply_threads(threads: Any, log: Log = None) -> None:
    """Settings' ``threads`` (a count >= 1, "auto" or None) applied to the BLAS; a note when it cannot be."""
    from minillm.blas import use_threads

    if threads is None:
        return
    count = isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1
    if threads != "auto" and not count:
        raise SettingsError(f"threads: expected a count >= 1 or 'auto', got {threads!r}")
    if not use_threads(threads):
        (log or log_to_stderr)(f"threads {threads}: not applied (OPENBLAS_NUM_THREADS or OMP_NUM_THREADS "
                               "is set, or NumPy is not on OpenBLAS here)")


def check_device(device: str, world=None) -> None:
    """SettingsError in one line when ``device`` is unusable: 'cuda' without CuPy or a GPU.

    Workflows call this before they read or write anything, so a bad device
    never leaves a half-made run folder behind. Under data parallelism
    (``world`` of more than one rank) each rank takes the GPU of its local rank
    (:func:`minillm.backend.use_gpu`).
    """
    from minillm.backend import use_gpu, xp_for

    try:
        xp_for(device)
        if device == "cuda" and world is not None and world.size > 1:
            use_gpu(world.local_rank)
    except RuntimeError as e:
        raise SettingsError(str(e)) from None


def check_positive(settings, names: Sequence[str]) -> None:
    """ValueError naming the flag when one of the fields ``names`` is given and below 1."""
    for name in names:
        v = getattr(settings, name)
        if v is not None and v < 1:
            raise ValueError(f"{flag(name)} must be positive, got {v}")


def check_folder(folder: str, what: str, needs: str) -> str:
    """The tokenizer.json path of a Hugging Face T5 ``folder``; FileNotFoundError if missing.

    ``what`` names the folder in the message ("DIR is a Hugging Face T5 folder");
    ``needs`` says who needs the tokenizer ("minillm eval needs the folder's tokenizer").
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not a folder{f' ({what})' if what else ''}")
    tok_path = os.path.join(folder, checkpoint.TOKENIZER_NAME)
    if not os.path.exists(tok_path):
        raise FileNotFoundError(f"{tok_path}: missing ({needs})")
    return tok_path


def file_digest(path: str) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
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


# --------------------------------------------------------------------------- run folders


def data_sources(settings) -> dict[str, Any]:
    """``data`` / ``eval_data`` as absolute paths with their sha256, for the run's trainer state."""
    run: dict[str, Any] = {}
    for key in ("data", "eval_data"):
        given = getattr(settings, key)
        path = os.path.abspath(given) if given else None
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"{given}: no such file ({flag(key)})")
        run[key] = path
        run[f"{key}_sha256"] = file_digest(path) if path else None
    return run


# What a run writes before its first checkpoint commits: a folder holding only these is no
# one else's (e.g. a run killed at its start), and a new run may go into it.
LEFTOVERS = {".lock", checkpoint.STAGING, checkpoint.BEST_DIR, "reference", METRICS_NAME, *PLOT_NAMES}


def _same_or_inside(inner: str, outer: str) -> bool:
    inner, outer = os.path.realpath(inner), os.path.realpath(outer)
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def holds_run(out: str) -> bool:
    """``out`` holds a minillm run (its trainer state, or a committed first checkpoint), read only."""
    return (os.path.lexists(os.path.join(out, checkpoint.STATE_NAME))
            or os.path.lexists(os.path.join(out, checkpoint.STAGING, checkpoint.COMMIT)))


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


@contextlib.contextmanager
def world_folder(world, out: str, resume: bool, overwrite: bool, start: str | None = None,
                 start_name: str = "--init") -> Iterator[None]:
    """:func:`run_folder` for the ranks of a data-parallel run: rank 0 alone takes the lock.

    An agreement point (:mod:`minillm.parallel`): when rank 0 cannot take the folder,
    every rank raises (rank 0's message); the others wait for it, then go on.
    """
    with contextlib.ExitStack() as stack:
        world.on_root(lambda: stack.enter_context(run_folder(out, resume, overwrite, start, start_name)))
        yield


def check_world(out: str, state: dict, world) -> None:
    """On resume: the ranks are as many as those the run was trained on (else one line)."""
    saved = state.get("world_size", 1)
    if saved != world.size:
        how = "in one process (no mpiexec)" if saved == 1 else f"with mpiexec -n {saved}"
        raise SettingsError(f"{out} was trained on {saved} rank(s), this is {world.size}: a step "
                            f"is grad_accum x ranks micro-batches; resume it {how}")


def run_fingerprint(model, n_train: int, config) -> str:
    """What every rank of a data-parallel run must hold alike: sizes, settings, a parameter sum."""
    import json

    from minillm.backend import to_numpy

    total = sum(float(to_numpy(v).astype("float64").sum()) for _, v in sorted(model.params.items()))
    return json.dumps([model.num_parameters(), repr(total), n_train, config.to_dict()])


def quiet(msg: str) -> None:
    """The log of a rank other than 0: says nothing."""


@contextlib.contextmanager
def run_folder(out: str, resume: bool, overwrite: bool, start: str | None = None,
               start_name: str = "--init") -> Iterator[None]:
    """Hold ``out``'s lock for the run's life, checking the folder again once it is held.

    One process per run folder: a second ``train`` or ``rl`` on it is refused in one
    line naming the holder's process id (:func:`minillm.storage.lock.folder_lock`).
    """
    with folder_lock(out):
        check_out(out, resume, overwrite, start, start_name)
        yield


def read_run(out: str, kind: str) -> dict:
    """The trainer state of the run to resume in ``out`` (``kind`` "sft" or "rl")."""
    if not checkpoint.has_checkpoint(out):
        raise FileNotFoundError(f"{out}: no checkpoint to resume (trainer_state.json missing)")
    from minillm.training import RLConfig, TrainConfig

    state = checkpoint.read_state(out, {"train_config": TrainConfig, "rl_config": RLConfig})
    if kind == "rl" and state.get("kind") != "rl":
        raise SettingsError(f"{out} holds a minillm train run, not an rl run")
    return state


def check_run_files(run: dict[str, Any], whose: str = RESUMED) -> None:
    """On resume (or ``minillm eval`` of a run): the run's data files are still there, unchanged."""
    check_same_file(run.get("data"), run.get("data_sha256"), "data", whose)
    check_same_file(run.get("eval_data"), run.get("eval_data_sha256"), "eval_data", whose)


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


def clear_run(out: str) -> None:
    """Remove what a previous run wrote in ``out`` (only the files a run writes; not the lock)."""
    ck = checkpoint
    names = ("config.json", "model.safetensors", ck.GENERATION_CONFIG_NAME, ck.TOKENIZER_NAME,
             "tokenizer_config.json", ck.OPTIMIZER_NAME, ck.STATE_NAME, METRICS_NAME, *PLOT_NAMES)
    for name in names:
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.remove(path)
    for sub in (ck.BEST_DIR, ck.STAGING):
        if os.path.isdir(os.path.join(out, sub)):
            shutil.rmtree(os.path.join(out, sub))


# --------------------------------------------------------------------------- data


def load_run_data(run: dict[str, Any], train_stream: str) -> tuple[list[Example], list[Example]]:
    """(train, held-out) examples of a run, from the ``run`` dict of its trainer state.

    The built-in suite: ``n_train`` examples of the train split on ``train_stream``
    ("sft_data" or "rl_data") and ``n_eval`` of the eval split (the "eval_data"
    stream), of ``run["tasks"]`` (all when absent), the training examples mixed by
    ``run["task_weights"]`` (a preset's; balanced when absent), the held-out ones
    balanced. ``--data``: the file, and
    ``--eval-data`` or else 5% of ``--data`` (1 to 500 examples, the "held_out"
    stream) held out; then the first ``n_eval`` held-out examples when it is set.
    """
    seed = run["seed"]
    if run["data"] is None:
        tasks = run.get("tasks")
        train = builtin_dataset(run["n_train"], seed, "train", tasks, stream=train_stream,
                                weights=run.get("task_weights"))
        held = builtin_dataset(run["n_eval"], seed, "eval", tasks)
        return train, held
    train = load_jsonl(run["data"])
    if run["eval_data"] is not None:
        held = load_jsonl(run["eval_data"])
    else:
        train, held = split_held_out(train, seed)
    return train, held[: run["n_eval"]] if run["n_eval"] else held


def builtin_verifiers() -> dict[str, Callable]:
    """Each built-in task's verifier, by task name (for exact match by the task's own check)."""
    return {name: task.verify for name, task in TASKS.items()}


def encode(examples: Sequence[Example], tokenizer, max_source_len: int, max_target_len: int,
           what: str | None = None, log: Log | None = None):
    """The EncodedDataset of ``examples``; with ``what``, say (via ``log``) how many were truncated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        enc, stats = encode_examples(examples, tokenizer, max_source_len, max_target_len)
    if what and log and (stats.truncated_sources or stats.truncated_targets):
        log(f"{what} data: {stats.summary()} (--max-source-len {max_source_len}, "
            f"--max-target-len {max_target_len})")
    return enc


def describe(c) -> str:
    """A T5Config in one line: widths, heads, layers, FFN."""
    return (f"d_model {c.d_model}, {c.num_heads} heads x {c.d_kv}, d_ff {c.d_ff}, "
            f"{c.num_layers}+{c.num_decoder_layers} layers, {c.feed_forward_proj}")
