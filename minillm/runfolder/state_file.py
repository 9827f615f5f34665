"""The schema of trainer_state.json: one reader that checks every field, each error one line.

    state = read_trainer_state(path, fmt, version, {"train_config": TrainConfig})

A run folder is data: every field a resumed run uses is checked here for its type
and range before anything else happens, and every failure is a ValueError naming
the file and the field (``.../trainer_state.json: step: expected an integer >= 0,
got "abc"``). Missing and unknown keys are refused too. The fields::

    format, version         the file's tag and schema version (checkpoint.STATE_FORMAT /
                            STATE_VERSIONS: one per kind)
    kind                    "rl" for a REINFORCE run, "pretrain" for span corruption; absent for SFT
    step                    steps done: 0 <= step <= the config's steps; optimizer_t is
                            step * the config's num_iterations (1 when it has none)
    epoch, batch_in_epoch   the data position after ``step`` steps (exact for the built-in data)
    rng_state               null (the trainers' streams are keyed by the step), or a bit
                            generator of :data:`BIT_GENERATORS` and its state
    best                    null or {"step": <= step, figures: finite numbers}
    dtype                   one of :data:`DTYPES`, as in the folder's config.json
    train_config/rl_config  the trainer's settings: each field's type from its dataclass, then
                            the class itself (its ``__post_init__`` checks the ranges)
    ema                     (REINFORCE) null or a finite number
    run                     the run's data and sizes (:data:`RUN_FIELDS`); {} for a run of the
                            library's fit() without a workflow
    world_size              (optional, 1 when absent) the data-parallel ranks that trained it
    early_stopping          (SFT, optional) {"metric": "loss"/"exact_match", "patience": >= 0,
                            "stopped_at": null or the step where it stopped the run}

The settings classes come in as an argument (the trainers' TrainConfig and RLConfig
are above this package). Each field's check is one of :mod:`minillm.runfolder.fields`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from minillm.runfolder.fields import (
    MAX_INT,
    FieldChecker,
    StateError,
    check_settings,
    is_int,
    is_number,
    shown,
)
from minillm.storage.fileio import read_json

# The bit generators a saved Generator state may name (seeds.generator makes PCG64): the one
# table a state's name is looked up in (never an attribute of numpy looked up by name).
BIT_GENERATORS = {"PCG64": np.random.PCG64}
DTYPES = ("float32", "float64")
CONFIG_KEYS = {None: "train_config", "rl": "rl_config", "pretrain": "train_config"}  # by the state's "kind"
KIND_FIELDS = {None: (), "rl": ("ema",), "pretrain": ()}  # fields a kind adds to the common ones
OPTIONAL_FIELDS = {None: ("world_size", "early_stopping"), "rl": ("kind", "world_size"),
                   "pretrain": ("kind", "world_size")}
STOPPING_METRICS = ("loss", "exact_match")  # early_stopping.metric (minillm.training.early_stopping)
COMMON = ("format", "version", "step", "epoch", "batch_in_epoch", "rng_state", "best", "dtype",
          "run", "optimizer_t")
_STR, _OPT_STR, _INT, _OPT_INT = (str,), (str, None), (int,), (int, None)
# The run dict of each kind: field -> allowed types (None: null) and, for integers, the minimum.
RUN_FIELDS = {
    None: {"preset": (_STR, None), "data": (_OPT_STR, None), "eval_data": (_OPT_STR, None),
           "init": (_OPT_STR, None), "n_train": (_INT, 1), "n_eval": (_OPT_INT, 1),
           "n_eval_periodic": (_OPT_INT, 1), "seed": (_INT, 0), "max_source_len": (_INT, 2),
           "max_target_len": (_INT, 2), "data_sha256": (_OPT_STR, None),
           "eval_data_sha256": (_OPT_STR, None), "task_weights": ((dict, None), None),
           "instruction_dropout": ((float, None), None), "data_sample": (_OPT_INT, 1),
           "generate_every": (_OPT_INT, 1)},
    "rl": {"start": (_STR, None), "data": (_OPT_STR, None), "eval_data": (_OPT_STR, None),
           "tasks": ((list, None), None), "reward": (_STR, None), "n_train": (_INT, 1),
           "n_eval": (_INT, 1), "seed": (_INT, 0), "max_source_len": (_INT, 2),
           "data_sha256": (_OPT_STR, None), "eval_data_sha256": (_OPT_STR, None),
           "data_sample": (_OPT_INT, 1)},
    "pretrain": {"preset": (_STR, None), "init": (_OPT_STR, None), "tokenizer": (_OPT_STR, None),
                 "text": ((list, None), None), "text_sha256": ((list, None), None),
                 "eval_text": ((list, None), None), "eval_text_sha256": ((list, None), None),
                 "corpus_sha256": (_STR, None), "n_train": (_INT, 1), "n_eval": (_INT, 0),
                 "n_eval_periodic": (_OPT_INT, 1), "seed": (_INT, 0), "input_length": (_INT, 2),
                 "raw_length": (_INT, 2), "target_length": (_INT, 2), "noise_density": ((float,), None),
                 "mean_span_length": ((float,), None)},
}
# run fields a state written before them lacks (read as null); data_sample: the training examples
# of --data a run reads when it needs fewer than the file holds (null: all); generate_every:
# every how many periodic evaluations decode (null: every one); instruction_dropout: the preset's
# word dropout of the built-in suite's training instructions (null: none)
OPTIONAL_RUN_FIELDS = ("task_weights", "instruction_dropout", "data_sample", "generate_every")


def check_rng_state(c: FieldChecker, s: Any) -> None:
    """null, or a PCG64 state as ``bit_generator.state`` gives it, restorable from :data:`BIT_GENERATORS`."""
    if s is None:
        return
    c.keys("rng_state", s, ("bit_generator", "state", "has_uint32", "uinteger"))
    if not isinstance(s["bit_generator"], str) or s["bit_generator"] not in BIT_GENERATORS:
        raise c.fail("rng_state.bit_generator", f"expected one of {', '.join(BIT_GENERATORS)}",
                     s["bit_generator"])
    inner = c.keys("rng_state.state", s["state"], ("state", "inc"))
    c.int("rng_state.state.state", inner["state"], 0, 2**128 - 1)
    c.int("rng_state.state.inc", inner["inc"], 0, 2**128 - 1)
    if inner["inc"] % 2 == 0:
        raise c.fail("rng_state.state.inc", "expected an odd integer", inner["inc"])
    c.int("rng_state.has_uint32", s["has_uint32"], 0, 1)
    c.int("rng_state.uinteger", s["uinteger"], 0, 2**32 - 1)
    try:
        BIT_GENERATORS[s["bit_generator"]]().state = s
    except (ValueError, TypeError, OverflowError) as e:
        raise c.fail("rng_state", f"not a restorable state ({e})", got=False) from None


def check_best(c: FieldChecker, best: Any, step: int) -> None:
    if best is None:
        return
    if not isinstance(best, dict) or "step" not in best:
        raise c.fail("best", "expected null or an object with a step", best)
    c.int("best.step", best["step"], 0, step)
    for k, v in best.items():
        if k != "step" and not is_number(v):
            raise c.fail(f"best.{k}", "expected a finite number", v)


def check_early_stopping(c: FieldChecker, rule: Any, step: int) -> None:
    """{"metric", "patience", "stopped_at"}: a known metric, patience >= 0, a step <= ``step``."""
    c.keys("early_stopping", rule, ("metric", "patience", "stopped_at"))
    if rule["metric"] not in STOPPING_METRICS:
        raise c.fail("early_stopping.metric", f"expected one of {', '.join(STOPPING_METRICS)}",
                     rule["metric"])
    c.int("early_stopping.patience", rule["patience"], 0, MAX_INT)
    if rule["stopped_at"] is not None:
        c.int("early_stopping.stopped_at", rule["stopped_at"], 0, step)


def check_run(c: FieldChecker, run: Any, kind: str | None) -> None:
    if run == {}:  # a run of the library's fit() without a workflow: no data of its own
        return
    table = RUN_FIELDS[kind]
    c.keys("run", run, tuple(k for k in table if k not in OPTIONAL_RUN_FIELDS),
           tuple(k for k in table if k in OPTIONAL_RUN_FIELDS))
    for name, (allowed, lo) in table.items():
        c.typed(f"run.{name}", run.get(name), allowed, lo)
    if kind == "pretrain":
        check_text_files(c, run)
    elif run["data"] is None and run["n_eval"] is None:
        raise c.fail("run.n_eval", "expected an integer >= 1 with the built-in data", None)
    for key in ("data", "eval_data") if kind != "pretrain" else ():
        check_file(c, f"run.{key}", run[key], run[f"{key}_sha256"])
    weights = run.get("task_weights")
    if weights is not None and not all(isinstance(t, str) and is_number(w) and w > 0
                                       for t, w in weights.items()):
        raise c.fail("run.task_weights", "expected null or an object of task names to positive "
                     "numbers", weights)
    drop = run.get("instruction_dropout")
    if drop is not None and not 0.0 <= drop < 1.0:
        raise c.fail("run.instruction_dropout", "expected null or a number in [0, 1)", drop)
    if kind == "rl" and run["tasks"] is not None and not all(isinstance(t, str) for t in run["tasks"]):
        raise c.fail("run.tasks", "expected null or a list of strings", run["tasks"])


def check_file(c: FieldChecker, field: str, path: Any, digest: Any) -> None:
    """A data file the run names: an absolute path and its sha256, or neither."""
    if (path is None) != (digest is None):
        raise c.fail(f"{field}_sha256", f"expected {'null' if path is None else 'a sha256'} "
                     f"with {field} {shown(path)}", digest)
    if path is not None and not (isinstance(path, str) and os.path.isabs(path)):
        raise c.fail(field, "expected an absolute path", path)
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                   and not set(digest) - set("0123456789abcdef")):
        raise c.fail(f"{field}_sha256", "expected 64 hex digits", digest)


def check_text_files(c: FieldChecker, run: dict) -> None:
    """A pretraining run's --text / --eval-text: null, or lists of absolute paths and their sha256."""
    for key in ("text", "eval_text"):
        paths, digests = run[key], run[f"{key}_sha256"]
        if (paths is None) != (digests is None) or (paths is not None and len(paths) != len(digests)):
            raise c.fail(f"run.{key}_sha256", f"expected one sha256 for each file of run.{key}", digests)
        for i, (path, digest) in enumerate(zip(paths or [], digests or [], strict=True)):
            check_file(c, f"run.{key}[{i}]", path, digest)


