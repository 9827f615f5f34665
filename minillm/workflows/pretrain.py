"""``minillm pretrain`` as one call: T5's span-corruption pretraining on raw text.

    from minillm.workflows.pretrain import PretrainSettings, pretrain
    result = pretrain(PretrainSettings(steps=200, out="runs/pretrain"))
    result.final_eval["loss"], result.out     # held-out loss per target token; a Hugging Face folder

:class:`PretrainSettings` has one field per ``minillm pretrain`` flag, with the
same name and default. :func:`pretrain` checks everything before the run folder
is touched, then:

1. the documents: the built-in corpus (the running Python's standard library,
   :mod:`minillm.data.corpus`) or the --text files; the held-out ones by the
   corpus's stable rule, or --eval-text;
2. a tokenizer in T5's layout (sentinels at the top): --tokenizer's, --init's, or
   one trained on the training documents (:mod:`minillm.data.t5_tokenizer`);
3. the model: --init's, or the preset's T5 on the "init" stream;
4. the documents packed into raw examples whose corrupted inputs are
   --input-length tokens long (:func:`minillm.data.span_corruption.expanded_length`);
5. the run loop, :func:`minillm.training.pretrain.fit_pretrain`: SFT's step on
   corrupted batches, the held-out loss every --eval-every steps, checkpoints,
   metrics.jsonl and loss.svg; resumed bit for bit, data-parallel under mpiexec.

The run folder is a Hugging Face folder: ``minillm train --init RUN``, ``minillm
generate RUN "text with <extra_id_0> a span"`` and transformers load it. Random
streams (:mod:`minillm.seeds`): "init", "order", "span_noise", "held_out_noise".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from minillm.data.span_corruption import check_noise, expanded_length
from minillm.optim import ScaledAdamW
from minillm.parallel import Single, get_world
from minillm.runfolder import checkpoint
from minillm.runfolder.rules import check_out, clear_run, world_folder
from minillm.runfolder.state_file import check_data_position
from minillm.training import TrainConfig, TrainState
from minillm.training.pretrain import fit_pretrain
from minillm.workflows.checks import (
    Log,
    SettingsError,
    check_at_most,
    check_positive,
    check_run_flags,
    flag,
    log_to_stderr,
)
from minillm.workflows.models import describe
from minillm.workflows.presets import PRETRAIN_PRESET, get_preset
from minillm.workflows.pretrain_data import (
    PretrainingData,
    check_text_files,
    pretraining_examples,
    pretraining_tokenizer,
    read_documents,
    start_model,
    text_sources,
)
from minillm.workflows.runs import (
    check_not_finished,
    check_world,
    read_run,
    run_fingerprint,
    store_best,
    warn_ignored,
)

DEFAULT_OUT = os.path.join("runs", "pretrain")
# the corruption and evaluation defaults (T5's noise; inputs of 128 tokens suit a CPU)
INPUT_LENGTH, NOISE_DENSITY, MEAN_SPAN_LENGTH, N_EVAL = 128, 0.15, 3.0, 256
MAX_INPUT_LENGTH = 1 << 16  # as --max-source-len's bound
# TrainConfig defaults of pretraining (the preset gives position_bias_lr_scale)
TRAINING = dict(steps=2000, batch_size=32, lr=1e-3, warmup_steps=100, eval_every=200, weight_decay=0.01,
                max_grad_norm=1.0, eval_batch_size=64, log_every=10)
# settings a resumed run takes from its folder (given ones are ignored, with a note)
RUN_FIELDS = ("text", "eval_text", "tokenizer", "init", "dtype", "vocab_size", "input_length",
              "noise_density", "mean_span_length", "n_eval", "batch_size", "grad_accum", "lr",
              "warmup_steps", "weight_decay", "position_bias_lr_scale", "dropout", "seed", "eval_every")
CONFIG_FIELDS = ("steps", "batch_size", "grad_accum", "lr", "warmup_steps", "weight_decay",
                 "position_bias_lr_scale", "eval_every")


@dataclass(frozen=True)
class PretrainSettings:
    """One field per ``minillm pretrain`` flag (``--input-length`` is ``input_length``); None: the default."""

    text: tuple[str, ...] = ()
    eval_text: tuple[str, ...] = ()
    tokenizer: str | None = None
    init: str | None = None
    preset: str = PRETRAIN_PRESET
    out: str = DEFAULT_OUT
    resume: bool = False
    overwrite: bool = False
    dtype: str | None = None
    save_dtype: str | None = None
    device: str = "cpu"
    threads: int | str | None = None
    vocab_size: int | None = None
    input_length: int | None = None
    noise_density: float | None = None
    mean_span_length: float | None = None
    n_eval: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    weight_decay: float | None = None
    position_bias_lr_scale: float | None = None
    dropout: float | None = None
    seed: int | None = None
    eval_every: int | None = None
    stop_after: int | None = None
    no_progress: bool = False
    no_plot: bool = False
    recompute: bool = False


@dataclass(frozen=True)
class PretrainResult:
    """What a finished (or stopped) ``pretrain`` call reports: ``final_eval`` {"loss", "perplexity",
    "n"} on all the held-out examples (None when stopped early), ``best`` {"loss", "step"} of
    ``out/best``, the ``step`` of ``steps`` reached, the call's wall ``seconds``, the ``plots`` written."""

    out: str
    step: int
    steps: int
    final_eval: dict[str, Any] | None
    best: dict[str, Any] | None
    stopped_early: bool
    resumed: bool
    seconds: float
    plots: dict[str, str] = field(default_factory=dict)


