"""The run loop that SFT and REINFORCE share; each algorithm hands it a :class:`Trainer`.

One run, from a fresh start or resumed from its state::

    fresh start: (the trainer's start, e.g. REINFORCE saves its reference model)
                 (REINFORCE: evaluate at step 0)  checkpoint step 0
    each step:   trainer.step()                   one optimizer step; moves the data position
                 every log_every steps            a "train" record in metrics.jsonl, the bar's figures
                 every eval_every steps           an "eval" record ("final_eval" at the last step)
                 a better evaluation              checkpoint, and the model into best/
                 trainer.should_stop() after one  checkpoint, the reason said, the run ends (early)
                 every save_every steps, at the last step and at stop_after: checkpoint
    at the end:  (SFT, unless plot=False) loss.svg and tasks.svg, also after Ctrl-C or a divergence

A non-finite loss or gradient (before the update), or a parameter or AdamW moment
the update made non-finite (after it), stops the run: the step raises
TrainingDiverged and nothing of that step is saved, so the last checkpoint and
best/ stay finite. Ctrl-C leaves the last checkpoint and says how to resume. A
checkpoint holds the state (step, data position, the Generator of the step, the
best evaluation, the trainer's extras) and the optimizer moments, so a
resumed run is bit-for-bit the uninterrupted one; metrics records written after
the checkpoint a run resumes from are dropped.

Data parallel (``trainer.world`` of :mod:`minillm.parallel` with R > 1 ranks):
every rank runs this loop in step; rank 0 alone writes the run folder
(checkpoints, best/, metrics.jsonl, the plot), shows the progress bar and logs.
Each write is an agreement point (``world.on_root``): a failure there stops every
rank with rank 0's message. The ranks hold the same summed loss and parameters,
so a non-finite stop and ``stop_after`` happen on all of them at the same step.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any, ClassVar

from minillm.blas import adapt_threads
from minillm.parallel import SINGLE
from minillm.plots import plot_metrics
from minillm.runfolder import checkpoint as ckpt
from minillm.runfolder.metrics import METRICS_NAME, read_metrics, write_metrics
from minillm.training.progress import progress_bar
from minillm.training.stops import check_figures, stopped, words, write
from minillm.training.update import TrainingDiverged


@dataclasses.dataclass
class RunState:
    """Everything that changes in a run besides the parameters and the optimizer moments.

    step: optimizer steps done; (epoch, batch_in_epoch): the data position after
    them; rng_state: the step's Generator state; best: the best evaluation's entry
    and its step. An algorithm adds its own fields in a subclass (REINFORCE's EMA
    baseline).
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    rng_state: dict | None = None
    best: dict | None = None
    saved_when_set: ClassVar[tuple[str, ...]] = ()  # fields saved only when not None

    def to_saved(self) -> dict:
        """The fields as trainer_state.json keeps them (those of ``saved_when_set`` only when set)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None or k not in self.saved_when_set}

    @classmethod
    def from_saved(cls, saved: dict):
        """This state from a checkpoint's trainer_state.json (its fields; the rest is the loop's)."""
        return cls(**{f.name: saved.get(f.name) for f in dataclasses.fields(cls)})


class Trainer:
    """One algorithm's part of a run: its step, its evaluation, what "better" means.

    A subclass sets ``model``, ``tokenizer``, ``optimizer``, ``config`` (with
    steps, eval_every, save_every, log_every and ``to_dict``), ``state`` (a
    dataclass with step, rng_state and best), ``run_info`` and ``world`` (the
    ranks, :mod:`minillm.parallel`), and defines the hooks below. ``rng``: a
    Generator the steps draw from in turn, whose state a checkpoint keeps (None:
    the steps draw from streams keyed by the step, and the state saves null).
    """

    rng = None
    world = SINGLE

    name = "train"  # the progress bar's label
    config_key = "train_config"  # trainer_state.json: the key of the settings
    kind: str | None = None  # trainer_state.json: its "kind" field (None: no such field)
    initial_eval = False  # evaluate at step 0 of a fresh run

    def start(self, out_dir: str) -> None:
        """A fresh run begins (before its step-0 checkpoint)."""

    def step(self) -> dict[str, Any]:
        """One optimizer step at ``state.step`` (0-based); moves the data position; its figures."""
        raise NotImplementedError

    def train_record(self, window: list[dict], seconds: float) -> dict[str, Any]:
        """The "train" record's figures for the steps of ``window`` (``seconds`` long)."""
        raise NotImplementedError

    def postfix(self, record: dict) -> dict[str, str]:
        """The progress bar's figures from a train record."""
        return {}

    def evaluate(self, kind: str) -> dict | None:
        """Held-out figures (kind: "initial_eval", "eval" or "final_eval"); None without data."""
        return None

    def eval_record(self, result: dict) -> dict[str, Any]:
        """The metrics record's figures of an evaluation."""
        raise NotImplementedError

    def eval_line(self, kind: str, result: dict) -> str:
        """The line said after an evaluation."""
        raise NotImplementedError

    def best_entry(self, result: dict) -> dict[str, Any]:
        """What ``state.best`` keeps of an evaluation (the loop adds its "step")."""
        raise NotImplementedError

    def is_better(self, entry: dict, best: dict) -> bool:
        """Whether ``entry`` beats the best so far."""
        raise NotImplementedError

    def should_stop(self) -> str | None:
        """After a periodic evaluation: None to go on, or why the run stops here (early stopping;
        the trainer records the stop in its state, which the checkpoint then saves)."""
        return None


