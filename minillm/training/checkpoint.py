"""Run-folder checkpoints: a Hugging Face folder plus the trainer's state, written atomically.

A run folder (``minillm train --out DIR``) is loadable as it stands by
``minillm.from_pretrained(DIR)`` and by ``transformers``; it holds the last
checkpoint, and ``best/`` the best one::

    DIR/
      config.json  model.safetensors  generation_config.json      the last model (HF folder)
      tokenizer.json  tokenizer_config.json                       its tokenizer
      optimizer.safetensors                                       AdamW moments ("m.NAME", "v.NAME")
      trainer_state.json                                          step, data position, RNG state,
                                                                  settings, best score
      metrics.jsonl  loss.png                                     the run's log (trainer.py)
      best/  config.json model.safetensors generation_config.json tokenizer.json ...

Each checkpoint is committed as a unit with a small journal:

1. every file is written into ``DIR/.staging/`` (each write itself atomic);
2. ``.staging/COMMIT`` (the list of names) is written atomically: the commit point;
3. each staged file is renamed over its counterpart in ``DIR`` (``os.replace``);
4. ``.staging/`` is removed.

A process killed before step 2 leaves ``DIR`` untouched (the staging is discarded
by :func:`recover`); killed after it, :func:`recover` finishes the renames. At any
moment each file in ``DIR`` is complete (old or new), so the folder stays loadable;
after :func:`recover` it is also consistent (weights, moments and state of one step).
No pickle: tensors go through safetensors, everything else is JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np

from minillm.storage.fileio import atomic_path, write_json

STAGING = ".staging"
COMMIT = "COMMIT"
STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
TOKENIZER_NAME = "tokenizer.json"
GENERATION_CONFIG_NAME = "generation_config.json"
BEST_DIR = "best"
STATE_FORMAT = "minillm-trainer-state"
# 2: the random streams of minillm.seeds (a version-1 run would resume on other data, order and
# dropout streams than it started with, so it is refused rather than silently changed).
STATE_VERSION = 2
FILE_MODE = 0o644


# ----------------------------------------------------------------------- the journal


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
def staged_commit(folder: str | os.PathLike) -> Iterator[str]:
    """Yield a staging folder; files written there replace those of ``folder`` as one unit.

    See the module docstring for the journal. An exception inside the block (or a
    kill) leaves ``folder`` as it was. ``trainer_state.json`` is moved last.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    recover(folder)  # an earlier interrupted commit first
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
    names.sort(key=lambda n: n == STATE_NAME)  # the state names the step: move it last
    write_json(os.path.join(staging, COMMIT), names)  # the commit point
    _finish(folder)


def _finish(folder: str) -> None:
    """Steps 3-4: move the staged files named in COMMIT into place, drop the staging."""
    staging = os.path.join(folder, STAGING)
    with open(os.path.join(staging, COMMIT), encoding="utf-8") as f:
        names = json.load(f)
    for name in names:
        src = os.path.join(staging, name)
        if os.path.exists(src):  # absent: already moved before an interruption
            os.replace(src, os.path.join(folder, name))
    _fsync_dir(folder)
    shutil.rmtree(staging)


def recover(folder: str | os.PathLike) -> None:
    """Finish a committed but interrupted checkpoint in ``folder``; discard an uncommitted one.

    Also recovers ``folder/best``. Safe to call on any folder (a no-op without staging).
    """
    folder = os.fspath(folder)
    for f in (folder, os.path.join(folder, BEST_DIR)):
        staging = os.path.join(f, STAGING)
        if not os.path.isdir(staging):
            continue
        try:
            committed = os.path.exists(os.path.join(staging, COMMIT))
            if committed:
                with open(os.path.join(staging, COMMIT), encoding="utf-8") as fh:
                    json.load(fh)
        except (OSError, ValueError):
            committed = False
        if committed:
            _finish(f)
        else:
            shutil.rmtree(staging)


# ----------------------------------------------------------------------- the writers


def generation_config(config) -> dict[str, Any]:
    """generation_config.json for a T5: greedy decoding from the pad token to ``</s>``."""
    return {
        "decoder_start_token_id": int(config.decoder_start_token_id),
        "eos_token_id": int(config.eos_token_id),
        "pad_token_id": int(config.pad_token_id),
        "max_new_tokens": 64,
        "num_beams": 1,
        "do_sample": False,
    }