@dataclass
class _Run:
    """A run ready to train: its trainer-state ``info``, config, data, model, and (resumed) state."""

    info: dict[str, Any]
    config: TrainConfig
    data: PretrainingData
    model: Any
    tokenizer: Any
    optimizer: ScaledAdamW | None = None
    state: TrainState | None = None


def check_settings(s: PretrainSettings) -> None:
    """ValueError / SettingsError naming the flag, for settings no run can use."""
    check_positive(s, ("steps", "batch_size", "grad_accum", "vocab_size", "n_eval", "stop_after"))
    for name in ("eval_every", "warmup_steps", "seed"):
        if getattr(s, name) is not None and getattr(s, name) < 0:
            raise ValueError(f"{flag(name)} must be non-negative, got {getattr(s, name)}")
        check_at_most(name, getattr(s, name))
    if s.input_length is not None and s.input_length > MAX_INPUT_LENGTH:
        raise ValueError(f"--input-length must be at most {MAX_INPUT_LENGTH:,}, got {s.input_length:,}")
    if s.lr is not None and not s.lr > 0:
        raise ValueError(f"--lr must be positive, got {s.lr}")
    if s.dropout is not None and not 0.0 <= s.dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {s.dropout}")
    density, mean = _noise(s)
    try:
        check_noise(density, mean)
        expanded_length(s.input_length or INPUT_LENGTH, density, mean)
    except ValueError as e:
        which = "--input-length" if "input length" in str(e) else (
            "--noise-density" if "density" in str(e) else "--mean-span-length")
        raise ValueError(f"{which}: {e}") from None
    if s.tokenizer and s.init:
        raise SettingsError("give --tokenizer or --init, not both (--init brings its own tokenizer)")
    if s.vocab_size is not None and (s.tokenizer or s.init):
        given = "--tokenizer" if s.tokenizer else "--init"
        raise SettingsError(f"--vocab-size sizes the tokenizer a run trains; {given} brings one")


def _noise(s: PretrainSettings) -> tuple[float, float]:
    return (NOISE_DENSITY if s.noise_density is None else s.noise_density,
            MEAN_SPAN_LENGTH if s.mean_span_length is None else s.mean_span_length)


def pretrain(settings: PretrainSettings, log: Log = log_to_stderr, world: Single | None = None
             ) -> PretrainResult:
    """Check everything, build or resume the run in ``settings.out``, pretrain, evaluate at the end.

    As :func:`minillm.workflows.train` (its errors, its lock, its ranks): rank 0
    alone writes the folder and logs; a failure on any rank stops them all.
    """
    t0 = time.perf_counter()
    s = settings
    world = get_world() if world is None else world
    log = world.root_log(log)
    world.check(_check, s, world)
    folder = (s.out, s.resume, s.overwrite, s.init, "--init")
    if s.resume:
        with world_folder(world, *folder):  # the lock first: the state read is the one continued
            return _pretrain(s, world.check(_resume, s, log, world), log, t0, world)
    run = world.check(_start, s, log)  # reads the text and builds the model; writes nothing
    with world_folder(world, *folder):  # taken before --overwrite clears the folder
        return _pretrain(s, run, log, t0, world)


def _check(s: PretrainSettings, world: Single) -> None:
    check_settings(s)
    check_run_flags(s, world)
    check_out(s.out, s.resume, s.overwrite, s.init, "--init")


