"""When a run stops learning: the best evaluation by a chosen metric, early stopping, overfitting.

    rule = EarlyStopping(metric="loss", patience=5)
    rule.is_better(entry, best)                  # lower held-out loss (or higher exact match)
    waited = evaluations_since(best["step"], step, eval_every)
    rule.should_stop(waited)                     # True once ``patience`` evaluations did not improve
    note = overfitting(history)                  # the held-out loss rises while the training loss falls

As transformers' ``Trainer`` with ``load_best_model_at_end``, ``metric_for_best_model``
and its ``EarlyStoppingCallback(early_stopping_patience)``: one metric picks the best
evaluation (kept in best/) and stops the run once ``patience`` evaluations in a row
have not beaten it. The metrics:

    loss          the held-out loss (mean target-token NLL, teacher-forced): lower is better
    exact_match   the fraction of greedy outputs equal to their targets: higher is better,
                  a tie goes to the lower loss (the built-in suite's rule)

The count of evaluations without improvement is not stored: evaluations fall at
every ``eval_every`` steps, so those after the best one's step are

    waited = floor(step / eval_every) - floor(best_step / eval_every)

and a resumed run counts on exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

METRICS = ("loss", "exact_match")  # what picks the best evaluation


@dataclass(frozen=True)
class EarlyStopping:
    """``metric`` picks the best evaluation; ``patience`` evaluations without a better one
    stop the run (0: never). ``stopped_at``: the step where it stopped (None: it has not)."""

    metric: str = "loss"
    patience: int = 0
    stopped_at: int | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"early stopping metric must be one of {', '.join(METRICS)}, "
                             f"got {self.metric!r}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"early stopping patience must be an integer >= 0, got {self.patience!r}")

    def is_better(self, entry: dict[str, Any], best: dict[str, Any]) -> bool:
        """Whether the evaluation ``entry`` beats ``best`` ({"loss"[, "exact_match"]} each).

        An evaluation without exact match (loss only) never beats on exact match.
        """
        if self.metric == "loss":
            return entry["loss"] < best["loss"]
        em, best_em = entry.get("exact_match"), best.get("exact_match")
        if em is None:  # a loss-only evaluation
            return False
        if best_em is None or em != best_em:
            return best_em is None or em > best_em
        return entry["loss"] < best["loss"]

    def should_stop(self, waited: int) -> bool:
        """``waited`` evaluations without improvement are the patience's end (never with 0)."""
        return self.patience > 0 and waited >= self.patience

    def reason(self, waited: int, best: dict[str, Any]) -> str:
        """The line a stopped run says: which metric, for how long, the best step."""
        what = "lower held-out loss" if self.metric == "loss" else "higher held-out exact match"
        figure = f"{self.metric.replace('_', ' ')} {best[self.metric]:.4f}"
        return (f"early stopping: no {what} in {waited} evaluations since step {best['step']} "
                f"({figure}); best/ holds step {best['step']}")


def evaluations_since(best_step: int, step: int, eval_every: int) -> int:
    """Periodic evaluations (at every ``eval_every`` steps) after ``best_step``, up to ``step``."""
    return step // eval_every - best_step // eval_every if eval_every else 0


class Point(NamedTuple):
    """One evaluation as the overfitting note reads it: its step, held-out and training loss."""

    step: int
    held_out: float
    train: float  # the mean training loss of the steps since the evaluation before


def overfitting(history: Sequence[Point], rise: float = 0.02) -> str | None:
    """The overfitting note, when the held-out loss rises while the training loss falls; else None.

    With ``low`` the evaluation of the lowest held-out loss: the last two evaluations
    come after it, both with a held-out loss above low's by more than ``rise``
    (relative: 2%), the last above the one before it, and the training loss now
    below the training loss at ``low``.
    """
    if len(history) < 3:
        return None
    low = min(history, key=lambda p: p.held_out)
    before, now = history[-2], history[-1]
    if before.step <= low.step or not now.held_out > before.held_out:
        return None
    if before.held_out <= low.held_out * (1 + rise) or not now.train < low.train:
        return None
    return (f"overfitting: the held-out loss rose from {low.held_out:.4f} (step {low.step}, its "
            f"lowest) to {now.held_out:.4f} while the training loss fell from {low.train:.4f} "
            f"to {now.train:.4f}")
