"""Training: SFT and REINFORCE, their run loop, run-folder checkpoints."""

from minillm.training import checkpoint
from minillm.training.reinforce import REFERENCE_DIR, RLConfig, RLState, fit_rl
from minillm.training.sft import (
    METRICS_NAME,
    PLOT_NAME,
    TrainConfig,
    TrainingDiverged,
    TrainState,
    fit,
)

__all__ = [
    "METRICS_NAME", "PLOT_NAME", "REFERENCE_DIR", "RLConfig", "RLState", "TrainConfig",
    "TrainState", "TrainingDiverged", "checkpoint", "fit", "fit_rl",
]
