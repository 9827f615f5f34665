"""safetensors files read and written by minillm itself, bfloat16 included.

The format (https://github.com/huggingface/safetensors): 8 bytes N (little-endian
u64), N bytes of JSON header, then the tensors' bytes, back to back::

    {"NAME": {"dtype": "F32", "shape": [V, C], "data_offsets": [BEGIN, END]}, ...,
     "__metadata__": {"format": "pt"}}                 offsets relative to the data start

``safetensors.numpy`` cannot hold bfloat16 (NumPy has no such type), so minillm
parses the header and reads each tensor's bytes itself: a bfloat16 tensor comes
back as float32, exactly (:mod:`minillm.storage.bfloat16`). A file is data: the
header is checked as the format requires (JSON object, known dtypes, integer
shapes, offsets that tile the data without gap or overlap, the file's size), and
every failure is one ValueError naming the file and the tensor or field.
Files written here are read by ``safetensors`` (and so by transformers).
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any

import numpy as np

from minillm.backend import to_numpy
from minillm.storage.bfloat16 import bfloat16_to_float32, float32_to_bfloat16
from minillm.storage.fileio import atomic_path
from minillm.storage.reading import open_input

# safetensors dtype -> the little-endian NumPy type its bytes are read as (BF16: raw uint16)
STORED = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
          "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
# NumPy dtype name (or "bfloat16") -> the safetensors dtype written
WRITTEN = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
           "int32": "I32", "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32",
           "uint16": "U16", "uint8": "U8", "bool": "BOOL"}
MAX_HEADER = 100_000_000  # bytes; the limit safetensors itself sets


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise ValueError(f"tensor {dup!r} appears twice in the header")
    return dict(pairs)


def read_header(path: str, folder: str | None = None,
                max_bytes: int | None = None) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensors' entries, metadata, the data's start) of a safetensors file, every field checked.

    An entry is {"dtype", "shape" (tuple), "begin", "end"} with offsets from the
    data's start. The file is opened by the one rule (:mod:`minillm.storage.reading`;
    ``folder``: the folder it belongs to). ``max_bytes``: the most tensor data the reader
    can want (its model's), refused from the header alone. ValueError naming the file
    (and the tensor) for anything wrong.
    """
    bad = f"{path}: not a readable safetensors file"
    with open_input(path, None, folder) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{bad} ({size} bytes, shorter than its header size)")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, size - 8):
                raise ValueError(f"{bad} (header of {n} bytes in a file of {size})")
            raw = f.read(n)
        except OSError as e:
            raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"{bad} (header: {str(e)[:120]})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{bad} (header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise ValueError(f"{bad} (__metadata__ is not a map of strings)")
    entries = {name: _entry(bad, name, e) for name, e in header.items()}
    data_size, at = size - 8 - n, 0
    for name, e in sorted(entries.items(), key=lambda kv: (kv[1]["begin"], kv[1]["end"])):
        if e["begin"] != at:
            raise ValueError(f"{bad} (tensor {name}: data_offsets start at {e['begin']}, "
                             f"expected {at}: a gap or an overlap)")
        at = e["end"]
    if at != data_size:
        raise ValueError(f"{bad} (the tensors end at byte {at} of {data_size} data bytes: "
                         f"{'truncated' if at > data_size else 'bytes left over'})")
    if max_bytes is not None and data_size > max_bytes:
        raise ValueError(f"{path}: {data_size:,} bytes of tensors, more than its model can hold "
                         f"({max_bytes:,})")
    return entries, metadata, 8 + n


def _entry(bad: str, name: str, e: Any) -> dict[str, Any]:
    """One header entry, checked: dtype known, shape non-negative integers, offsets matching it."""
    if not (isinstance(e, dict) and set(e) == {"dtype", "shape", "data_offsets"}):
        raise ValueError(f"{bad} (tensor {name}: expected dtype, shape and data_offsets)")
    dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
    if dtype not in STORED:
        raise ValueError(f"{bad} (tensor {name}: dtype {dtype!r} is not one minillm reads: "
                         f"{', '.join(STORED)})")
    ints = lambda v: isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                                 and i >= 0 for i in v)
    if not ints(shape):
        raise ValueError(f"{bad} (tensor {name}: shape {shape!r} is not a list of sizes)")
    if not (ints(offsets) and len(offsets) == 2 and offsets[0] <= offsets[1]):
        raise ValueError(f"{bad} (tensor {name}: data_offsets {offsets!r} is not [begin, end])")
    nbytes = math.prod(shape) * np.dtype(STORED[dtype]).itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise ValueError(f"{bad} (tensor {name}: {offsets[1] - offsets[0]} bytes for shape "
                         f"{shape} of {dtype}, expected {nbytes})")
    return {"dtype": dtype, "shape": tuple(shape), "begin": offsets[0], "end": offsets[1]}


