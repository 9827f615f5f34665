"""``minillm rl`` as one call: tune a T5 with REINFORCE (RLOO, or GRPO) against a reward function.

    from minillm.workflows import RLSettings, rl
    result = rl(RLSettings(dir="runs/sft", out="runs/rl", tasks="sort_words", steps=150))
    result.initial_eval["reward"], result.final_eval["reward"]

:class:`RLSettings` has one field per ``minillm rl`` flag, with the same name and
default (:mod:`minillm.workflows.rl_settings`). ``dir`` is the starting model (a Hugging
Face T5 folder with tokenizer.json, e.g. an SFT run folder); it is also the frozen
reference of the KL penalty, copied into ``out/reference``. ``algo`` is rloo (the KL
in the reward, ``kl_coef``, and a ``baseline``) or grpo (group-normalised advantages,
``beta`` times the per-token KL in the loss, a ``loss_type``;
:mod:`minillm.training.algorithms`); a setting of the other algorithm is refused.
Everything is checked before the run folder is touched, and the folder's lock is held
for the run's life (one process per run folder). A resumed run imports nothing its
folder names: a user reward (``module:function``) must be given again with
``--reward``. :mod:`minillm.training.reinforce` has the estimator,
:mod:`minillm.evaluation.rewards` the rewards.

Random streams (:mod:`minillm.seeds`, under ``seed``): "rl_data" (not SFT's
"sft_data") and "eval_data" for the built-in suite, "held_out" for ``--data``;
the trainer draws "order", "sampling" and "eval_sampling".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from minillm.evaluation.rewards import Reward, builtin_reward, get_reward, is_builtin_reward
from minillm.optim import AdamW
from minillm.parallel import Single, get_world
from minillm.runfolder import checkpoint
from minillm.runfolder.rules import check_out, clear_run, world_folder
from minillm.runfolder.state_file import check_data_position
from minillm.training import REFERENCE_DIR, RLConfig, RLState, fit_rl
from minillm.training.algorithms import algorithm_for
from minillm.workflows.checks import (
    Log,
    SettingsError,
    check_at_most,
    check_folder,
    check_positive,
    check_run_flags,
    log_to_stderr,
)
from minillm.workflows.rl_settings import CONFIG_FIELDS, DEFAULT_OUT, DEFAULTS, RLSettings, rl_config
from minillm.workflows.run_data import RL_MAX_TARGET_LEN, data_sample, encode, load_run_data
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

__all__ = ["DEFAULTS", "DEFAULT_OUT", "RLResult", "RLSettings", "rl"]


@dataclass(frozen=True)
class RLResult:
    """What an ``rl`` call reports: the held-out evaluations before (a new run only) and after.

    Each evaluation is :func:`minillm.evaluation.evaluate_policy`'s dict
    (reward, kl, exact_match, ...); ``final_eval`` is None when the run stopped
    early (``stop_after``). ``seconds``: wall time of the whole call.
    """

    out: str
    step: int
    steps: int
    initial_eval: dict[str, Any] | None
    final_eval: dict[str, Any] | None
    best: dict[str, Any] | None
    stopped_early: bool
    resumed: bool
    seconds: float


@dataclass
class _Run:
    """A run ready to train: trainer-state ``info``, config, reward, data, models, (resumed) state."""

    info: dict[str, Any]
    config: RLConfig
    reward: Any
    train: list
    held: list
    policy: Any
    reference: Any
    tokenizer: Any
    optimizer: AdamW | None = None
    state: RLState | None = None


def rl(settings: RLSettings, log: Log = log_to_stderr, world: Single | None = None) -> RLResult:
    """Check everything, start or resume the run in ``settings.out``, train, evaluate.

    Raises ValueError / FileNotFoundError (SettingsError for contradictory settings
    or a folder in the way) before touching the folder, and
    :class:`minillm.training.TrainingDiverged` on a non-finite loss. ``world``
    (default :func:`minillm.parallel.get_world`): data-parallel REINFORCE, as
    :func:`minillm.workflows.train` (rank 0 alone holds the lock and writes).
    """
    t0 = time.perf_counter()
    s = settings
    world = get_world() if world is None else world
    log = world.root_log(log)
    world.check(_check, s, world)
    folder = (s.out, s.resume, s.overwrite, None if s.resume else s.dir, "DIR")
    if s.resume:
        with world_folder(world, *folder):  # the lock first: the state read is the one continued
            return _rl(s, world.check(_resume, s, log, world), log, t0, world)
    run = world.check(_start, s, world.size)  # reads the data and models, imports the reward; writes nothing
    with world_folder(world, *folder):  # taken before --overwrite clears the folder
        return _rl(s, run, log, t0, world)


def _check(s: RLSettings, world: Single) -> None:
    check_positive(s, ("n_train", "n_eval", "stop_after"))
    if s.max_source_len < 2:
        raise ValueError(f"--max-source-len must be at least 2, got {s.max_source_len}")
    check_at_most("max_source_len", s.max_source_len)
    check_run_flags(s, world)
    if not s.resume and s.dir is None:
        raise SettingsError("give the starting model folder DIR (or --resume)")
    if not s.resume:
        check_folder(s.dir, "DIR is a Hugging Face T5 folder", "DIR needs the model's tokenizer.json")
    check_out(s.out, s.resume, s.overwrite, None if s.resume else s.dir, "DIR")


def _rl(s: RLSettings, run: _Run, log: Log, t0: float, world: Single) -> RLResult:
    """Tune ``run`` (the folder's lock held) and evaluate."""
    cfg = run.config
    world.check(_check_reward, run.reward, list(run.train) + list(run.held))
    world.same(run_fingerprint(run.policy, len(run.train), cfg), "the run (data, settings, model)")
    max_source_len = run.info["max_source_len"]
    train_enc = encode(run.train, run.tokenizer, max_source_len, RL_MAX_TARGET_LEN)
    eval_enc = encode(run.held, run.tokenizer, max_source_len, RL_MAX_TARGET_LEN) if run.held else None
    if not s.resume:
        if s.overwrite:
            world.on_root(clear_run, s.out, (REFERENCE_DIR,))
        how = algorithm_for(cfg).summary.format(**cfg.to_dict())
        if cfg.num_iterations > 1:
            how += f", {cfg.num_iterations} clipped updates per step"
        per_step = cfg.batch_size * cfg.grad_accum * world.size
        ranks = f" on {world.size} ranks" if world.size > 1 else ""
        log(f"{how}) of {s.dir} with reward "
            f"{run.reward.name!r}: {len(run.train)} training and {len(run.held)} held-out prompts; "
            f"{cfg.steps} steps of {per_step} prompts x {cfg.k} samples{ranks}; run folder {s.out}")
        if run.info.get("data_sample"):
            log(f"{run.info['data']}: {len(run.train)} training prompts drawn at random (no more are used)")
    result = fit_rl(run.policy, run.reference, run.tokenizer, run.reward, run.train, train_enc, cfg,
                    s.out, eval_examples=run.held, eval_data=eval_enc, state=run.state,
                    optimizer=run.optimizer, run_info=run.info, stop_after=s.stop_after,
                    progress=not s.no_progress, log=log, world=world)
    world.on_root(store_best, s.out, run.tokenizer, s.save_dtype, run.policy.dtype, log)
    return RLResult(out=s.out, step=result["step"], steps=cfg.steps,
                    initial_eval=result["initial_eval"], final_eval=result["final_eval"],
                    best=result["best"], stopped_early=result["stopped_early"], resumed=s.resume,
                    seconds=time.perf_counter() - t0)


def _resume(s: RLSettings, log: Log, world: Single) -> _Run:
    """The run in ``s.out`` as its last checkpoint left it (only ``steps`` may be extended)."""
    from minillm.model import T5

    state_json = read_run(s.out, "rl")
    check_world(s.out, state_json, world)
    info = state_json["run"]
    reward = _resumed_reward(s.out, info.get("reward"), s.reward)  # before anything else is read
    cfg = RLConfig.from_dict(state_json["rl_config"])
    warn_ignored(s, [n for n in CONFIG_FIELDS if n != "steps"]
                 + ["data", "eval_data", "tasks"], "rl", log)
    if s.steps is not None:
        cfg = RLConfig.from_dict({**cfg.to_dict(), "steps": s.steps})
    check_run_files(info)
    train_ex, held = _load_data(info)
    check_data_position(os.path.join(s.out, checkpoint.STATE_NAME), state_json, cfg, len(train_ex))
    policy, tokenizer, opt_state, _ = checkpoint.load_checkpoint(s.out, device=s.device)
    reference = T5.from_pretrained(os.path.join(s.out, REFERENCE_DIR), dtype=str(policy.dtype),
                                   device=s.device)
    optimizer = AdamW(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    optimizer.load_state_dict(opt_state)
    state = RLState.from_saved(state_json)
    check_not_finished(s.out, state.step, cfg.steps)
    log(f"resuming {s.out} at step {state.step} of {cfg.steps}")
    return _Run(info, cfg, reward, train_ex, held, policy, reference, tokenizer, optimizer, state)


def _start(s: RLSettings, ranks: int = 1) -> _Run:
    """A new run from the model in ``s.dir``, which is also the frozen reference (``ranks``: the
    data-parallel processes, each taking batch_size x grad_accum prompts a step)."""
    from minillm.data.tasks import resolve_tasks
    from minillm.data.tokenizer import Tokenizer, check_vocab
    from minillm.model import T5

    tok_path = check_folder(s.dir, "DIR is a Hugging Face T5 folder",
                            "DIR needs the model's tokenizer.json")
    reward_name = "verify" if s.data is None and s.reward is None else s.reward
    if reward_name is None:
        raise SettingsError("--reward is required with --data (exact_match, bleu, rouge_l, verify, "
                            "task:NAME or module:function)")
    if s.data is not None and s.tasks is not None:
        raise SettingsError("--tasks selects built-in tasks; it does not apply to --data")
    cfg = rl_config(s)
    reward = get_reward(reward_name)
    tasks = s.tasks.split(",") if isinstance(s.tasks, str) else s.tasks
    tasks = None if tasks is None else resolve_tasks([t.strip() for t in tasks if t.strip()])
    info = {"start": os.path.abspath(s.dir), "data": None, "eval_data": None, "tasks": tasks,
            "reward": reward_name, "n_train": s.n_train, "n_eval": s.n_eval, "seed": cfg.seed,
            "max_source_len": s.max_source_len}
    info.update(data_sources(s))
    info["data_sample"] = data_sample(info, cfg.steps * cfg.batch_size * cfg.grad_accum * ranks)
    train_ex, held = _load_data(info)
    tokenizer = Tokenizer.from_file(tok_path, folder=os.path.dirname(tok_path))
    policy = T5.from_pretrained(s.dir, dtype=s.dtype, device=s.device)
    check_vocab(tokenizer, policy.config.vocab_size)
    reference = T5.from_pretrained(s.dir, dtype=s.dtype, device=s.device)
    return _Run(info, cfg, reward, train_ex, held, policy, reference, tokenizer)


def _resumed_reward(out: str, saved: Any, given: str | None) -> Reward:
    """The reward of the run being resumed: nothing the folder names is imported.

    A built-in reward resolves from the fixed table (:func:`builtin_reward`). A user
    reward (``module:function``) is imported only when the command line names it again
    (``--reward``, equal to the saved name); ``--reward`` given otherwise must equal it too.
    """
    if not isinstance(saved, str):
        raise ValueError(f"{out}: {checkpoint.STATE_NAME}: run.reward is {saved!r}, not a reward name")
    if given is not None and given != saved:
        raise SettingsError(f"{out} was tuned with --reward {saved!r}; --resume continues with it, "
                            f"not {given!r}")
    if is_builtin_reward(saved):
        return builtin_reward(saved)
    if given is None:
        raise SettingsError(f"{out} was tuned with the user reward {saved!r}; --resume imports it "
                            f"only when the command line names it: pass --reward {saved!r}")
    return get_reward(given)


def _load_data(info: dict[str, Any]):
    """(train prompts, held-out prompts): the built-in suite on the "rl_data" stream, or --data."""
    train, held = load_run_data(info, "rl_data")
    if not train:
        raise ValueError(f"{info['data']}: no examples")
    return train, held


def _check_reward(reward, examples) -> None:
    """The verify reward needs built-in tasks: say so before any training."""
    from minillm.data.tasks import TASKS

    if reward.name == "verify":
        bad = sorted({str(ex.task) for ex in examples if ex.task not in TASKS})
        if bad:
            raise ValueError(f"--reward verify scores built-in tasks only; the data has task(s) "
                             f"{', '.join(bad)} (choose exact_match, bleu, rouge_l or module:function)")
