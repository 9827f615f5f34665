"""Run-folder checkpoints: a Hugging Face folder plus the trainer's state, written atomically.

The files of a checkpoint are listed in :mod:`minillm.runfolder`. Each checkpoint is
committed as a unit by the journal of :mod:`minillm.runfolder.journal` (files staged in
``DIR/.staging/``, then ``.staging/COMMIT``, the commit point, then the renames). A
process killed before the commit point leaves ``DIR`` untouched; killed after it,
:func:`recover` finishes the renames. At any moment each file in ``DIR`` is complete
(old or new), so the folder stays loadable; after :func:`recover` it is also consistent
(weights, moments and state of one step). The journal is data: only plain file names of
the folder, naming regular files, are moved; nothing outside the folder is touched.
No pickle: tensors go through safetensors, everything else is JSON.

``best/`` is committed after the checkpoint whose state names it, with its step in
``best/best_step.json``. A kill between the two commits leaves a state whose best
step is its own step, and the checkpoint's model is that best model: :func:`recover`
copies it into ``best/``, so after recovery ``best/`` always holds the state's best.
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import Any

import numpy as np

from minillm.runfolder.journal import (  # noqa: F401 - COMMIT, FILE_MODE, STAGING: the folder's names
    COMMIT,
    FILE_MODE,
    STAGING,
    note,
    recover_journal,
    staged_commit,
)
from minillm.storage.fileio import read_json, write_json

STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
TOKENIZER_NAME = "tokenizer.json"
GENERATION_CONFIG_NAME = "generation_config.json"
BEST_DIR = "best"
BEST_STEP_NAME = "best_step.json"  # in best/: {"step": N}, the step whose model best/ holds
REFERENCE_DIR = "reference"  # REINFORCE's frozen reference model (minillm.training.rl)
# The Hugging Face files of a model folder (what write_model_files writes)
MODEL_FILES = ("config.json", "model.safetensors", GENERATION_CONFIG_NAME, TOKENIZER_NAME,
               "tokenizer_config.json")
SAVE_DTYPES = ("float32", "float16", "bfloat16")  # --save-dtype: how best/ may be stored
STATE_FORMAT = "minillm-trainer-state"
# 2: the random streams of minillm.seeds (a version-1 run would resume on other data, order and
# dropout streams than it started with, so it is refused rather than silently changed).
# 3: dropout and REINFORCE's samples drawn per (step, micro-batch) (minillm.parallel's
# data parallelism); rng_state is null; world_size (the ranks) is saved.
STATE_VERSION = 3
# 4, REINFORCE runs only: rl_config names the algorithm and its settings (algo, num_iterations,
# epsilon, epsilon_high, beta, scale_rewards, loss_type) and optimizer_t is step * num_iterations;
# an older rl state lacks them, so it is refused in one line rather than guessed.
# 5, REINFORCE runs only: rl_config's whiten (the population std + 1e-8) is normalize_advantages
# (TRL's: the sample std + 1e-4), so a version-4 run that whitened would not continue as it began.
STATE_VERSIONS = {None: STATE_VERSION, "rl": 5}  # by the state's "kind"


# ----------------------------------------------------------------------- recovery


def recover(folder: str | os.PathLike) -> None:
    """Finish a committed but interrupted checkpoint in ``folder``; discard an uncommitted one.

    Also recovers ``folder/best`` (not through a symlink), and puts the
    checkpoint's model into best/ when the state names it as the best and best/
    does not hold it yet (a kill between the two commits). Safe to call on any
    folder (a no-op without staging).
    """
    folder = os.fspath(folder)
    recover_journal(folder)
    best = os.path.join(folder, BEST_DIR)
    if os.path.isdir(best) and not os.path.islink(best):
        recover_journal(best)
    _reconcile_best(folder)


def _read_step(path: str, *keys: tuple[str, ...]) -> list[int | None]:
    """The integers at each key path of the JSON object in ``path`` (None where absent or not one)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return [None] * len(keys)
        doc = read_json(path, "state", os.path.dirname(path))
    except (OSError, ValueError):
        return [None] * len(keys)
    out = []
    for key in keys:
        v = doc
        for k in key:
            v = v.get(k) if isinstance(v, dict) else None
        out.append(v if isinstance(v, int) and not isinstance(v, bool) else None)
    return out


