"""bfloat16 bit for bit, and minillm's safetensors reader/writer against the safetensors library.

The bfloat16 oracle here is independent of minillm.storage.bfloat16: the two
bfloat16 neighbours of a float32 are found by truncating its bits, and the nearer
one (ties: the even one) is chosen by exact float64 distances.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.storage.bfloat16 import bfloat16_to_float32, float32_to_bfloat16
from minillm.storage.safetensors_file import read_header, read_safetensors, write_safetensors


def f32(bits: int) -> np.float32:
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


def nearest_bf16(x: np.float32) -> int:
    """The bfloat16 nearest x (ties to the even pattern), by comparing the two neighbours."""
    bits = int(np.array([x], dtype=np.float32).view(np.uint32)[0])
    lo = bits >> 16  # truncation: same sign, magnitude <= |x|
    if bits & 0xFFFF == 0:
        return lo
    hi = lo + 1  # next magnitude up (0x7F7F + 1 = inf: fine, inf is its neighbour)
    xv = float(x)
    d_lo = abs(xv - float(f32(lo << 16)))
    d_hi = abs(float(f32(hi << 16)) - xv) if (hi & 0x7FFF) != 0x7F80 else None
    if d_hi is None:  # above the largest bfloat16: inf from the halfway point on (IEEE overflow)
        half = float(f32(lo << 16)) + (float(f32(lo << 16)) - float(f32((lo - 1) << 16))) / 2
        return hi if abs(xv) >= abs(half) else lo
    if d_lo != d_hi:
        return lo if d_lo < d_hi else hi
    return lo if lo % 2 == 0 else hi


# ------------------------------------------------------------------ bfloat16


@pytest.mark.parametrize("value, bits", [
    (1.0, 0x3F80), (-2.0, 0xC000), (0.0, 0x0000), (-0.0, 0x8000), (np.inf, 0x7F80), (-np.inf, 0xFF80),
    (np.nan, 0x7FC0), (-np.nan, 0x7FC0),
    (1.0 + 2.0**-8, 0x3F80),         # exactly halfway between 0x3F80 and 0x3F81: to even
    (1.0 + 3 * 2.0**-8, 0x3F82),     # halfway between 0x3F81 and 0x3F82: to even
    (1.0 + 2.0**-8 + 2.0**-20, 0x3F81),  # just above halfway: up
    (3.3895313892515355e38, 0x7F7F),  # the largest bfloat16, exact
    (np.finfo(np.float32).max, 0x7F80),  # past it by more than half a step: inf
    (-np.finfo(np.float32).max, 0xFF80),
])
def test_bit_patterns(value, bits):
    assert int(float32_to_bfloat16(np.float32(value))) == bits


@pytest.mark.parametrize("bits, expected", [
    (0x00008000, 0x0000),  # half of the smallest bfloat16 subnormal: to even (zero)
    (0x00018000, 0x0002),  # halfway between subnormals 1 and 2: to even
    (0x00008001, 0x0001),  # above halfway: up
    (0x7F7F8000, 0x7F80),  # halfway between the largest bfloat16 and inf: to even (inf)
    (0x7F7F7FFF, 0x7F7F),
    (0x7FA00000, 0x7FC0),  # a signalling NaN becomes the quiet NaN
    (0xFFFFFFFF, 0x7FC0),
])
def test_bit_patterns_from_float32_bits(bits, expected):
    assert int(float32_to_bfloat16(f32(bits))) == expected


def test_every_bfloat16_widens_exactly_and_comes_back():
    """All 65536 patterns: the top half of the float32; back to the same bits (NaNs: to 0x7FC0)."""
    bits = np.arange(1 << 16, dtype=np.uint16)
    wide = bfloat16_to_float32(bits)
    assert wide.dtype == np.float32
    assert np.array_equal(wide.view(np.uint32), bits.astype(np.uint32) << 16)
    back = float32_to_bfloat16(wide)
    nan = np.isnan(wide)
    assert nan.sum() == 2 * 127  # exponent all ones, mantissa not zero, either sign
    assert np.array_equal(back[~nan], bits[~nan])
    assert (back[nan] == 0x7FC0).all()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF).filter(lambda b: (b & 0x7FFF) <= 0x7F80))
def test_bfloat16_to_float32_to_bfloat16_is_identity(bits):
    b = np.array([bits], dtype=np.uint16)
    assert float32_to_bfloat16(bfloat16_to_float32(b))[0] == bits


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 0xFFFFFFFF).filter(lambda b: (b & 0x7FFFFFFF) <= 0x7F800000))
def test_float32_rounds_to_the_nearest_bfloat16_ties_to_even(bits):
    x = f32(bits)
    assert int(float32_to_bfloat16(np.array([x]))[0]) == nearest_bf16(x)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=40))
def test_rounding_is_elementwise_and_keeps_shape(values):
    x = np.array(values, dtype=np.float32).reshape(-1, 1)
    out = float32_to_bfloat16(x)
    assert out.shape == x.shape and out.dtype == np.uint16
    assert [int(b) for b in out.ravel()] == [nearest_bf16(v) for v in x.ravel()]


def test_float64_goes_through_float32():
    x = np.array([1.0 + 2.0**-8 + 2.0**-30])  # float32 rounds this to the tie, which goes to even
    assert int(float32_to_bfloat16(x)[0]) == 0x3F80
    with pytest.raises(TypeError, match="uint16"):
        bfloat16_to_float32(np.zeros(2, np.int32))
    with pytest.raises(TypeError, match="floats"):
        float32_to_bfloat16(np.zeros(2, np.int32))


# ------------------------------------------------------------------ the file format


def sample_tensors(rng):
    return {"w.weight": rng.standard_normal((3, 5)).astype(np.float32),
            "h.weight": rng.standard_normal(4).astype(np.float16),
            "d.weight": rng.standard_normal((2, 2)),
            "i.index": np.arange(6, dtype=np.int64).reshape(2, 3),
            "empty": np.zeros((0, 4), np.float32)}


def test_written_files_read_by_safetensors_and_back(tmp_path):
    from safetensors.numpy import load_file

    t = sample_tensors(np.random.default_rng(0))
    write_safetensors(tmp_path / "a.safetensors", t, metadata={"format": "pt"})
    theirs = load_file(tmp_path / "a.safetensors")
    ours = read_safetensors(tmp_path / "a.safetensors")
    for got in (theirs, ours):
        assert set(got) == set(t)
        for k in t:
            assert got[k].dtype == t[k].dtype and np.array_equal(got[k], t[k])
    assert all(a.flags.writeable for a in ours.values())


def test_files_of_safetensors_read_exactly(tmp_path):
    from safetensors.numpy import save_file

    t = sample_tensors(np.random.default_rng(1))
    save_file(t, tmp_path / "b.safetensors", metadata={"format": "np"})
    got = read_safetensors(tmp_path / "b.safetensors")
    assert set(got) == set(t) and all(np.array_equal(got[k], t[k]) for k in t)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_write_in_a_dtype(tmp_path, dtype):
    from safetensors import safe_open

    x = np.random.default_rng(2).standard_normal((7, 3)).astype(np.float32)
    write_safetensors(tmp_path / "c.safetensors", {"x": x}, dtype=dtype)
    with safe_open(tmp_path / "c.safetensors", framework="np") as f:  # the library's header parse
        assert f.get_slice("x").get_dtype() == {"float32": "F32", "float16": "F16", "bfloat16": "BF16",
                                                "float64": "F64"}[dtype]
    got = read_safetensors(tmp_path / "c.safetensors")["x"]
    if dtype == "bfloat16":
        assert got.dtype == np.float32
        assert np.array_equal(got.view(np.uint32) >> 16, [[nearest_bf16(v) for v in row] for row in x])
        assert np.array_equal(got.view(np.uint32) & 0xFFFF, np.zeros_like(x, np.uint32))
    else:
        assert np.array_equal(got, x.astype(dtype))


def test_bfloat16_file_of_another_writer(tmp_path):
    """A BF16 tensor laid out by hand as the format says (the bits of 1, -2, 0.5, inf) reads as float32."""
    data = np.array([0x3F80, 0xC000, 0x3F00, 0x7F80], "<u2").tobytes()
    header = json.dumps({"b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "d.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + data)
    got = read_safetensors(tmp_path / "d.safetensors")["b"]
    assert got.dtype == np.float32 and got.tolist() == [[1.0, -2.0], [0.5, np.inf]]


def _file(tmp_path, header, data=b"", raw=None):
    text = raw if raw is not None else json.dumps(header).encode()
    path = tmp_path / "e.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize("header, data, message", [
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "truncated"),
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, "bytes left over"),
    ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "tensor x: 8 bytes for shape"),
    ({"x": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2, "dtype 'F8_E4M3'"),
    ({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4, "data_offsets"),
    ({"x": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, "tensor x: expected dtype, shape and data_offsets"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "y": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "overlap"),
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "gap"),
    ({"__metadata__": {"a": 1}}, b"", "__metadata__"),
    ([1, 2], b"", "not a JSON object"),
])
def test_bad_headers_are_one_line(tmp_path, header, data, message):
    path = _file(tmp_path, header, data)
    with pytest.raises(ValueError, match=message) as e:
        read_safetensors(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_bad_files_are_one_line(tmp_path):
    for raw, message in [(b'{"x": 1', "header"), (b"\xff\xfe", "header"),
                         (b'{"x": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, '
                          b'"x": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}', "appears twice")]:
        with pytest.raises(ValueError, match=message):
            read_safetensors(_file(tmp_path, None, raw=raw))
    path = tmp_path / "f.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="shorter than its header size"):
        read_header(str(path))
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(ValueError, match="header of 1000000000000 bytes"):
        read_header(str(path))
    with pytest.raises(ValueError, match="a folder"):
        read_safetensors(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        read_safetensors(tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="cannot write tensor s as 'complex128'"):
        write_safetensors(tmp_path / "g.safetensors", {"s": np.zeros(2, complex)})
    assert not (tmp_path / "g.safetensors").exists()