def check_position(c: FieldChecker, state: dict, config, run: dict, kind: str | None) -> None:
    """epoch and batch_in_epoch within ``step`` steps; exact with the built-in data (``n_train``)."""
    per_step = steps_batches(state, config)
    consumed = state["step"] * per_step
    c.int("epoch", state["epoch"], 0, consumed)
    c.int("batch_in_epoch", state["batch_in_epoch"], 0, consumed)
    if run.get("data") is None and is_int(run.get("n_train")):
        _exact_position(c, state, config, run["n_train"], kind)


def steps_batches(state: dict, config) -> int:
    """Batches one step takes: grad_accum (SFT and REINFORCE) on each of world_size ranks."""
    world = state.get("world_size", 1)
    return getattr(config, "grad_accum", 1) * (world if is_int(world) and world >= 1 else 1)


def _exact_position(c: FieldChecker, state: dict, config, n: int, kind: str | None) -> None:
    step, epoch, batch = state["step"], state["epoch"], state["batch_in_epoch"]
    per_step = steps_batches(state, config)
    bs = config.batch_size
    per_epoch = -(-n // bs) if kind is None else (n // bs if n > bs else 1)
    if batch >= per_epoch or epoch * per_epoch + batch != step * per_step:
        raise c.fail("epoch, batch_in_epoch",
                     f"({epoch}, {batch}) is not where {step} steps of {per_step} batch(es) of "
                     f"{bs} leave {n} examples ({per_epoch} batches an epoch)", got=False)


def check_data_position(path: str, state: dict, config, n: int) -> None:
    """On resume, once the run's ``n`` training examples are loaded: the data position is exact.

    (:func:`check_state` already did this for the built-in data; a data file's size is known
    only after it is read.) ``path`` is the trainer_state.json, for the message.
    """
    _exact_position(FieldChecker(path), state, config, n, state.get("kind"))


def check_dtype(c: FieldChecker, dtype: Any) -> None:
    if dtype not in DTYPES:
        raise c.fail("dtype", f"expected one of {', '.join(DTYPES)}", dtype)
    cfg_path = os.path.join(os.path.dirname(c.path), "config.json")
    try:
        saved = read_json(cfg_path, "config", os.path.dirname(c.path)).get("dtype")
    except (OSError, ValueError, AttributeError):
        return  # the model reader reports a bad config.json itself
    if saved is not None and saved != dtype:
        raise c.fail("dtype", f"the model in config.json is {shown(saved)}", dtype)


def check_state(path: str, state: Any, fmt: str, version: int | dict, config_classes=None) -> dict:
    """Every field of a decoded trainer_state.json (see the module docstring); ``state`` back.

    ``version``: the schema version read, or one per kind ({None: SFT's, "rl": ...}).
    ``config_classes``: {"train_config": TrainConfig, "rl_config": RLConfig}; without
    one for the state's kind, the settings are checked as an object only.
    """
    c = FieldChecker(path)
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise StateError(f"{path}: not a minillm trainer state (format is not {fmt!r})")
    kind = state.get("kind")
    if kind not in CONFIG_KEYS:
        raise c.fail("kind", "expected \"rl\", \"pretrain\" or no kind (SFT)", kind)
    want = version.get(kind) if isinstance(version, dict) else version
    if state.get("version") != want or not is_int(state.get("version")):
        named = {"rl": "an rl", "pretrain": "a pretrain"}.get(kind, "a train")
        run_kind = f" for {named} run" if isinstance(version, dict) else ""
        raise StateError(f"{path}: trainer state version {shown(state.get('version'))}, "
                         f"this minillm reads {want}{run_kind}")
    key = CONFIG_KEYS[kind]
    c.keys("(top level)", state, (*COMMON, key, *KIND_FIELDS[kind]), OPTIONAL_FIELDS[kind])
    if "world_size" in state:
        c.int("world_size", state["world_size"], 1, MAX_INT)
    cls = (config_classes or {}).get(key)
    if not isinstance(state[key], dict):
        raise c.fail(key, "expected an object", state[key])
    config = check_settings(c, key, state[key], cls) if cls else None
    steps = getattr(config, "steps", None) if cls else None
    step = c.int("step", state["step"], 0, steps)
    updates = state[key].get("num_iterations", 1)  # AdamW steps per step (rl_config's, checked)
    updates = updates if is_int(updates) and updates >= 1 else 1
    if state["optimizer_t"] != step * updates or not is_int(state["optimizer_t"]):
        what = f"the step ({step})" if updates == 1 else f"step * num_iterations ({step * updates})"
        raise c.fail("optimizer_t", f"expected {what}", state["optimizer_t"])
    check_run(c, state["run"], kind)
    if cls:
        check_position(c, state, config, state["run"], kind)
    check_rng_state(c, state["rng_state"])
    check_best(c, state["best"], step)
    if "early_stopping" in state:
        check_early_stopping(c, state["early_stopping"], step)
    check_dtype(c, state["dtype"])
    if kind == "rl" and state["ema"] is not None and not is_number(state["ema"]):
        raise c.fail("ema", "expected null or a finite number", state["ema"])
    return state


def read_trainer_state(path: str, fmt: str, version: int, config_classes=None) -> dict:
    """Read and check a trainer_state.json (:func:`check_state`); every error one line."""
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: missing (not a minillm run folder, or no checkpoint yet)")
    return check_state(path, read_json(path, "state", os.path.dirname(path)), fmt, version,
                       config_classes)

