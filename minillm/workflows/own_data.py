"""A new run's TrainConfig: the preset's, the flags given, and what ``--data`` decides by itself.

    plan = plan_training(settings, preset, seed, n_train=1104, ranks=1)
    plan.config        # the TrainConfig: the preset's fields, the flags', --data's budget
    plan.rule          # EarlyStopping(metric, patience), or None
    plan.lines         # what the run says about its choices in its first lines

A preset's budget is a number of steps for the built-in suite (100,000 generated
examples: ``small`` sees each about twice); a data set of your own is of any size,
so its default is counted in epochs (passes over the training examples), as in
transformers' ``Trainer``, within a floor and a ceiling of steps:

    steps      = clamp(EPOCHS * ceil(n / batch_size) / (grad_accum * ranks), MIN_STEPS, MAX_STEPS)
    eval_every = clamp(steps per epoch, MIN_EVAL_EVERY, MAX_EVAL_EVERY)

and the run stops earlier, when the held-out loss has not gone lower in PATIENCE
evaluations (early stopping, on by default with ``--data``; best/ holds the best
evaluation). The periodic evaluations are the held-out loss alone (one forward
pass), and every GENERATE_EVERY-th decodes for exact match too; with
``--best-metric exact_match`` every one decodes. The numbers were measured on real
small data sets (docs/own-data.md).

The built-in suite keeps its preset: nothing here applies without ``--data``,
except early stopping when ``--early-stopping-patience`` or ``--best-metric`` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minillm.data import num_batches
from minillm.training import TrainConfig
from minillm.training.early_stopping import METRICS, EarlyStopping
from minillm.workflows.checks import SettingsError

EPOCHS = 30  # the default budget of --data, in passes over the training examples
MIN_STEPS, MAX_STEPS = 300, 20_000  # ... and its floor and ceiling in optimizer steps
MIN_EVAL_EVERY, MAX_EVAL_EVERY = 25, 250  # the evaluation interval: an epoch, within these
PATIENCE = 5  # evaluations without a better held-out loss before the run stops
GENERATE_EVERY = 5  # every this many periodic evaluations decode (exact match); the rest: loss
DEFAULT_METRIC = "loss"  # what picks best/ and stops the run with --data
# TrainConfig fields a flag overrides (None: the preset's)
CONFIG_FIELDS = ("steps", "batch_size", "grad_accum", "lr", "warmup_steps", "weight_decay",
                 "position_bias_lr_scale", "eval_every")


@dataclass
class OwnDataPlan:
    """A new run's TrainConfig, its early stopping, how often it decodes, the lines saying so."""

    config: TrainConfig | None = None
    rule: EarlyStopping | None = None
    generate_every: int = 1
    lines: list[str] = field(default_factory=list)


def check_stopping_settings(s) -> None:
    """ValueError naming the flag for --early-stopping-patience and --best-metric."""
    p = s.early_stopping_patience
    if p is not None and (isinstance(p, bool) or not isinstance(p, int) or p < 0):
        raise ValueError(f"--early-stopping-patience must be an integer >= 0, got {p!r}")
    if s.best_metric is not None and s.best_metric not in METRICS:
        raise ValueError(f"--best-metric must be one of {', '.join(METRICS)}, got {s.best_metric!r}")


def default_steps(n_train: int, batch_size: int, per_step: int = 1) -> int:
    """The budget of ``n_train`` examples: EPOCHS epochs in steps (of ``per_step`` batches),
    within [MIN_STEPS, MAX_STEPS]."""
    epoch = num_batches(n_train, batch_size) / per_step
    return min(max(round(EPOCHS * epoch), MIN_STEPS), MAX_STEPS)


def default_eval_every(n_train: int, batch_size: int, per_step: int = 1) -> int:
    """About an epoch of steps (of ``per_step`` batches), within [MIN_EVAL_EVERY, MAX_EVAL_EVERY]."""
    epoch = round(num_batches(n_train, batch_size) / per_step)
    return min(max(epoch, MIN_EVAL_EVERY), MAX_EVAL_EVERY)


def stopping_rule(s, own_data: bool) -> EarlyStopping | None:
    """The early-stopping rule of the settings: ``--data``'s defaults, or only what is given."""
    metric = s.best_metric or (DEFAULT_METRIC if own_data else "exact_match")
    patience = s.early_stopping_patience
    if patience is None and not own_data:
        return EarlyStopping(metric, 0) if s.best_metric else None
    return EarlyStopping(metric, PATIENCE if patience is None else patience)


def plan_training(s, preset, seed: int, n_train: int, ranks: int = 1) -> OwnDataPlan:
    """The run's TrainConfig: the preset's fields, the flags given (``--epochs`` in steps of
    grad_accum x ``ranks`` micro-batches), ``--data``'s budget and evaluation interval."""
    training = dict(preset.training, seed=seed)
    for name in CONFIG_FIELDS:
        if getattr(s, name) is not None:
            training[name] = getattr(s, name)
    bs, per_step = training["batch_size"], training.get("grad_accum", 1) * ranks
    epoch = num_batches(n_train, bs)
    if s.epochs is not None:
        training["steps"] = max(1, round(s.epochs * epoch / per_step))
    own = s.data is not None
    plan = OwnDataPlan(rule=stopping_rule(s, own))
    if own and s.steps is None and s.epochs is None:
        training["steps"] = default_steps(n_train, bs, per_step)
        plan.lines.append(f"budget: {training['steps']} steps, "
                          f"{training['steps'] * per_step / epoch:.0f} epochs of {n_train} examples "
                          f"(--data without --steps or --epochs: {EPOCHS} epochs, within "
                          f"{MIN_STEPS}-{MAX_STEPS:,} steps)")
    if own and s.eval_every is None:
        training["eval_every"] = default_eval_every(n_train, bs, per_step)
    plan.config = TrainConfig(**training)
    if plan.rule is not None:
        plan.generate_every = GENERATE_EVERY if own and plan.rule.metric == "loss" else 1
        plan.lines.append(stopping_line(plan.rule, plan.config.eval_every, plan.generate_every))
    return plan


def stopping_line(rule: EarlyStopping, eval_every: int, generate_every: int) -> str:
    """The run's line about its evaluations, best/ and early stopping."""
    what = "held-out loss" if rule.metric == "loss" else "held-out exact match"
    if not eval_every:
        return "held-out evaluation only at the end (--eval-every 0): no early stopping"
    evals = (f"held-out loss every {eval_every} steps, exact match every {eval_every * generate_every}"
             if generate_every > 1 else f"held-out evaluation every {eval_every} steps")
    stop = (f"early stopping after {rule.patience} evaluations without a better one "
            "(--early-stopping-patience 0: off)" if rule.patience else "no early stopping")
    return f"{evals}; best/ by {what}; {stop}"


def check_not_stopped(out: str, state: dict) -> None:
    """On resume: SettingsError in one line when early stopping ended the run in ``out``."""
    rule = state.get("early_stopping") or {}
    if rule.get("stopped_at") is None:
        return
    best = state["best"]["step"] if state.get("best") else "?"
    raise SettingsError(f"{out}: early stopping ended this run at step {rule['stopped_at']} "
                        f"(best/ holds step {best}); there is nothing to resume: use "
                        f"{out}/best, or start again with --overwrite (--early-stopping-patience "
                        "N, or 0 for no early stopping)")
