"""Training: SFT and REINFORCE, and the run loop they share.

    loop.py        the run loop both trainers share (steps, evaluation, checkpoints, metrics)
    checks.py      checks of the trainers' settings: each field's type and range
    sft.py         supervised fine-tuning: TrainConfig, train_step, fit
    reinforce.py   the REINFORCE estimator: the surrogate's forward/backward, baselines
    grpo.py        GRPO: group-normalised advantages, the clipped loss, its KL
    rl.py          the REINFORCE trainer: RLConfig, rl_step, fit_rl

What a run writes (checkpoints, trainer_state.json, metrics.jsonl, the lock) is
:mod:`minillm.runfolder`'s; its pictures are :mod:`minillm.plots`'.
"""

from minillm.training.loop import TrainingDiverged
from minillm.training.rl import REFERENCE_DIR, RLConfig, RLState, fit_rl
from minillm.training.sft import TrainConfig, TrainState, fit

__all__ = ["REFERENCE_DIR", "RLConfig", "RLState", "TrainConfig", "TrainState", "TrainingDiverged",
           "fit", "fit_rl"]
