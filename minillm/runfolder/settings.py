"""The settings and the Generator as trainer_state.json keeps them.

    @dataclass(frozen=True)
    class TrainConfig(JSONSettings): ...          # to_dict() / from_dict() for trainer_state.json
    rng = restore_generator(state["rng_state"])  # a saved bit generator, from a fixed table

The trainers' settings classes (:class:`minillm.training.TrainConfig`,
:class:`minillm.training.RLConfig`) derive from :class:`JSONSettings`; the
reader of trainer_state.json (:mod:`minillm.runfolder.state_file`) checks each
field's type before ``from_dict`` builds the class.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from minillm.runfolder.checkpoint import STATE_NAME
from minillm.runfolder.state_file import BIT_GENERATORS


class JSONSettings:
    """JSON round trip for a frozen settings dataclass (trainer_state.json keeps it).

    ``betas`` is a tuple in Python and a list in JSON; unknown keys are an error
    naming them (``_label`` says whose settings they are).
    """

    _label = "setting"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if "betas" in d:
            d["betas"] = list(d["betas"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls._label}(s): {', '.join(unknown)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


def restore_generator(rng_state: dict) -> np.random.Generator:
    """The Generator whose ``bit_generator.state`` was saved as ``rng_state`` (trainer_state.json).

    Only the bit generators of :data:`BIT_GENERATORS` are restored: the name in the
    file picks a class from that table, never an attribute looked up by name.
    """
    name = rng_state.get("bit_generator") if isinstance(rng_state, dict) else None
    if not isinstance(name, str) or name not in BIT_GENERATORS:
        raise ValueError(f"{STATE_NAME}: rng_state.bit_generator is {name!r}; "
                         f"a run's Generator is one of {', '.join(BIT_GENERATORS)}")
    rng = np.random.Generator(BIT_GENERATORS[name]())
    rng.bit_generator.state = rng_state
    return rng