def best_step(folder: str | os.PathLike) -> int | None:
    """The step whose model ``folder/best`` holds (None: no best/, or one without best_step.json)."""
    return _read_step(os.path.join(os.fspath(folder), BEST_DIR, BEST_STEP_NAME), ("step",))[0]


def _reconcile_best(folder: str) -> None:
    """best/ := the checkpoint's model, when the state's best is its own step and best/ lags."""
    step, best = _read_step(os.path.join(folder, STATE_NAME), ("step",), ("best", "step"))
    if step is None or best != step or best_step(folder) == step:
        return  # (a state that does not read is reported by whoever resumes it)
    sources = [os.path.join(folder, n) for n in MODEL_FILES]
    if not all(os.path.lexists(p) and stat.S_ISREG(os.lstat(p).st_mode) for p in sources):
        return
    best_dir = os.path.join(folder, BEST_DIR)
    if os.path.islink(best_dir):
        return
    with staged_commit(best_dir) as staging:
        for name, src in zip(MODEL_FILES, sources, strict=True):
            shutil.copyfile(src, os.path.join(staging, name))
        write_json(os.path.join(staging, BEST_STEP_NAME), {"step": step})
    note(f"{best_dir} now holds the model of the best step, {step} (its commit was interrupted)")


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
        # transformers' default differs across versions: say it, so that all decode as minillm does
        "clean_up_tokenization_spaces": bool(getattr(tokenizer, "clean_up_tokenization_spaces", False)),
    }


def write_model_files(folder: str, model, tokenizer, dtype: str | None = None) -> None:
    """Write the Hugging Face files: config, weights (stored in ``dtype``; None: the model's), generation
    config, tokenizer."""
    from minillm.storage.hf import save_pretrained

    save_pretrained(model.config, model.params, folder, dtype=dtype)
    write_json(os.path.join(folder, GENERATION_CONFIG_NAME), generation_config(model.config))
    tokenizer.save(os.path.join(folder, TOKENIZER_NAME))
    write_json(os.path.join(folder, "tokenizer_config.json"), tokenizer_config(tokenizer))


