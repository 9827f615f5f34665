"""What the workflows share: one error type, checks of settings, run folders and their data.

A run folder (``minillm train --out DIR``, ``minillm rl --out DIR``) is described
in :mod:`minillm.training.checkpoint`. The helpers here check what a run is
given before the folder is touched, load the run's data from the ``run`` dict
saved in its trainer state (so ``--resume`` reloads exactly the same data), and
clear a folder for ``--overwrite``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from minillm.data import Example, encode_examples, load_jsonl, split_held_out
from minillm.data.tasks import TASKS, builtin_dataset
from minillm.training import METRICS_NAME, PLOT_NAME, checkpoint

Log = Callable[[str], None]


class SettingsError(ValueError):
    """Settings that cannot run (contradictory flags, a run folder in the way): a one-line message."""


def log_to_stderr(msg: str) -> None:
    """The default ``log`` of every workflow: one line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def flag(name: str) -> str:
    """The command-line flag of a settings field: ``n_train`` -> ``--n-train``."""
    return "--" + name.replace("_", "-")


# --------------------------------------------------------------------------- checks


def check_device(device: str) -> None:
    """SettingsError in one line when ``device`` is unusable: 'cuda' without CuPy or a GPU.

    Workflows call this before they read or write anything, so a bad device
    never leaves a half-made run folder behind.
    """
    from minillm.backend import xp_for

    try:
        xp_for(device)
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


def check_same_file(path: str | None, digest: str | None, name: str) -> None:
    """On resume: the data file ``path`` still exists and still has the ``digest`` it started with."""
    if path is None:
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing ({flag(name)} of the run being resumed)")
    if digest and file_digest(path) != digest:
        raise SettingsError(f"{path} changed since the run started ({flag(name)}); "
                            "resuming would not continue the same run")


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


def check_new_run(out: str, overwrite: bool) -> None:
    """A new run may not silently replace the one already in ``out``."""
    if checkpoint.has_checkpoint(out) and not overwrite:
        raise SettingsError(f"{out} already holds a run; pass --resume to continue it, "
                            "--overwrite to start over, or another --out")


def read_run(out: str, kind: str) -> dict:
    """The trainer state of the run to resume in ``out`` (``kind`` "sft" or "rl")."""
    if not checkpoint.has_checkpoint(out):
        raise FileNotFoundError(f"{out}: no checkpoint to resume (trainer_state.json missing)")
    from minillm.training import RLConfig, TrainConfig

    state = checkpoint.read_state(out, {"train_config": TrainConfig, "rl_config": RLConfig})
    if kind == "rl" and state.get("kind") != "rl":
        raise SettingsError(f"{out} holds a minillm train run, not an rl run")
    return state


def check_run_files(run: dict[str, Any]) -> None:
    """On resume: the run's data files are still there, unchanged."""
    check_same_file(run.get("data"), run.get("data_sha256"), "data")
    check_same_file(run.get("eval_data"), run.get("eval_data_sha256"), "eval_data")


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
    """Remove what a previous run wrote in ``out`` (only the files a run writes)."""
    ck = checkpoint
    names = ("config.json", "model.safetensors", ck.GENERATION_CONFIG_NAME, ck.TOKENIZER_NAME,
             "tokenizer_config.json", ck.OPTIMIZER_NAME, ck.STATE_NAME, METRICS_NAME, PLOT_NAME)
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
    stream), of ``run["tasks"]`` (all when absent). ``--data``: the file, and
    ``--eval-data`` or else 5% of ``--data`` (1 to 500 examples, the "held_out"
    stream) held out; then the first ``n_eval`` held-out examples when it is set.
    """
    seed = run["seed"]
    if run["data"] is None:
        tasks = run.get("tasks")
        train = builtin_dataset(run["n_train"], seed, "train", tasks, stream=train_stream)
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
