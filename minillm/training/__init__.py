"""Training: SFT and REINFORCE, and the run loop they share.

    loop.py        the run loop both trainers share (steps, evaluation, checkpoints, metrics)
    update.py      the tail of every optimizer step: clip, check, step, check (TrainingDiverged)
    checks.py      checks of the trainers' settings: each field's type and range
    sft.py         supervised fine-tuning: TrainConfig, the loss and gradient, train_step
    sft_trainer.py SFT's run: the data stream, held-out evaluation, the best; fit
    reinforce.py   the REINFORCE estimator: the surrogate's forward/backward, baselines
    grpo.py        GRPO: group-normalised advantages, the clipped loss, its KL
    algorithms.py  the policy-gradient algorithms, one row each: advantages, loss and seed gradient
    rollout.py     a REINFORCE step's samples and every sequence's figures
    rl_config.py   RLConfig: each REINFORCE setting defined once
    rl.py          the REINFORCE trainer: rl_step, fit_rl

What a run writes (checkpoints, trainer_state.json, metrics.jsonl, the lock) is
:mod:`minillm.runfolder`'s; its pictures are :mod:`minillm.plots`'.
"""

from minillm.training.rl import REFERENCE_DIR, RLConfig, RLState, fit_rl
from minillm.training.sft import TrainConfig, TrainState
from minillm.training.sft_trainer import fit
from minillm.training.update import TrainingDiverged

__all__ = ["REFERENCE_DIR", "RLConfig", "RLState", "TrainConfig", "TrainState", "TrainingDiverged",
           "fit", "fit_rl"]
