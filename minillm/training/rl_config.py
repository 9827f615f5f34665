"""The REINFORCE trainer's settings, each defined once: its default, meaning, check and algorithm.

:class:`RLConfig` is the one list. Each field is a :func:`setting`, whose metadata
the rest reads:

    help     what it means (``minillm rl --help`` shows it with the default)
    check    the check of its type and range: one line naming the field
    algo     the algorithm whose setting it is (None: every algorithm's); given with
             another ``--algo``, it is refused
    flag     False for the settings that ``minillm rl`` has no flag for
    shown    the default as the help shows it, where it is not the value itself
    aliases  other names of its flag

From it come the ``minillm rl`` flags (:mod:`minillm.cli.rl`), the fields of
:class:`minillm.workflows.RLSettings` (one per flag, None: "not given"), the
``rl_config`` of trainer_state.json (:meth:`JSONSettings.to_dict`) and its checked
reader (:func:`minillm.runfolder.fields.check_settings`: each field's JSON type
from the annotation, then ``__post_init__``'s checks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from minillm.ops.policy_loss import LOSS_TYPES
from minillm.runfolder.settings import JSONSettings
from minillm.training.algorithms import ALGOS
from minillm.training.checks import (
    SCHEDULES,
    check_betas,
    check_bool,
    check_choice,
    check_int,
    check_number,
)
from minillm.training.grpo import SCALE_REWARDS
from minillm.training.reinforce import BASELINES

POSITIVE = partial(check_int, low=1)  # an integer >= 1
COUNT = partial(check_int, low=0)  # an integer >= 0
NON_NEGATIVE = partial(check_number, low=0)  # a finite number >= 0
ABOVE_ZERO = partial(check_number, low=0, low_open=True)  # a finite number > 0


def optional(check: Callable[[str, Any], None]) -> Callable[[str, Any], None]:
    """``check``, or None."""
    return lambda name, v: None if v is None else check(name, v)


def setting(default: Any, help: str, check: Callable[[str, Any], None] | None = None, *,
            choices: Sequence[str] | None = None, algo: str | None = None, flag: bool = True,
            shown: str | None = None, aliases: tuple[str, ...] = ()) -> Any:
    """A field of :class:`RLConfig` (see the module docstring). ``choices``: its values (the check)."""
    if choices is not None:
        check = partial(check_choice, choices=choices)
    return dataclasses.field(default=default, metadata={
        "help": help, "check": check, "choices": choices, "algo": algo, "flag": flag,
        "shown": shown, "aliases": aliases})


@dataclasses.dataclass(frozen=True)
class RLConfig(JSONSettings):
    """The REINFORCE trainer's settings (saved in the run folder; ``--resume`` reuses them)."""

    _label = "RL setting"  # in error messages (a class attribute, not a field)

    # the step
    steps: int = setting(200, "steps, each a batch of samples and --num-iterations updates", POSITIVE)
    batch_size: int = setting(16, "prompts per micro-batch (per rank under mpiexec)", POSITIVE)
    grad_accum: int = setting(1, "micro-batches per optimizer step (on each rank)", POSITIVE)
    k: int = setting(8, "samples per prompt", POSITIVE)
    # the algorithm (minillm.training.algorithms)
    algo: str = setting(
        "rloo", "rloo: leave-one-out advantages, the KL in the reward (--kl-coef); grpo: "
        "group-normalised advantages, the per-token KL in the loss (--beta), as TRL's trainers",
        choices=ALGOS)
    num_iterations: int = setting(
        1, "updates on each step's samples (mu), the ratio pi/pi_old clipped PPO-style", POSITIVE)
    epsilon: float = setting(0.2, "clip the ratio to [1 - epsilon, 1 + epsilon-high]", NON_NEGATIVE)
    epsilon_high: float | None = setting(None, "the upper clip", optional(NON_NEGATIVE),
                                         shown="--epsilon")
    # RLOO's (minillm.training.reinforce)
    baseline: str = setting("rloo", "rloo: mean reward of the prompt's other k-1 samples; ema: "
                            "moving average of batch means; none", choices=BASELINES, algo="rloo")
    ema_decay: float = setting(0.9, "for --baseline ema",
                               partial(check_number, low=0, high=1, high_open=True), algo="rloo")
    normalize_advantages: bool = setting(
        False, "rloo: normalise the advantages over each step: (A - mean) / (std + 1e-4), the sample "
        "std, as TRL's normalize_advantages", check_bool, algo="rloo", shown="", aliases=("whiten",))
    kl_coef: float = setting(0.1, "rloo: c in reward - c * sum_t log(pi/pi_ref), per sequence",
                             NON_NEGATIVE, algo="rloo")
    # GRPO's (minillm.training.grpo)
    beta: float = setting(0.04, "grpo: beta * the k3 KL exp(r) - r - 1 per token in the loss",
                          NON_NEGATIVE, algo="grpo")
    scale_rewards: str = setting("group", "grpo: divide (r - the group's mean) by the std of the "
                                 "group, of the batch, or none", choices=SCALE_REWARDS, algo="grpo")
    loss_type: str = setting("dapo", "grpo: average token losses per sequence then over sequences "
                             "(grpo), over N * max-new-tokens (dr_grpo) or over every token (dapo)",
                             choices=LOSS_TYPES, algo="grpo")
    entropy_coef: float = setting(0.0, "bonus on the mean per-token entropy", NON_NEGATIVE)
    # AdamW (minillm.optim, minillm.training.update)
    lr: float = setting(3e-4, "peak learning rate, AdamW", ABOVE_ZERO)
    warmup_steps: int = setting(10, "linear warmup", COUNT)
    schedule: str = setting("constant", "the learning rate after the warmup", choices=SCHEDULES)
    min_lr_ratio: float = setting(0.0, "the schedule's end, a share of lr",
                                  partial(check_number, low=0, high=1), flag=False)
    decay_fraction: float = setting(0.25, "wsd: the last share of the steps, over which lr decays",
                                    partial(check_number, low=0, high=1, low_open=True), flag=False)
    weight_decay: float = setting(0.0, "AdamW's decoupled weight decay", NON_NEGATIVE)
    betas: tuple[float, float] = setting((0.9, 0.999), "AdamW's moment decays", check_betas,
                                         flag=False)
    eps: float = setting(1e-8, "AdamW's epsilon", ABOVE_ZERO, flag=False)
    max_grad_norm: float = setting(1.0, "clipping", ABOVE_ZERO)
    # sampling (minillm.evaluation.sample_outputs)
    temperature: float = setting(1.0, "sampling temperature; 1 samples the policy itself",
                                 ABOVE_ZERO)
    top_k: int = setting(0, "sampling top-k; 0: off", COUNT)
    top_p: float = setting(1.0, "sampling top-p; 1: off",
                           partial(check_number, low=0, high=1, low_open=True))
    max_new_tokens: int = setting(32, "output tokens sampled", POSITIVE)
    seed: int = setting(0, "seed of the data, prompt order and sampling", COUNT)
    # evaluation, checkpoints, metrics
    eval_every: int = setting(50, "evaluate every this many steps; 0: only at the end", COUNT)
    save_every: int | None = setting(None, "checkpoint every this many steps", optional(COUNT),
                                     shown="with each evaluation")
    eval_batch_size: int = setting(150, "held-out prompts a batch", POSITIVE, flag=False)
    log_every: int = setting(1, "a metrics record every this many steps", POSITIVE, flag=False)

    def __post_init__(self) -> None:
        """Each field's check (one line naming the field), then the checks across fields."""
        for f in dataclasses.fields(self):
            f.metadata["check"](f.name, getattr(self, f.name))
        if self.baseline == "rloo" and self.k < 2:
            raise ValueError("the rloo baseline needs k >= 2 samples per prompt")
        if self.algo == "grpo" and self.k < 2:
            raise ValueError("grpo's group advantages need k >= 2 samples per prompt")


def flag_settings() -> list[dataclasses.Field]:
    """The RLConfig fields that ``minillm rl`` has a flag for, in their order."""
    return [f for f in dataclasses.fields(RLConfig) if f.metadata["flag"]]


def algo_settings(algo: str) -> list[str]:
    """The names of the settings of ``algo`` alone."""
    return [f.name for f in dataclasses.fields(RLConfig) if f.metadata["algo"] == algo]