def save(trainer: Trainer, out_dir: str, improved: bool = False) -> None:
    """Commit the last checkpoint (and with ``improved``, the model into best/, with its step).

    best/ is committed after the checkpoint whose state names it: a kill between the
    two leaves a checkpoint that is the best model, which ``checkpoint.recover`` puts
    into best/ (see :mod:`minillm.runfolder.checkpoint`).
    """
    rng, world = getattr(trainer, "rng", None), getattr(trainer, "world", SINGLE)
    trainer.state.rng_state = None if rng is None else rng.bit_generator.state
    if world.size > 1:  # the ranks' parameters must not have drifted apart (they never should)
        world.same(parameter_checksum(trainer.model), f"the parameters at step {trainer.state.step}")
    payload = {**({"kind": trainer.kind} if trainer.kind else {}), **trainer.state.to_saved(),
               "dtype": str(trainer.model.dtype), trainer.config_key: trainer.config.to_dict(),
               "run": trainer.run_info or {}, "world_size": world.size}
    write(world, out_dir, ckpt.commit_step, out_dir, trainer.model, trainer.tokenizer,
          trainer.optimizer, payload, best=improved)  # every rank learns whether it could


def parameter_checksum(model) -> str:
    """Every parameter's float64 sum, exactly as text: what each rank of a run holds alike."""
    from minillm.backend import to_numpy

    return ",".join(repr(float(to_numpy(v).astype("float64").sum()))
                    for _, v in sorted(model.params.items()))


def held_out(trainer: Trainer, kind: str, records: list[dict], path: str) -> tuple[dict | None, bool]:
    """Evaluate, log the record, keep the best: (result or None, whether it improved)."""
    result = trainer.evaluate(kind)
    if result is None:
        return None, False
    state = trainer.state
    record = {"step": state.step, "kind": kind, **trainer.eval_record(result)}
    check_figures(record, f"the held-out evaluation at step {state.step}", os.path.dirname(path),
                  getattr(trainer, "world", SINGLE))  # every rank holds the same figures
    records.append(record)
    write_on_root(trainer, path, records)
    entry = trainer.best_entry(result)
    improved = state.best is None or trainer.is_better(entry, state.best)
    if improved:
        state.best = {**entry, "step": state.step}
    return result, improved


def write_on_root(trainer: Trainer, path: str, records: list[dict]) -> None:
    """metrics.jsonl, written by rank 0 alone (an agreement point)."""
    write(getattr(trainer, "world", SINGLE), os.path.dirname(path), write_metrics, path, records)


def begin(trainer: Trainer, out_dir: str, path: str, fresh: bool,
          log: Callable[[str], None]) -> tuple[list[dict], dict | None]:
    """The metrics records the run continues, and (a fresh run) its start and step-0 checkpoint.

    Records written after the checkpoint a run resumes from are not part of it.
    Returns (records, the initial evaluation or None).
    """
    world = getattr(trainer, "world", SINGLE)
    records = [] if fresh else world.on_root(read_metrics, path, trainer.state.step) or []
    initial_eval = None
    if fresh:
        world.on_root(trainer.start, out_dir)
        if trainer.initial_eval:
            initial_eval, _ = held_out(trainer, "initial_eval", records, path)
        save(trainer, out_dir, improved=initial_eval is not None)
        if initial_eval is not None:
            log(trainer.eval_line("initial_eval", initial_eval))
    write_on_root(trainer, path, records)
    return records, initial_eval


