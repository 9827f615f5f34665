"""Pictures of a run, as SVG text: no plotting library, nothing but the records and their numbers.

    from minillm.plots import plot_metrics
    plot_metrics("runs/sft", read_metrics("runs/sft/metrics.jsonl"))   # loss.svg, tasks.svg

    charts.py   the run's charts from its metrics.jsonl records: the loss curve (loss.svg) and
                the held-out exact match of each task (tasks.svg)
    svg.py      line charts as SVG text: axes, ticks, labels, a legend
"""

from minillm.plots.charts import (
    PLOT_NAME,
    PLOT_NAMES,
    TASKS_PLOT_NAME,
    loss_chart,
    plot_loss,
    plot_metrics,
    plot_tasks,
    tasks_chart,
)
from minillm.plots.svg import COLORS, Axis, Series, line_chart

__all__ = ["COLORS", "PLOT_NAME", "PLOT_NAMES", "TASKS_PLOT_NAME", "Axis", "Series", "line_chart",
           "loss_chart", "plot_loss", "plot_metrics", "plot_tasks", "tasks_chart"]
