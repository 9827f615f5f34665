"""A run's pictures as SVG files, from its metrics.jsonl records (no plotting library needed).

    records = read_metrics("runs/sft/metrics.jsonl")
    plot_loss(records, "runs/sft/loss.svg")     # train loss, held-out loss (log axis), exact match
    plot_tasks(records, "runs/sft/tasks.svg")   # held-out exact match of each task against step

loss.svg: left axis (log scale), the training loss (the mean over each logging
interval) and the held-out loss against the optimizer step; right axis (0-1),
the held-out exact match. tasks.svg: one line per task of the held-out exact
match at each evaluation ("eval" records, then the "final_eval"), and the
overall figure dashed. The charts are drawn by :mod:`minillm.plots.svg`.
:func:`plot_metrics` writes both into a run folder, under :data:`PLOT_NAME` and
:data:`TASKS_PLOT_NAME`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from minillm.plots.svg import COLORS, Axis, Series, line_chart
from minillm.storage.fileio import FILE_MODE, write_text

PLOT_NAME = "loss.svg"
TASKS_PLOT_NAME = "tasks.svg"
# every picture a run folder may hold (loss.png: drawn with matplotlib by earlier versions)
PLOT_NAMES = (PLOT_NAME, TASKS_PLOT_NAME, "loss.png")
EVAL_KINDS = ("eval", "final_eval")  # the held-out evaluations of a run, in step order


def _evals(records: Sequence[dict]) -> list[dict]:
    return [r for r in records if r.get("kind") in EVAL_KINDS]


def _points(records: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the records that have ``key``."""
    rows = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    return [s for s, _ in rows], [v for _, v in rows]


def sizes_note(evals: Sequence[dict]) -> str:
    """What the evaluations scored: "periodic evaluations: the first 270 held-out prompts; final: 900"."""
    periodic = sorted({r.get("n") for r in evals if r.get("kind") == "eval"} - {None})
    final = [r.get("n") for r in evals if r.get("kind") == "final_eval" and r.get("n")]
    parts = []
    if periodic:
        parts.append(f"periodic evaluations: the first {'/'.join(map(str, periodic))} held-out prompts")
    if final:
        parts.append(f"final evaluation: all {final[-1]}")
    return "; ".join(parts)


def loss_chart(records: Sequence[dict]) -> str | None:
    """The SVG of the loss curve, or None when the records hold no loss."""
    train = _points([r for r in records if r.get("kind") == "train"], "loss")
    evals = _evals(records)
    held_loss, held_em = _points(evals, "loss"), _points(evals, "exact_match")
    if not train[0] and not held_loss[0]:
        return None
    series = [Series("train loss", *train, COLORS[0], width=1.0),
              Series("held-out loss", *held_loss, COLORS[1], markers=True)]
    right = None
    if held_em[0]:
        series.append(Series("held-out exact match", *held_em, COLORS[2], right=True, dashed=True,
                             markers=True))
        right = Axis("exact match", lo=0.0, hi=1.0)
    return line_chart(series, "step", Axis("loss (nats / target token)", log=True), right,
                      title="training and held-out loss, held-out exact match",
                      note=sizes_note(evals))


def tasks_chart(records: Sequence[dict]) -> str | None:
    """The SVG of the per-task exact match over steps, or None without a per-task evaluation."""
    evals = [r for r in _evals(records) if isinstance(r.get("per_task"), dict)]
    tasks = sorted({t for r in evals for t in r["per_task"]})
    if not tasks:
        return None
    series = []
    for i, task in enumerate(tasks):
        rows = [(r["step"], r["per_task"][task]) for r in evals
                if isinstance(r["per_task"].get(task), int | float)]
        series.append(Series(task, [s for s, _ in rows], [v for _, v in rows],
                             COLORS[i % len(COLORS)], markers=True))
    series.append(Series("overall", *_points(evals, "exact_match"), "#000000", dashed=True,
                         width=2.0))
    return line_chart(series, "step", Axis("held-out exact match", lo=0.0, hi=1.0),
                      title="held-out exact match per task", note=sizes_note(evals))


def _write(svg: str | None, path: str | os.PathLike) -> bool:
    if svg is None:
        return False
    write_text(path, svg, mode=FILE_MODE)  # readable by all, as the folder's other files
    return True


def plot_loss(records: Sequence[dict], path: str | os.PathLike) -> bool:
    """Write the loss curve of metrics.jsonl ``records`` to ``path`` (atomically); False: nothing to plot."""
    return _write(loss_chart(records), path)


def plot_tasks(records: Sequence[dict], path: str | os.PathLike) -> bool:
    """Write the per-task exact match chart to ``path`` (atomically); False: no per-task evaluation."""
    return _write(tasks_chart(records), path)


def plot_metrics(out_dir: str, records: list[dict]) -> dict[str, str]:
    """Write loss.svg and tasks.svg of ``records`` into ``out_dir``; {"loss"/"tasks": path written}.

    A chart with nothing to draw is not written; a failure is one line on stderr
    (a picture never fails the run).
    """
    written = {}
    for key, name, plot in (("loss", PLOT_NAME, plot_loss), ("tasks", TASKS_PLOT_NAME, plot_tasks)):
        path = os.path.join(out_dir, name)
        try:
            if plot(records, path):
                written[key] = path
        except Exception as e:  # noqa: BLE001 - a plot must not end a training run
            print(f"minillm: {path} not written ({e})", file=sys.stderr)
    return written
