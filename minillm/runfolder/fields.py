"""The checks of trainer_state.json's fields, each failure one line naming the file and the field.

    c = FieldChecker(path)
    c.int("step", state["step"], 0, steps)          # StateError "PATH: step: expected ..., got ..."
    config = check_settings(c, "train_config", state["train_config"], TrainConfig)

The schema itself (which fields, in which ranges) is :mod:`minillm.runfolder.state_file`'s;
these are the checks it is made of, and :class:`StateError` is what every reader of a
run folder's files raises.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any

MAX_INT = 2**53  # a setting's integers are exact as JSON numbers (no sizes or steps beyond)


class StateError(ValueError):
    """A trainer_state.json that cannot be resumed: one line naming the file and the field."""


def shown(v: Any) -> str:
    """A value as the message shows it: JSON, cut to 60 characters."""
    try:
        s = json.dumps(v)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite JSON number (not a bool)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class FieldChecker:
    """The checks of one file: each failure a StateError ``path: field: what, got value``."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, field: str, what: str, v: Any = None, got: bool = True) -> StateError:
        return StateError(f"{self.path}: {field}: {what}" + (f", got {shown(v)}" if got else ""))

    def int(self, field: str, v: Any, lo: int = 0, hi: int | None = None) -> int:
        if not is_int(v) or v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise self.fail(field, f"expected an integer {rng}", v)
        return v

    def keys(self, field: str, d: Any, required: tuple, optional: tuple = ()) -> dict:
        if not isinstance(d, dict):
            raise self.fail(field, "expected an object", d)
        missing = [k for k in required if k not in d]
        if missing:
            raise self.fail(field, f"missing key(s) {', '.join(missing)}", got=False)
        extra = sorted(set(d) - set(required) - set(optional))
        if extra:
            raise self.fail(field, f"unknown key(s) {', '.join(map(str, extra))}", got=False)
        return d

    def typed(self, field: str, v: Any, allowed: tuple, lo: int | None = None) -> None:
        if v is None and None in allowed:
            return
        if int in allowed and is_int(v):
            if (lo is not None and v < lo) or abs(v) > MAX_INT:
                raise self.fail(field, f"expected an integer in [{lo or 0}, 2**53]", v)
            return
        if float in allowed and is_number(v):
            return
        if any(t not in (None, int, float) and isinstance(v, t) and not isinstance(v, bool)
               for t in allowed):
            return
        names = {None: "null", int: "an integer", float: "a finite number", str: "a string",
                 list: "a list", bool: "true or false"}
        if bool in allowed and isinstance(v, bool):
            return
        raise self.fail(field, "expected " + " or ".join(names.get(t, str(t)) for t in allowed), v)


def _field_types(hint: Any) -> tuple:
    """The JSON types a settings field of type ``hint`` allows (tuples are lists in JSON)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for a in typing.get_args(hint) for t in _field_types(a))
    if hint is type(None):
        return (None,)
    if origin is tuple or hint is tuple:
        return (list,)
    return {int: (int,), float: (float,), str: (str,), bool: (bool,)}.get(hint, (hint,))


def check_settings(c: FieldChecker, key: str, d: Any, cls) -> Any:
    """``cls.from_dict(d)`` after each field's JSON type is checked against the dataclass."""
    names = [f.name for f in dataclasses.fields(cls)]
    c.keys(key, d, tuple(names))
    hints = typing.get_type_hints(cls)
    for name in names:
        allowed = _field_types(hints[name])
        c.typed(f"{key}.{name}", d[name], allowed)
        if list in allowed and isinstance(d[name], list):
            n = len(typing.get_args(hints[name]))
            if len(d[name]) != n or not all(is_number(x) for x in d[name]):
                raise c.fail(f"{key}.{name}", f"expected a list of {n} finite numbers", d[name])
    try:
        return cls.from_dict(d)
    except (ValueError, TypeError) as e:
        raise c.fail(key, str(e), got=False) from None
