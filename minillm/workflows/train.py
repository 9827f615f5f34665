"""``minillm train`` as one call: supervised fine-tuning (SFT) of a T5 on instruction-output pairs.

    from minillm.workflows import TrainSettings, train
    result = train(TrainSettings(preset="tiny", steps=50, out="runs/tiny"))
    result.final_eval["exact_match"], result.best, result.out

:class:`TrainSettings` has one field per ``minillm train`` flag, with the same
name and default. :func:`train` checks everything (data, preset, vocabulary,
settings, device, the run folder) before the run folder is touched, so bad input
never damages it; then it builds the data, the tokenizer and the model (or
resumes them from the folder), takes the folder's lock (one process per run
folder, held to the end), trains with :func:`minillm.training.fit` and evaluates.
The run folder is described in :mod:`minillm.runfolder`. With ``--data``, the
budget, the evaluation interval and early stopping default as :mod:`.own_data` says.

Random streams (:mod:`minillm.seeds`, all under the one ``seed``): "sft_data" and
"eval_data" for the built-in suite, "held_out" for the 5% of ``--data`` held out,
"init" for a new model's weights; the trainer draws "order" and "dropout".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from minillm.data import Example
from minillm.optim import ScaledAdamW
from minillm.parallel import Single, get_world
from minillm.runfolder import checkpoint
from minillm.runfolder.rules import check_out, clear_run, world_folder
from minillm.runfolder.state_file import check_data_position
from minillm.training import TrainConfig, TrainState, fit
from minillm.workflows.checks import (
    Log,
    SettingsError,
    check_at_most,
    check_positive,
    check_run_flags,
    flag,
    log_to_stderr,
    most,
)
from minillm.workflows.models import build_model, describe
from minillm.workflows.own_data import OwnDataPlan, check_not_stopped, check_stopping_settings, plan_training
from minillm.workflows.presets import DEFAULT_PRESET, get_preset
from minillm.workflows.run_data import builtin_verifiers, count_train, data_sample, encode, load_run_data
from minillm.workflows.runs import (
    check_not_finished,
    check_run_files,
    check_world,
    data_sources,
    read_run,
    run_fingerprint,
    store_best,
    warn_ignored,
)

DEFAULT_OUT = os.path.join("runs", "sft")

# settings a resumed run takes from its folder (given ones are ignored, with a note)
RUN_FIELDS = ("data", "eval_data", "init", "dtype", "vocab_size", "n_train", "n_eval", "batch_size",
              "grad_accum", "lr", "warmup_steps", "weight_decay", "position_bias_lr_scale", "dropout",
              "seed", "eval_every", "max_source_len", "max_target_len", "early_stopping_patience",
              "best_metric")


@dataclass(frozen=True)
class TrainSettings:
    """One field per ``minillm train`` flag (``--n-train`` is ``n_train``); None: the preset's value."""

    data: str | None = None
    eval_data: str | None = None
    init: str | None = None
    preset: str = DEFAULT_PRESET
    out: str = DEFAULT_OUT
    resume: bool = False
    overwrite: bool = False
    dtype: str | None = None
    save_dtype: str | None = None
    device: str = "cpu"
    threads: int | str | None = None  # BLAS threads: a count, "auto" (the idle cores) or None
    vocab_size: int | None = None
    n_train: int | None = None
    n_eval: int | None = None
    steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    weight_decay: float | None = None
    position_bias_lr_scale: float | None = None
    dropout: float | None = None
    seed: int | None = None
    eval_every: int | None = None
    max_source_len: int | None = None
    max_target_len: int | None = None
    early_stopping_patience: int | None = None  # None: 5 with --data, else off (own_data.py)
    best_metric: str | None = None  # "loss" / "exact_match"; None: loss with --data
    stop_after: int | None = None
    no_progress: bool = False
    no_plot: bool = False
    recompute: bool = False


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) ``train`` call reports.

    ``final_eval``: the held-out evaluation at the end (:func:`minillm.evaluation.evaluate`'s
    dict: exact_match, per_task, ...), best/'s after early stopping, None when the run
    stopped at ``stop_after``; ``best``: {"step", "loss"[, "exact_match"]} of the checkpoint
    in ``out/best`` (None: none yet); ``early_stop``: why early stopping ended the run (None:
    it did not);
    ``step`` of ``steps`` reached; ``seconds``: wall time of the whole call; ``plots``:
    {"loss": loss.svg, "tasks": tasks.svg} as written into ``out`` (empty with ``no_plot``).
    """

    out: str
    step: int
    steps: int
    final_eval: dict[str, Any] | None
    best: dict[str, Any] | None
    stopped_early: bool
    resumed: bool
    seconds: float
    plots: dict[str, str] = field(default_factory=dict)
    early_stop: str | None = None  # why early stopping ended the run (final_eval is then best/'s)

    @property
    def best_dir(self) -> str | None:
        return os.path.join(self.out, checkpoint.BEST_DIR) if self.best else None


@dataclass
class _Run:
    """A run ready to train: its trainer-state ``info``, config, data, model, and (resumed) state."""

    info: dict[str, Any]
    config: TrainConfig
    train: list[Example]
    held: list[Example]
    model: Any
    tokenizer: Any
    optimizer: ScaledAdamW | None = None
    state: TrainState | None = None
    plan: OwnDataPlan = field(default_factory=OwnDataPlan)  # (a new run) what --data chose


def check_settings(s: TrainSettings) -> None:
    """ValueError / SettingsError naming the flag, for settings no run can use."""
    check_positive(s, ("steps", "batch_size", "grad_accum", "vocab_size", "n_train", "n_eval",
                       "stop_after"))
    if s.epochs is not None and not 0 < s.epochs <= most("epochs"):
        raise ValueError(f"--epochs must be positive and at most {most('epochs'):,}, got {s.epochs}")
    if s.epochs is not None and s.steps is not None:
        raise SettingsError("give --steps or --epochs, not both")
    for name in ("max_source_len", "max_target_len"):
        v = getattr(s, name)
        if v is not None and v < 2:
            raise ValueError(f"{flag(name)} must be at least 2, got {v}")
        check_at_most(name, v)
    for name in ("eval_every", "warmup_steps", "seed"):
        v = getattr(s, name)
        if v is not None and v < 0:
            raise ValueError(f"{flag(name)} must be non-negative, got {v}")
        check_at_most(name, v)
    if s.lr is not None and not s.lr > 0:
        raise ValueError(f"--lr must be positive, got {s.lr}")
    if s.dropout is not None and not 0.0 <= s.dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {s.dropout}")
    check_stopping_settings(s)


def train(settings: TrainSettings, log: Log = log_to_stderr, world: Single | None = None) -> TrainResult:
    """Check everything, build or resume the run in ``settings.out``, train, evaluate at the end.

    ``log`` gets one-line notes (the run's size, resuming, truncated data, the
    trainer's progress). Raises ValueError / FileNotFoundError (SettingsError for
    contradictory settings or a run folder in the way) before touching the folder,
    and :class:`minillm.training.TrainingDiverged` on a non-finite loss.

    ``world`` (default: :func:`minillm.parallel.get_world`, the ranks mpiexec
    started): data-parallel training, each step ``grad_accum`` micro-batches on
    every rank. Every rank checks and builds the same run; rank 0 alone holds the
    folder's lock, writes it and logs; a failure on any rank stops them all.
    """
    t0 = time.perf_counter()
    s = settings
    world = get_world() if world is None else world
    log = world.root_log(log)
    world.check(_check, s, world)
    folder = (s.out, s.resume, s.overwrite, s.init, "--init")
    if s.resume:
        with world_folder(world, *folder):  # the lock first: the state read is the one continued
            return _train(s, world.check(_resume, s, log, world), log, t0, world)
    run = world.check(_start, s, world.size)  # reads the data and builds the model; writes nothing
    with world_folder(world, *folder):  # taken before --overwrite clears the folder
        return _train(s, run, log, t0, world)


def _check(s: TrainSettings, world: Single) -> None:
    check_settings(s)
    check_run_flags(s, world)
    check_out(s.out, s.resume, s.overwrite, s.init, "--init")


def _train(s: TrainSettings, run: _Run, log: Log, t0: float, world: Single) -> TrainResult:
    """Train ``run`` (the folder's lock held) and evaluate at the end."""
    info, cfg = run.info, run.config
    world.same(run_fingerprint(run.model, len(run.train), cfg), "the run (data, settings, model)")
    train_enc = encode(run.train, run.tokenizer, info["max_source_len"], info["max_target_len"],
                       "training", log)
    eval_enc = (encode(run.held, run.tokenizer, info["max_source_len"], info["max_target_len"],
                       "held-out", log) if run.held else None)
    if not s.resume:
        if s.overwrite:
            world.on_root(clear_run, s.out)
        ranks = f" ({world.size} ranks x {cfg.grad_accum * cfg.batch_size})" if world.size > 1 else ""
        log(f"{run.model.num_parameters():,} parameters ({describe(run.model.config)}), "
            f"vocab {run.model.config.vocab_size}; {len(run.train)} training and {len(run.held)} "
            f"held-out examples; {cfg.steps} steps of {cfg.batch_size * cfg.grad_accum * world.size} "
            f"examples{ranks}; run folder {s.out}")
        sample = [f"{info['data']}: {len(run.train)} training examples drawn at random (the steps use "
                  "no more)"] if info.get("data_sample") else []
        for line in sample + run.plan.lines:
            log(line)
    verifiers = builtin_verifiers() if info["data"] is None else None
    result = fit(run.model, run.tokenizer, train_enc, cfg, s.out, eval_examples=run.held,
                 eval_data=eval_enc, periodic_eval=info.get("n_eval_periodic"),
                 verifiers=verifiers, state=run.state, optimizer=run.optimizer, run_info=info,
                 stop_after=s.stop_after, progress=not s.no_progress, plot=not s.no_plot, log=log,
                 world=world, recompute=s.recompute, early_stopping=run.plan.rule,
                 generate_every=info.get("generate_every") or 1)
    world.on_root(store_best, s.out, run.tokenizer, s.save_dtype, run.model.dtype, log)
    return TrainResult(out=s.out, step=result["step"], steps=cfg.steps,
                       final_eval=result["final_eval"], best=result["best"],
                       stopped_early=result["stopped_early"], resumed=s.resume,
                       seconds=time.perf_counter() - t0, plots=result["plots"],
                       early_stop=result["early_stop"])


def _resume(s: TrainSettings, log: Log, world: Single) -> _Run:
    """The run in ``s.out`` as its last checkpoint left it (only ``steps`` may be extended)."""
    state_json = read_run(s.out, "sft")
    check_world(s.out, state_json, world)
    check_not_stopped(s.out, state_json)
    info = state_json["run"]
    cfg = TrainConfig.from_dict(state_json["train_config"])
    warn_ignored(s, RUN_FIELDS, "train", log)
    if s.epochs is not None:
        raise SettingsError("--resume takes --steps to extend a run, not --epochs")
    if s.steps is not None:
        cfg = TrainConfig.from_dict({**cfg.to_dict(), "steps": s.steps})
    check_run_files(info)
    train_ex, held = load_run_data(info, "sft_data")
    check_data_position(os.path.join(s.out, checkpoint.STATE_NAME), state_json, cfg, len(train_ex))
    model, tokenizer, opt_state, _ = checkpoint.load_checkpoint(s.out, device=s.device)
    optimizer = ScaledAdamW.from_config(cfg)
    optimizer.load_state_dict(opt_state)
    state = TrainState.from_saved(state_json)
    check_not_finished(s.out, state.step, cfg.steps)
    log(f"resuming {s.out} at step {state.step} of {cfg.steps}")
    return _Run(info, cfg, train_ex, held, model, tokenizer, optimizer, state)


def _start(s: TrainSettings, ranks: int = 1) -> _Run:
    """A new run: the preset overridden by the settings given, its data, tokenizer and model.

    ``ranks``: data-parallel processes (a step then takes grad_accum x ranks micro-batches).
    """
    preset = get_preset(s.preset)
    seed = 0 if s.seed is None else s.seed
    info = {
        "preset": preset.name,
        "data": None, "eval_data": None,  # (filled in below, with their sha256)
        "init": os.path.abspath(s.init) if s.init else None,
        "n_train": s.n_train or preset.n_train,
        "n_eval": s.n_eval or (preset.n_eval if s.data is None else None),
        "n_eval_periodic": preset.n_eval_periodic,
        "task_weights": dict(preset.task_weights) if s.data is None and preset.task_weights else None,
        "instruction_dropout": preset.instruction_dropout if s.data is None and preset.instruction_dropout
        else None,
        "seed": seed,
        "max_source_len": s.max_source_len or preset.max_source_len,
        "max_target_len": s.max_target_len or preset.max_target_len,
    }
    info.update(data_sources(s))
    n_train = count_train(info)  # --data: counted, not parsed (the run reads what it draws)
    plan = plan_training(s, preset, seed, n_train, ranks)
    cfg = plan.config
    info["data_sample"] = data_sample(info, cfg.steps * cfg.batch_size * cfg.grad_accum * ranks)
    if plan.generate_every != 1:
        info["generate_every"] = plan.generate_every
    train_ex, held = load_run_data(info, "sft_data")
    model, tokenizer = build_model(s, preset, train_ex, seed)
    return _Run(info, plan.config, train_ex, held, model, tokenizer, plan=plan)