def save_tensors(path: str, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write a dict of arrays (NumPy or CuPy) as safetensors, atomically (a full disk: an OSError
    naming the file)."""
    from minillm.storage.safetensors_file import write_safetensors

    write_safetensors(path, tensors, metadata=metadata)


def save_model(folder: str | os.PathLike, model, tokenizer, step: int | None = None,
               dtype: str | None = None) -> None:
    """Commit a Hugging Face folder (config, weights, generation config, tokenizer). ``step``: the
    model is a run's best, of that step (best_step.json); ``dtype``: the weights' (None: the model's).
    """
    with staged_commit(folder) as staging:
        write_model_files(staging, model, tokenizer, dtype)
        if step is not None:
            write_json(os.path.join(staging, BEST_STEP_NAME), {"step": int(step)})


def save_checkpoint(folder: str | os.PathLike, model, tokenizer, optimizer, state: dict) -> None:
    """Commit the last checkpoint: the HF files, the AdamW moments and ``state`` (JSON).

    ``state`` must be JSON-serialisable (step, data position, RNG state, ...); the
    format tag and the optimizer's step count are added here.
    """
    opt = optimizer.state_dict()
    version = STATE_VERSIONS[state.get("kind")]
    full = {"format": STATE_FORMAT, "version": version, **state, "optimizer_t": int(opt["t"])}
    with staged_commit(folder, last=STATE_NAME) as staging:
        write_model_files(staging, model, tokenizer)
        save_tensors(os.path.join(staging, OPTIMIZER_NAME), opt["arrays"],
                     {"step": str(full.get("step", ""))})
        write_json(os.path.join(staging, STATE_NAME), full)


def commit_step(folder: str | os.PathLike, model, tokenizer, optimizer, state: dict,
                best: bool = False) -> None:
    """The checkpoint of ``state["step"]`` (:func:`save_checkpoint`); with ``best``, then its model
    into best/ (:func:`save_model`), committed after the state that names it (see :func:`recover`)."""
    save_checkpoint(folder, model, tokenizer, optimizer, state)
    if best:
        save_model(own_folder(os.path.join(os.fspath(folder), BEST_DIR)), model, tokenizer,
                   step=state["step"])


def own_folder(path: str) -> str:
    """``path``, a sub-folder a run writes (best/, reference/); ValueError when it is a link or file."""
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        raise ValueError(f"{path} is not a folder of the run (a link or a file); nothing is written there")
    return path


def store_best(folder: str | os.PathLike, tokenizer, dtype: str,
               model_dtype: str = "float32") -> int | None:
    """Rewrite ``folder/best`` with its weights stored in ``dtype`` (``--save-dtype``), as one commit.

    best/ is the run's deliverable; the last checkpoint in ``folder`` keeps the dtype
    the run trains in, so that ``--resume`` continues from it bit for bit. The model
    is read in ``model_dtype`` (the run's) and rounded once (bfloat16: to nearest
    even, from float32). Returns best/'s step; None (nothing written) without a best/.
    """
    from minillm.model.t5 import T5

    if dtype not in SAVE_DTYPES:
        raise ValueError(f"--save-dtype must be one of {', '.join(SAVE_DTYPES)}, got {dtype!r}")
    folder = os.fspath(folder)
    best_dir = os.path.join(folder, BEST_DIR)
    step = best_step(folder)
    if step is None or os.path.islink(best_dir) or not os.path.isdir(best_dir):
        return None
    model = T5.from_pretrained(best_dir, dtype=model_dtype)
    save_model(best_dir, model, tokenizer, step=step, dtype=dtype)
    return step


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
    from minillm.runfolder.state_file import read_trainer_state

    path = os.path.join(os.fspath(folder), STATE_NAME)
    return read_trainer_state(path, STATE_FORMAT, STATE_VERSIONS, config_classes)


def saved_step(folder: str | os.PathLike) -> str | None:
    """The step of the checkpoint in ``folder``, for messages: None when there is none ("?" when
    its state does not read). A committed but unfinished commit counts as written."""
    folder = os.fspath(folder)
    if not (os.path.lexists(os.path.join(folder, STATE_NAME))
            or os.path.lexists(os.path.join(folder, STAGING, COMMIT))):
        return None
    try:
        recover(folder)
        return str(read_state(folder)["step"])
    except (OSError, ValueError, KeyError):
        return "?"


def load_checkpoint(folder: str | os.PathLike, dtype: Any = None, device: str = "cpu"):
    """(model, tokenizer, optimizer_state, state) from a run folder, for ``--resume``.

    ``optimizer_state`` is what ``AdamW.load_state_dict`` takes. ``dtype``
    defaults to the dtype the run trained in. The model and the moments are put
    on ``device`` ('cpu' or 'cuda'), whichever device the run was saved from.
    """
    from minillm.backend import to_device
    from minillm.data.tokenizer import Tokenizer
    from minillm.model.t5 import T5
    from minillm.runfolder.optimizer_file import read_optimizer

    folder = os.fspath(folder)
    recover(folder)
    state = read_state(folder)
    dtype = dtype or state.get("dtype", "float32")
    model = T5.from_pretrained(folder, dtype=dtype, device=device)
    tokenizer = Tokenizer.from_file(os.path.join(folder, TOKENIZER_NAME), folder=folder)
    arrays = read_optimizer(os.path.join(folder, OPTIMIZER_NAME), model.params, state["optimizer_t"])
    arrays = {k: to_device(np.ascontiguousarray(v, dtype=dtype), device) for k, v in arrays.items()}
    return model, tokenizer, {"t": int(state["optimizer_t"]), "arrays": arrays}, state
