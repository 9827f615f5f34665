"""Training: SFT and REINFORCE, their run loop, run-folder checkpoints.

    loop.py        the run loop both trainers share (steps, evaluation, checkpoints, metrics)
    sft.py         supervised fine-tuning: TrainConfig, train_step, fit
    reinforce.py   the REINFORCE estimator: the surrogate's forward/backward, baselines
    rl.py          the REINFORCE trainer: RLConfig, rl_step, fit_rl
    run_folder.py  metrics.jsonl, loss.svg / tasks.svg, the settings and Generator in trainer_state.json
    checkpoint.py  the checkpoint files, committed atomically
    journal.py     the journal that commits a set of files as one unit, and its recovery
    plot.py        the loss curve and the per-task exact match (SVG)
    svg.py         line charts as SVG text (no plotting library)
"""

from minillm.training import checkpoint
from minillm.training.loop import TrainingDiverged
from minillm.training.rl import REFERENCE_DIR, RLConfig, RLState, fit_rl
from minillm.training.run_folder import (
    METRICS_NAME,
    PLOT_NAME,
    PLOT_NAMES,
    TASKS_PLOT_NAME,
    read_metrics,
    write_metrics,
)
from minillm.training.sft import TrainConfig, TrainState, fit

__all__ = [
    "METRICS_NAME", "PLOT_NAME", "PLOT_NAMES", "REFERENCE_DIR", "RLConfig", "RLState", "TrainConfig",
    "TASKS_PLOT_NAME", "TrainState", "TrainingDiverged", "checkpoint", "fit", "fit_rl", "read_metrics",
    "write_metrics",
]
