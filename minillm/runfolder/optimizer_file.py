"""The reader of optimizer.safetensors: the AdamW moments of a run folder, checked against the model.

A missing, truncated or garbage file, a missing or unknown moment, a wrong shape
or a non-finite value is one line naming the file (and the tensor). The names, shapes
and dtypes are checked from the header, before a tensor is read: the file can make
minillm read no more than the model's moments.
"""

from __future__ import annotations

import os

import numpy as np

from minillm.runfolder.fields import StateError

FLOATS = ("F64", "F32", "F16", "BF16")  # the moments' stored dtypes


def read_optimizer(path: str, params: dict, t: int) -> dict[str, np.ndarray]:
    """The AdamW moments of optimizer.safetensors, checked against the model's ``params``.

    After ``t`` > 0 steps: "m.NAME" and "v.NAME" for every parameter, each with its
    parameter's shape, finite (v also >= 0), and nothing else; at step 0, none. A
    missing, truncated or garbage file is one line naming it.
    """
    from minillm.storage.safetensors_file import read_header, read_safetensors

    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: missing (the optimizer state is needed to resume)")
    folder = os.path.dirname(path)
    entries, _, _ = read_header(path, folder)  # names and shapes checked before any tensor is read
    want = {f"{p}.{k}": tuple(v.shape) for k, v in params.items() for p in "mv"} if t else {}
    missing, extra = sorted(set(want) - set(entries)), sorted(set(entries) - set(want))
    if missing or extra:
        what = (f"missing moment(s) {', '.join(missing[:3])}" if missing
                else f"unknown tensor(s) {', '.join(extra[:3])}")
        more = len(missing or extra) - 3
        raise StateError(f"{path}: {what}{f' and {more} more' if more > 0 else ''} "
                         f"(after {t} steps, one m and one v per parameter)")
    for name, e in entries.items():
        if tuple(e["shape"]) != want[name]:
            raise StateError(f"{path}: {name}: shape {tuple(e['shape'])}, its parameter's is {want[name]}")
        if e["dtype"] not in FLOATS:
            raise StateError(f"{path}: {name}: dtype {e['dtype']}, not a float")
    arrays = read_safetensors(path, folder)
    for name, a in arrays.items():
        if not np.isfinite(a).all() or (name[0] == "v" and (a < 0).any()):
            raise StateError(f"{path}: {name}: not finite (or a negative second moment)")
    return arrays
