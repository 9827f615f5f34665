"""The array backend: NumPy always, CuPy when asked for.

This is the only module that imports CuPy, and it does so lazily, inside the
functions that need it. Every other module asks an array for its module:

    xp = get_xp(x)          # numpy or cupy, whichever owns x

so the math never says ``if gpu:``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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


def use_gpu(index: int) -> int:
    """Make GPU ``index`` modulo the GPUs seen CuPy's current device (a rank's GPU); its number."""
    cupy = _cupy()
    n = cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(index % n).use()
    return index % n


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


def random_bits16(rng: np.random.Generator, shape: tuple, like: Any):
    """Uniform random uint16 values of the given shape on ``like``'s device, drawn from ``rng``.

    Raw bits from the generator's bit generator, four values per 64-bit draw: a
    quarter of the draws that uniform floats take. Drawn on the host, so both
    backends see one reproducible stream; half the bytes of float32 to copy to a GPU.
    """
    n = math.prod(shape)
    raw = rng.bit_generator.random_raw((n + 3) // 4)  # (ceil(n/4),) uint64
    bits = raw.view(np.uint16)[:n].reshape(shape)
    xp = get_xp(like)
    return bits if xp is np else xp.asarray(bits)


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Ask glibc's malloc to keep freed memory for reuse, up to ``limit_bytes``. Process-wide.

    A training step allocates and frees the same large arrays every step. By
    default glibc returns every freed block above its mmap threshold (128 KiB,
    rising to at most 32 MiB) to the system, and the next step page-faults it
    back in, zero-filled: about a fifth of the reference training step. Raising
    the mmap and trim thresholds keeps those blocks in the heap; peak memory is
    unchanged. The CLI calls this; call it yourself in a training script.
    Returns False where it does not apply (a C library other than glibc).
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # pragma: no cover - glibc under another name
        return False
    limit = min(int(limit_bytes), 2**31 - 1)  # mallopt takes an int
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, limit)) and bool(libc.mallopt(m_trim_threshold, limit))


# ------------------------------------------------------------ blockwise elementwise work

BLOCK_ELEMENTS = 1 << 16
"""Elements per block of ``blockwise`` work: 256 KiB of float32, which fits in L2."""


def as_rows(x):
    """x (..., N) as a 2-D (rows, N) array: a view when x is contiguous (outputs must be), else a copy."""
    if x.ndim == 0:
        return x.reshape(1, 1)
    return x.reshape(math.prod(x.shape[:-1]), x.shape[-1])  # (rows, N)


def blockwise(fn: Callable[..., None], *arrays, block: int | None = None) -> None:
    """Call ``fn(a[i:j], b[i:j], ...)`` over row blocks that together cover every row.

    Every array has the same length along axis 0; ``fn`` reads and writes its
    blocks in place (``out=``), and a row's result depends only on that row, so
    the results do not depend on the block size. On NumPy the rows are cut into
    blocks of about ``block`` elements (default ``BLOCK_ELEMENTS``): a chain of
    elementwise passes over one block reads the L2 cache rather than memory,
    which made the training step's elementwise work about 2x faster than
    whole-array passes. On other array modules (CuPy) ``fn`` runs once on the
    whole arrays.
    """
    first = arrays[0]
    if first.size == 0:
        return
    if get_xp(first) is not np:
        fn(*arrays)
        return
    block = BLOCK_ELEMENTS if block is None else block
    n_rows = first.shape[0]
    rows = max(1, block // (first.size // n_rows))  # rows per block
    for i in range(0, n_rows, rows):
        fn(*(a[i:i + rows] for a in arrays))


def sum_of_squares(x, leaf: int = BLOCK_ELEMENTS):
    """sum(x * x), as (x * x).sum() gives it, bit for bit, without the (x * x) array.

    NumPy sums a contiguous array pairwise: it splits n elements at n2 = n // 2 rounded
    down to a multiple of 8 and adds the two halves' sums. This takes the same splits
    down to pieces of at most ``leaf`` elements, squares and sums each piece (NumPy's
    own sum of that piece is the same subtree) and adds the halves in the array's dtype,
    so the temporary is one piece. ``leaf`` is at least 128, NumPy's own unsplit piece.
    On other array modules (CuPy): (x * x).sum(). Returns a 0-d value of x's dtype.
    """
    if get_xp(x) is not np:
        return (x * x).sum()
    leaf = max(int(leaf), 128)
    flat = x.reshape(-1)  # (n,) a view of a contiguous x

    def tree(a):
        n = a.shape[0]
        if n <= leaf:
            return (a * a).sum()
        n2 = n // 2
        n2 -= n2 % 8
        return tree(a[:n2]) + tree(a[n2:])
    return tree(flat)
