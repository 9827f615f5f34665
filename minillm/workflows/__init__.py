"""Workflows: what each ``minillm`` command does, as one Python call each.

    from minillm.workflows import TrainSettings, train
    result = train(TrainSettings(preset="tiny", steps=50, out="runs/tiny"))

    command            settings            call                      returns
    minillm train      TrainSettings       train(settings)           TrainResult
    minillm rl         RLSettings          rl(settings)              RLResult
    minillm eval       EvalSettings        evaluate(settings)        the JSON dict it prints
    minillm generate   GenerateSettings    generate(settings)        list[str], the outputs
    minillm data       DataSettings        make_data(settings)       list[Example]

Each settings class is a frozen dataclass with one field per flag of its command
(same names, same defaults). A workflow checks its settings before it writes
anything and raises ValueError / FileNotFoundError with a one-line message
(:class:`SettingsError`, a ValueError, for contradictory settings); the CLI
prints that line and exits with status 2. ``minillm.workflows.presets`` has the
``minillm train`` presets. (The names ``train``, ``rl`` and ``generate`` here
are the functions; their modules are ``minillm.workflows.train`` and so on.)

Each command's module (a recipe: train.py, rl.py, evaluate.py, generate.py,
data.py) reads as the steps of its command and imports no other recipe; what
they share is in the modules beside them:

    checks.py      the checks of settings every workflow makes first (one line naming the flag)
    runs.py        a run folder's data provenance, resuming it, best/ in --save-dtype
    run_data.py    a run's examples from its trainer state, encoded; the tasks' verifiers
    models.py      the model and tokenizer a new run starts from
    presets.py     the ``minillm train`` presets
"""

from minillm.evaluation import format_eval, format_policy_eval  # what the CLI prints results with
from minillm.training import TrainingDiverged
from minillm.workflows.checks import SettingsError
from minillm.workflows.data import DataSettings, make_data, task_samples
from minillm.workflows.evaluate import EvalSettings, evaluate
from minillm.workflows.generate import GenerateSettings, generate
from minillm.workflows.rl import RLResult, RLSettings, rl
from minillm.workflows.train import TrainResult, TrainSettings, train

__all__ = [
    "DataSettings", "EvalSettings", "GenerateSettings", "RLResult", "RLSettings", "SettingsError",
    "TrainResult", "TrainSettings", "TrainingDiverged", "evaluate", "generate", "make_data", "rl",
    "format_eval", "format_policy_eval", "task_samples", "train",
]
