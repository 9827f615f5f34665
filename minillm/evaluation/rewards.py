"""Reward functions for REINFORCE: score one generated output of one prompt, on a 0-1 scale.

A reward is a :class:`Reward`: a name and a function ``score(example, output) -> float``,
where ``example`` is the :class:`~minillm.data.Example` the prompt came from
(prompt, reference target, task) and ``output`` the decoded generation. Built in:

    exact_match   [strip(output) == strip(target)]                         (minillm.metrics)
    bleu          sentence BLEU(output, [target]) / 100, sacrebleu's defaults (minillm.metrics)
    rouge_l       ROUGE-L F-measure of output against target                 (minillm.metrics)
    verify        the example's built-in task verifier, ``TASKS[example.task].verify``
                  (code_expression: the output is run in the restricted evaluator and
                  compared with the target on random inputs; the other tasks: exact match)
    task:NAME     the verifier of built-in task NAME, whatever ``example.task`` says

and any user function given as ``"module:function"`` (importable, e.g. from the
current folder), called as ``function(prompt, output, reference) -> float`` with
``reference`` the example's target string. A name saved in a run folder is resolved
by :func:`builtin_reward` only (a fixed table; nothing imported): resuming a run with
a user reward takes its name from the command line again.

A reward that raises (SystemExit included: a reward's ``sys.exit()`` is not the run's
exit), or returns something that is not a finite real number, is reported:
:func:`score_outputs` raises :class:`RewardError` naming the reward, the prompt and the
output, rather than training on a silently substituted value. A KeyboardInterrupt
(Ctrl-C while a reward runs) interrupts the run as anywhere else.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from minillm.data import Example

BUILTIN = ("exact_match", "bleu", "rouge_l", "verify")


class RewardError(ValueError):
    """A reward function raised or returned a non-finite value (the message names the sample)."""


@dataclass(frozen=True)
class Reward:
    """A named scoring function ``score(example, output) -> float`` (higher is better)."""

    name: str
    score: Callable[[Example, str], float]

    def __call__(self, example: Example, output: str) -> float:
        return self.score(example, output)


# ----------------------------------------------------------------------- built-in rewards


def exact_match_reward(example: Example, output: str) -> float:
    """1.0 when strip(output) == strip(target), else 0.0."""
    return float(output.strip() == example.target.strip())


def bleu_reward(example: Example, output: str) -> float:
    """Sentence BLEU of ``output`` against the target, on 0-1 (sacrebleu's value / 100).

    A perfect match can come out as 100.00000000000004; the value is capped at 1.
    """
    from minillm.metrics import sentence_bleu

    return min(1.0, sentence_bleu(output, [example.target]) / 100.0)


def rouge_l_reward(example: Example, output: str) -> float:
    """ROUGE-L F-measure: F = 2 P R / (P + R), P = LCS / |output|, R = LCS / |target| (tokens)."""
    from minillm.metrics import rouge

    return rouge(output, example.target, ("rougeL",))["rougeL"].fmeasure


def verify_reward(example: Example, output: str) -> float:
    """The built-in task verifier of ``example.task`` (ValueError for an example without one)."""
    from minillm.data.tasks import TASKS

    if example.task not in TASKS:
        raise ValueError(f"the 'verify' reward needs examples of a built-in task "
                         f"({', '.join(TASKS)}); this one has task={example.task!r}")
    return TASKS[example.task].verify(example, output)


def task_reward(name: str) -> Callable[[Example, str], float]:
    """The verifier of built-in task ``name``, applied to every example."""
    from minillm.data.tasks import TASKS, resolve_tasks

    task = TASKS[resolve_tasks([name])[0]]
    return task.verify


def user_reward(spec: str) -> Callable[[Example, str], float]:
    """Import ``"module:function"``; the reward is ``function(prompt, output, target)``.

    The current folder is searched first, so ``myreward:score`` finds ./myreward.py.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"reward {spec!r}: a user reward is written module:function")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"reward {spec!r}: cannot import module {module_name!r} ({e})") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's module failed on import
        raise ValueError(f"reward {spec!r}: importing module {module_name!r} failed "
                         f"({type(e).__name__}: {e})") from None
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"reward {spec!r}: module {module_name!r} has no {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"reward {spec!r}: {attr!r} is not callable")

    def score(example: Example, output: str) -> float:
        return fn(example.prompt, output, example.target)

    return score


# The built-in rewards by name: the fixed table a name saved in a run folder is looked up in.
BUILTIN_REWARDS = {"exact_match": exact_match_reward, "bleu": bleu_reward,
                   "rouge_l": rouge_l_reward, "verify": verify_reward}


def is_builtin_reward(name: str) -> bool:
    """Whether ``name`` is a built-in reward (a name of :data:`BUILTIN_REWARDS`, or task:NAME)."""
    return name in BUILTIN_REWARDS or name.startswith("task:")


def builtin_reward(name: str) -> Reward:
    """The built-in reward ``name``, from the fixed table; ValueError for any other name.

    Nothing is imported: a resumed run resolves the reward its folder names with this,
    so a folder can never make minillm import a module (``user_reward`` is for names
    given on the command line).
    """
    if name in BUILTIN_REWARDS:
        return Reward(name, BUILTIN_REWARDS[name])
    if name.startswith("task:"):
        return Reward(name, task_reward(name[len("task:"):]))
    raise ValueError(f"unknown reward {name!r}; use one of {', '.join(BUILTIN)}, task:NAME "
                     "(a built-in task's verifier) or module:function")


def get_reward(name: str | Reward | Callable) -> Reward:
    """The reward called ``name`` (see the module docstring); a Reward or a callable passes through.

    A plain callable is taken as ``f(example, output) -> float``. A ``module:function``
    name is imported (:func:`user_reward`): give it only names from the command line.
    """
    if isinstance(name, Reward):
        return name
    if callable(name):
        return Reward(getattr(name, "__name__", "reward"), name)
    if not is_builtin_reward(name) and ":" in name:
        return Reward(name, user_reward(name))
    return builtin_reward(name)


# ----------------------------------------------------------------------- scoring


def _short(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def score_outputs(reward: Reward, examples: Sequence[Example], outputs: Sequence[str]) -> np.ndarray:
    """r_i = reward(examples[i], outputs[i]) as a float64 array (N,).

    Raises RewardError (naming the reward, the prompt and the output) when the
    reward raises or returns anything but a finite real number.
    """
    if len(examples) != len(outputs):
        raise ValueError(f"{len(examples)} examples but {len(outputs)} outputs")
    out = np.empty(len(outputs), dtype=np.float64)
    for i, (ex, text) in enumerate(zip(examples, outputs, strict=True)):
        where = f"prompt {_short(ex.prompt)} and output {_short(text)}"
        try:
            r = reward(ex, text)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - reported with the sample, not swallowed
            # (a SystemExit, sys.exit() in the reward, is an error too, never the run's exit)
            raise RewardError(f"reward {reward.name!r} raised {type(e).__name__}: {e} "
                              f"(for {where})") from e
        if not isinstance(r, numbers.Real) or not math.isfinite(float(r)):
            raise RewardError(f"reward {reward.name!r} returned {r!r}, not a finite number "
                              f"(for {where})")
        out[i] = float(r)
    return out


__all__ = [
    "BUILTIN", "BUILTIN_REWARDS", "Reward", "RewardError", "bleu_reward", "builtin_reward",
    "exact_match_reward", "get_reward", "is_builtin_reward", "rouge_l_reward", "score_outputs",
    "task_reward", "user_reward", "verify_reward",
]