def tokenizer_config(tokenizer) -> dict[str, Any]:
    """tokenizer_config.json so transformers' AutoTokenizer reads tokenizer.json as is."""
    tok = tokenizer.backend if hasattr(tokenizer, "backend") else tokenizer
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": tok.id_to_token(tokenizer.pad_token_id),
        "eos_token": tok.id_to_token(tokenizer.eos_token_id),
        "unk_token": tok.id_to_token(tokenizer.unk_token_id),
        "model_max_length": 512,
    }


def write_model_files(folder: str, model, tokenizer) -> None:
    """Write the Hugging Face files: config, weights, generation config, tokenizer."""
    from minillm.storage.hf import save_pretrained

    save_pretrained(model.config, model.params, folder)
    write_json(os.path.join(folder, GENERATION_CONFIG_NAME), generation_config(model.config))
    tokenizer.save(os.path.join(folder, TOKENIZER_NAME))
    write_json(os.path.join(folder, "tokenizer_config.json"), tokenizer_config(tokenizer))


def save_tensors(path: str, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write a dict of arrays as safetensors, atomically."""
    from safetensors.numpy import save_file

    from minillm.backend import to_numpy

    arrays = {k: np.ascontiguousarray(to_numpy(v)) for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(arrays, tmp, metadata=metadata)


def save_model(folder: str | os.PathLike, model, tokenizer) -> None:
    """Commit a Hugging Face folder (config, weights, generation config, tokenizer)."""
    with staged_commit(folder) as staging:
        write_model_files(staging, model, tokenizer)


def save_checkpoint(folder: str | os.PathLike, model, tokenizer, optimizer, state: dict) -> None:
    """Commit the last checkpoint: the HF files, the AdamW moments and ``state`` (JSON).

    ``state`` must be JSON-serialisable (step, data position, RNG state, ...); the
    format tag and the optimizer's step count are added here.
    """
    opt = optimizer.state_dict()
    full = {"format": STATE_FORMAT, "version": STATE_VERSION, **state, "optimizer_t": int(opt["t"])}
    with staged_commit(folder) as staging:
        write_model_files(staging, model, tokenizer)
        save_tensors(os.path.join(staging, OPTIMIZER_NAME), opt["arrays"],
                     {"step": str(full.get("step", ""))})
        write_json(os.path.join(staging, STATE_NAME), full)


# ----------------------------------------------------------------------- reading


def has_checkpoint(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a trainer checkpoint (after recovering an interrupted one)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return False
    recover(folder)
    return os.path.exists(os.path.join(folder, STATE_NAME))


def read_state(folder: str | os.PathLike, config_classes: dict | None = None) -> dict:
    """The trainer state JSON of a run folder, every field checked (:mod:`.state_file`).

    ``config_classes`` ({"train_config": TrainConfig, "rl_config": RLConfig}) check the
    saved settings too. FileNotFoundError when missing; ValueError, one line naming the
    file and the field, for anything else wrong.
    """
    from minillm.training.state_file import read_trainer_state

    path = os.path.join(os.fspath(folder), STATE_NAME)
    return read_trainer_state(path, STATE_FORMAT, STATE_VERSION, config_classes)


def load_checkpoint(folder: str | os.PathLike, dtype: Any = None, device: str = "cpu"):
    """(model, tokenizer, optimizer_state, state) from a run folder, for ``--resume``.

    ``optimizer_state`` is what ``AdamW.load_state_dict`` takes. ``dtype``
    defaults to the dtype the run trained in. The model and the moments are put
    on ``device`` ('cpu' or 'cuda'), whichever device the run was saved from.
    """
    from safetensors.numpy import load_file

    from minillm.backend import to_device
    from minillm.data.tokenizer import Tokenizer
    from minillm.model.t5 import T5

    folder = os.fspath(folder)
    recover(folder)
    state = read_state(folder)
    dtype = dtype or state.get("dtype", "float32")
    model = T5.from_pretrained(folder, dtype=dtype, device=device)
    tokenizer = Tokenizer.from_file(os.path.join(folder, TOKENIZER_NAME))
    opt_path = os.path.join(folder, OPTIMIZER_NAME)
    if not os.path.exists(opt_path):
        raise FileNotFoundError(f"{opt_path}: missing (the optimizer state is needed to resume)")
    arrays = load_file(opt_path)
    arrays = {k: to_device(np.ascontiguousarray(v, dtype=dtype), device) for k, v in arrays.items()}
    return model, tokenizer, {"t": int(state["optimizer_t"]), "arrays": arrays}, state