def read_safetensors(path: str | os.PathLike, folder: str | os.PathLike | None = None,
                     max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, as stored; BF16 widened to float32 exactly.

    The arrays are writable and own their memory (one tensor read at a time, no
    copy of the whole file). FileNotFoundError when missing; ValueError in one line
    naming the file for a truncated, garbage or inconsistent one, or one holding more
    than ``max_bytes`` of tensors (:func:`read_header`).
    """
    path = os.fspath(path)
    entries, _, start = read_header(path, folder, max_bytes)
    tensors: dict[str, np.ndarray] = {}
    try:
        with open_input(path, None, folder) as f:
            for name, e in entries.items():
                stored = np.dtype(STORED[e["dtype"]])
                arr = np.empty(math.prod(e["shape"]), dtype=stored)  # (n,)
                f.seek(start + e["begin"])
                if f.readinto(memoryview(arr).cast("B")) != arr.nbytes:
                    raise ValueError(f"{path}: not a readable safetensors file (tensor {name} is cut short)")
                if e["dtype"] == "BF16":
                    arr = bfloat16_to_float32(arr)
                elif not stored.isnative:
                    arr = arr.astype(stored.newbyteorder("="))
                tensors[name] = arr.reshape(e["shape"])
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    return tensors


def stored_dtypes(path: str | os.PathLike) -> dict[str, str]:
    """{tensor name: its safetensors dtype ("BF16", "F32", ...)} from the header alone."""
    entries, _, _ = read_header(os.fspath(path))
    return {name: e["dtype"] for name, e in entries.items()}


ITEMSIZE = {k: np.dtype(v).itemsize for k, v in STORED.items()}


def _kind(name: str, array: Any, dtype: str | None) -> str:
    """The safetensors dtype ``array`` is written as (``dtype``, or its own)."""
    target = dtype or np.dtype(array.dtype).name
    if target not in WRITTEN:
        raise ValueError(f"cannot write tensor {name} as {target!r} to safetensors "
                         f"(one of {', '.join(WRITTEN)})")
    return WRITTEN[target]


def _encode(array: Any, kind: str) -> np.ndarray:
    """The little-endian, contiguous array whose bytes are ``array`` as safetensors ``kind``."""
    a = np.asarray(to_numpy(array))
    if kind == "BF16":
        return float32_to_bfloat16(a)
    return np.ascontiguousarray(a, dtype=np.dtype(STORED[kind]))


def write_safetensors(path: str | os.PathLike, tensors: dict[str, Any], dtype: str | None = None,
                      metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (NumPy or CuPy arrays) as one safetensors file, atomically (temp file + rename).

    ``dtype``: "float32", "float16", "bfloat16" (round to nearest, ties to even, from
    float32), "float64", or None (each tensor in its own dtype). float16 is NumPy's
    cast (nearest, ties to even). Tensors are laid out as ``safetensors`` lays them
    (by item size, then name), so each is aligned; one tensor is converted at a time.
    """
    kinds = {k: _kind(k, v, dtype) for k, v in tensors.items()}
    order = sorted(tensors, key=lambda k: (-ITEMSIZE[kinds[k]], k))
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    at = 0
    for k in order:
        shape = [int(n) for n in tensors[k].shape]
        size = math.prod(shape) * ITEMSIZE[kinds[k]]
        header[k] = {"dtype": kinds[k], "shape": shape, "data_offsets": [at, at + size]}
        at += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # padded so that the data starts 8-aligned
    with atomic_path(os.fspath(path)) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for k in order:
                f.write(memoryview(_encode(tensors[k], kinds[k]).reshape(-1)).cast("B"))
