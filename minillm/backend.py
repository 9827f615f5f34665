"""The array backend: NumPy always, CuPy when asked for.

This is the only module that imports CuPy, and it does so lazily, inside the
functions that need it. Every other module asks an array for its module:

    xp = get_xp(x)          # numpy or cupy, whichever owns x

so the math never says ``if gpu:``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEVICES = ("cpu", "cuda")


def _cupy():
    """Import CuPy, or explain why it cannot be used."""
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "device 'cuda' needs CuPy: install the gpu extra (pip install 'minillm-t5[gpu]')"
        ) from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # pragma: no cover - depends on the machine
        raise RuntimeError(f"device 'cuda': CuPy is installed but no GPU is usable ({e})") from e
    if n < 1:  # pragma: no cover
        raise RuntimeError("device 'cuda': CuPy is installed but it sees no GPU")
    return cupy


def get_xp(*arrays: Any):
    """The array module (numpy or cupy) that owns the given arrays.

    Arrays of another type (for example CuPy arrays) carry their module in
    ``type(x).__module__``; anything else (lists, scalars) is treated as NumPy.
    """
    for x in arrays:
        mod = type(x).__module__.split(".")[0]
        if mod == "cupy":
            import sys

            return sys.modules["cupy"]
    return np


def device_of(x: Any) -> str:
    """'cuda' for a CuPy array, else 'cpu'."""
    return "cuda" if get_xp(x) is not np else "cpu"


def xp_for(device: str):
    """The array module for a device name ('cpu' or 'cuda')."""
    if device == "cpu":
        return np
    if device == "cuda":
        return _cupy()
    raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")


def to_device(x: Any, device: str):
    """Move an array, or a (nested) dict of arrays, to 'cpu' or 'cuda' (a copy only when needed).

    Non-array values (ints, floats, strings) pass through unchanged.
    """
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if not hasattr(x, "shape"):
        return x
    if device == "cpu":
        return to_numpy(x)
    xp = xp_for(device)
    return xp.asarray(x)


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of a host or device array, or of a dict of them (CuPy refuses implicit conversion)."""
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if not hasattr(x, "shape"):
        return x
    if get_xp(x) is not np:
        return x.get()
    return np.asarray(x)


def random_uniform(rng: np.random.Generator, shape: tuple, like: Any):
    """Uniform [0, 1) numbers of ``like``'s dtype on ``like``'s device, drawn from ``rng``.

    Drawing on the host keeps one reproducible stream for both backends.
    """
    u = rng.random(shape, dtype=np.float32 if like.dtype == np.float32 else np.float64)
    xp = get_xp(like)
    return u if xp is np else xp.asarray(u)