def run(trainer: Trainer, out_dir: str, fresh: bool, stop_after: int | None = None,
        progress: bool = True, plot: bool = False,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``trainer`` to ``config.steps`` (or ``stop_after``); see the module docstring.

    Returns {"step", "initial_eval", "final_eval", "best", "stopped_early", "plots"}
    (plots: {"loss"/"tasks": the SVG written}).
    """
    world = getattr(trainer, "world", SINGLE)
    log = world.root_log(log or functools.partial(print, file=sys.stderr))  # rank 0 alone says
    progress, plot = progress and world.is_root, plot and world.is_root
    config, state = trainer.config, trainer.state
    world.on_root(os.makedirs, out_dir, exist_ok=True)
    path = os.path.join(out_dir, METRICS_NAME)
    records, initial_eval = begin(trainer, out_dir, path, fresh, log)
    stop = min(config.steps, stop_after) if stop_after is not None else config.steps
    bar = progress_bar(config.steps, state.step, trainer.name, enabled=progress)  # plain lines off a tty
    plots: dict[str, str] = {}
    try:
        final_eval = steps(trainer, out_dir, path, records, stop, bar, progress, log)
    except KeyboardInterrupt:
        bar.close()
        step = ckpt.saved_step(out_dir) if world.is_root else None
        log(f"interrupted at step {state.step}; {words(step, out_dir)}"
            + (" (continue with --resume)" if step is not None else ""))
        raise
    finally:
        bar.close()
        if plot:
            plots = plot_metrics(out_dir, records)
    return {"step": state.step, "initial_eval": initial_eval, "final_eval": final_eval,
            "best": state.best, "stopped_early": state.step < config.steps, "plots": plots}


def steps(trainer: Trainer, out_dir: str, path: str, records: list[dict], stop: int, bar,
          progress: bool, log: Callable[[str], None]) -> dict | None:
    """The steps up to ``stop``, each with its record, evaluation and checkpoint as they fall due;
    the final evaluation (None unless the run reached ``config.steps``)."""
    config, state = trainer.config, trainer.state
    save_every = config.eval_every if config.save_every is None else config.save_every
    t_start = t_last = time.perf_counter()
    window: list[dict] = []
    final_eval = None
    while state.step < stop:
        adapt_threads()  # BLAS's pool follows the idle cores (--threads auto)
        window.append(one_step(trainer, out_dir))
        state.step += 1
        bar.update(1)
        if state.step % config.log_every == 0 or state.step == stop:
            now = time.perf_counter()
            records.append({"step": state.step, "kind": "train",
                            **trainer.train_record(window, now - t_last),
                            "elapsed_s": now - t_start})
            write_on_root(trainer, path, records)
            bar.set_postfix(trainer.postfix(records[-1]))
            t_last, window = now, []
        is_last = state.step == config.steps
        improved, stop_reason = False, None
        if is_last:
            final_eval, improved = held_out(trainer, "final_eval", records, path)
        elif config.eval_every and state.step % config.eval_every == 0:
            result, improved = held_out(trainer, "eval", records, path)
            if result is not None:
                stop_reason = trainer.should_stop()  # early stopping (the state records it)
                line = trainer.eval_line("eval", result) + (f"\n{stop_reason}" if stop_reason else "")
                if progress:
                    bar.write(line)  # above the bar
                else:
                    log(line)
        if improved or is_last or state.step == stop or stop_reason or (
                save_every and state.step % save_every == 0):
            save(trainer, out_dir, improved)
        if stop_reason:
            break
    return final_eval


def one_step(trainer: Trainer, out_dir: str) -> dict[str, Any]:
    """``trainer.step()``; a divergence says which checkpoint is kept, on every rank at this step."""
    world = getattr(trainer, "world", SINGLE)
    try:
        return trainer.step()
    except TrainingDiverged as e:  # every rank holds the same figures: all stop at this step
        raise stopped(e, out_dir, world) from None
