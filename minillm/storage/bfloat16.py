"""bfloat16 <-> float32 in NumPy, bit for bit (NumPy has no bfloat16 type: its 16 bits travel as uint16).

A bfloat16 is the top half of a float32: sign, the same 8 exponent bits, 7 of the 23
mantissa bits. So

    float32 bits  = bfloat16 bits << 16                          exact: every bfloat16 is a float32
    bfloat16 bits = round_half_even(float32 bits / 2**16)        to the nearest, ties to even

The rounding adds 0x7FFF plus the lowest kept bit before the shift: a dropped half
below 0x8000 rounds down, above it up, exactly 0x8000 to the even neighbour. This is
torch's ``tensor.to(torch.bfloat16)`` (c10's ``round_to_nearest_even``): +-inf stay
+-inf, a finite value past the largest bfloat16 (about 3.3895e38) plus half a step
becomes inf, every NaN becomes the quiet NaN 0x7FC0. A float64 array is rounded to
float32 first (as torch converts a double), so it may be rounded twice.
"""

from __future__ import annotations

import numpy as np

NAN_BITS = 0x7FC0  # the bfloat16 NaN that every NaN becomes


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """float32 array of the same shape: bfloat16 bit patterns (uint16) widened exactly."""
    bits = np.asarray(bits)
    if bits.dtype != np.uint16:
        raise TypeError(f"bfloat16 bits come as uint16, got {bits.dtype}")
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns of a float array (float64 and float16 go through float32).

    Round to nearest, ties to even; NaN -> 0x7FC0 (see the module docstring).
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"bfloat16 is made from floats, got {x.dtype}")
    f = np.asarray(x, dtype=np.float32)
    u = f.view(np.uint32)
    lsb = (u >> 16) & 1  # the lowest bit kept: ties go to where it is 0
    rounded = ((u + (0x7FFF + lsb)) >> 16).astype(np.uint16)  # no wrap: NaN is the only overflow
    return np.where(np.isnan(f), np.uint16(NAN_BITS), rounded)
