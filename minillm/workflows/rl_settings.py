"""The settings of ``minillm rl`` as one call: :class:`RLSettings`, one field per flag.

``dir`` is the positional DIR. The run's own settings (model, data, reward, run
folder) are :class:`RunSettings`' fields, written here; then comes one field per
REINFORCE setting that has a flag, made from
:class:`minillm.training.rl_config.RLConfig` (where each is defined once, with its
meaning, default and check), with the same name and the default None: "not given",
which means RLConfig's default, or on resume the run's own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from minillm.training.algorithms import ALGOS
from minillm.training.rl_config import RLConfig, algo_settings, flag_settings
from minillm.workflows.checks import SettingsError, flag

DEFAULT_OUT = os.path.join("runs", "rl")
DEFAULTS = RLConfig()  # what a REINFORCE setting left at None means
CONFIG_FIELDS = tuple(f.name for f in flag_settings())  # RLSettings fields that are RLConfig fields
# the settings of one algorithm only: given with another, they are refused
ALGO_FIELDS = {algo: tuple(algo_settings(algo)) for algo in ALGOS}
__all__ = ["ALGO_FIELDS", "CONFIG_FIELDS", "DEFAULTS", "DEFAULT_OUT", "RLSettings", "RunSettings",
           "rl_config"]


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The ``minillm rl`` flags that are not REINFORCE settings: the model, data, reward, run folder.

    ``tasks``: comma-separated names (or a sequence of names).
    """

    dir: str | None = None
    out: str = DEFAULT_OUT
    data: str | None = None
    eval_data: str | None = None
    tasks: str | Sequence[str] | None = None
    reward: str | None = None
    n_train: int = 2000
    n_eval: int = 200
    max_source_len: int = 64
    dtype: str = "float32"
    save_dtype: str | None = None
    device: str = "cpu"
    threads: int | str | None = None  # BLAS threads: a count, "auto" (the idle cores) or None
    resume: bool = False
    overwrite: bool = False
    stop_after: int | None = None
    no_progress: bool = False


def _settings_class() -> type:
    """RLSettings: RunSettings' fields, then one per RLConfig setting with a flag, default None."""
    fields = [(f.name, f.type if "None" in f.type else f"{f.type} | None", dataclasses.field(default=None))
              for f in flag_settings()]
    cls = dataclasses.make_dataclass("RLSettings", fields, bases=(RunSettings,), frozen=True)
    cls.__module__, cls.__doc__ = __name__, (
        "One field per ``minillm rl`` flag: :class:`RunSettings`', then each REINFORCE setting of "
        ":class:`minillm.training.rl_config.RLConfig` that has a flag (None: not given).")
    return cls


RLSettings = _settings_class()


def rl_config(s) -> RLConfig:
    """The RLConfig of a new run: the settings given, RLConfig's defaults for the rest.

    A setting of another algorithm than ``s.algo`` is refused (SettingsError naming its flag).
    """
    algo = s.algo or DEFAULTS.algo
    other = [n for a, names in ALGO_FIELDS.items() if a != algo for n in names
             if getattr(s, n) is not None]
    if other:
        flags = ", ".join(flag(n) for n in other)
        raise SettingsError(f"{flags} {'is' if len(other) == 1 else 'are'} not a setting of "
                            f"--algo {algo}")
    return RLConfig(**{n: getattr(s, n) for n in CONFIG_FIELDS if getattr(s, n) is not None})