def _pretrain(s: PretrainSettings, run: _Run, log: Log, t0: float, world: Single) -> PretrainResult:
    """Pretrain ``run`` (the folder's lock held) and evaluate at the end."""
    info, cfg, data = run.info, run.config, run.data
    world.same(run_fingerprint(run.model, len(data.raw), cfg), "the run (text, settings, model)")
    if not s.resume:
        if s.overwrite:
            world.on_root(clear_run, s.out)
        log(f"{run.model.num_parameters():,} parameters ({describe(run.model.config)}), vocab "
            f"{run.model.config.vocab_size}; {len(data.raw)} raw examples of {info['raw_length']} tokens "
            f"(inputs {info['input_length']}, targets {info['target_length']}) and {len(data.held)} "
            f"held-out; {cfg.steps} steps of {cfg.batch_size * cfg.grad_accum * world.size} examples; "
            f"run folder {s.out}")
    result = fit_pretrain(run.model, run.tokenizer, data.raw, data.noise, cfg, s.out, held_out=data.held,
                          periodic_eval=info["n_eval_periodic"], state=run.state, optimizer=run.optimizer,
                          run_info=info, stop_after=s.stop_after, progress=not s.no_progress,
                          plot=not s.no_plot, log=log, world=world, recompute=s.recompute)
    world.on_root(store_best, s.out, run.tokenizer, s.save_dtype, run.model.dtype, log)
    return PretrainResult(out=s.out, step=result["step"], steps=cfg.steps, final_eval=result["final_eval"],
                          best=result["best"], stopped_early=result["stopped_early"], resumed=s.resume,
                          seconds=time.perf_counter() - t0, plots=result["plots"])


def _resume(s: PretrainSettings, log: Log, world: Single) -> _Run:
    """The run in ``s.out`` as its last checkpoint left it (only ``steps`` may be extended)."""
    from minillm.data.corpus import corpus_digest

    state_json = read_run(s.out, "pretrain")
    check_world(s.out, state_json, world)
    info = state_json["run"]
    cfg = TrainConfig.from_dict(state_json["train_config"])
    warn_ignored(s, [n for n in RUN_FIELDS if getattr(s, n) != ()], "pretrain", log)  # (): no --text
    if s.steps is not None:
        cfg = TrainConfig.from_dict({**cfg.to_dict(), "steps": s.steps})
    check_text_files(info, "of the run being resumed")
    train_docs, held_docs = read_documents(info)
    if corpus_digest(train_docs + held_docs) != info["corpus_sha256"]:
        raise SettingsError(f"the text of {s.out} changed since the run started (the built-in corpus "
                            "is the running Python's: another Python version?); resuming would not "
                            "continue the same run")
    model, tokenizer, opt_state, _ = checkpoint.load_checkpoint(s.out, device=s.device)
    data = pretraining_examples(info, train_docs, held_docs, tokenizer)
    check_data_position(os.path.join(s.out, checkpoint.STATE_NAME), state_json, cfg, len(data.raw))
    optimizer = ScaledAdamW.from_config(cfg)
    optimizer.load_state_dict(opt_state)
    state = TrainState.from_saved(state_json)
    check_not_finished(s.out, state.step, cfg.steps)
    log(f"resuming {s.out} at step {state.step} of {cfg.steps}")
    return _Run(info, cfg, data, model, tokenizer, optimizer, state)


def _start(s: PretrainSettings, log: Log) -> _Run:
    """A new run: its text, tokenizer, model and raw examples; the preset's shape, the settings given."""
    from minillm.data.corpus import corpus_digest

    preset = get_preset(s.preset)
    seed = 0 if s.seed is None else s.seed
    density, mean = _noise(s)
    input_length = s.input_length or INPUT_LENGTH
    raw_length, target_length = expanded_length(input_length, density, mean)
    info: dict[str, Any] = {"preset": preset.name, **text_sources(s),
                            "init": os.path.abspath(s.init) if s.init else None,
                            "tokenizer": os.path.abspath(s.tokenizer) if s.tokenizer else None}
    train_docs, held_docs = read_documents(info)
    tokenizer = pretraining_tokenizer(s, train_docs)
    info.update(corpus_sha256=corpus_digest(train_docs + held_docs), seed=seed, input_length=input_length,
                raw_length=raw_length, target_length=target_length, noise_density=float(density),
                mean_span_length=float(mean))
    data = pretraining_examples(info, train_docs, held_docs, tokenizer, log)
    info.update(n_train=len(data.raw), n_eval=len(data.held), n_eval_periodic=s.n_eval or N_EVAL)
    training = dict(TRAINING, seed=seed,
                    position_bias_lr_scale=preset.training.get("position_bias_lr_scale", 1.0))
    training.update({k: getattr(s, k) for k in CONFIG_FIELDS if getattr(s, k) is not None})
    return _Run(info, TrainConfig(**training), data, start_model(s, tokenizer), tokenizer)

