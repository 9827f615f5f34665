"""Hugging Face T5 folders: config.json + model.safetensors, read and written.

This module knows the files, not the model: it reads a folder's config and
tensors as stored (single file or sharded; float32, float16, bfloat16 or float64)
and writes them back in any of those (:mod:`minillm.storage.safetensors_file`). The check that
the tensors fit the config is the model's schema
(``minillm.model.params.params_from_tensors``).
"""

from __future__ import annotations

import os

import numpy as np

from minillm.config import T5Config
from minillm.storage.fileio import read_json, write_json
from minillm.storage.safetensors_file import read_safetensors, write_safetensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")  # not read: pickle
SAVE_DTYPES = ("float32", "float16", "bfloat16", "float64")


def _read_index(index: str, folder: str) -> dict[str, str]:
    """{tensor name: shard file name} of a model.safetensors.index.json, every entry checked.

    A shard is a plain ``*.safetensors`` file name: the index names no path, so
    nothing outside the folder is ever read.
    """
    doc = read_json(index, "index", folder)
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict):
        raise ValueError(f"{index}: not a safetensors index (expected an object with a "
                         "\"weight_map\" object)")
    weight_map = doc["weight_map"]
    if not weight_map:
        raise ValueError(f"{index}: weight_map is empty")
    for name, shard in weight_map.items():
        plain = (isinstance(shard, str) and "/" not in shard and "\\" not in shard and "\0" not in shard
                 and not shard.startswith("."))
        if not (plain and shard.endswith(".safetensors")):
            raise ValueError(f"{index}: weight_map[{name!r}] = {shard!r} is not a .safetensors "
                             "file name in the folder")
    return weight_map


def _read_shards(folder: str, index: str, budget: int) -> dict[str, np.ndarray]:
    """The tensors of a sharded checkpoint: each in the shard its index names, once; at most
    ``budget`` bytes of them in all (each shard's header says its size before it is read)."""
    weight_map = _read_index(index, folder)
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        path = os.path.join(folder, shard)
        if not os.path.lexists(path):
            raise FileNotFoundError(f"{path}: missing (named by {index})")
        shard_tensors = read_safetensors(path, folder, budget)
        budget -= sum(t.nbytes for t in shard_tensors.values())
        for name, t in shard_tensors.items():
            if weight_map.get(name) != shard:
                where = (f"the index puts it in {weight_map[name]}" if name in weight_map
                         else "the index does not list it")
                raise ValueError(f"{path}: holds tensor {name}, but {where} ({index})")
            tensors[name] = t
    absent = [name for name in weight_map if name not in tensors]
    if absent:
        raise ValueError(f"{index}: tensor {absent[0]} is not in {weight_map[absent[0]]}, "
                         f"its shard ({len(absent)} listed tensor(s) absent)")
    return tensors


def _read_weights(folder: str, budget: int) -> tuple[dict[str, np.ndarray], str]:
    """(tensors, the file they came from): model.safetensors, or the shards of its index; at most
    ``budget`` bytes of tensors, refused from the headers before anything larger is read."""
    single = os.path.join(folder, WEIGHTS_NAME)
    index = os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.lexists(single):
        return read_safetensors(single, folder, budget), single
    if os.path.lexists(index):  # a sharded checkpoint
        return _read_shards(folder, index, budget), index
    pickles = [n for n in PICKLE_NAMES if os.path.exists(os.path.join(folder, n))]
    if pickles:
        raise FileNotFoundError(
            f"{folder}: {pickles[0]} only; minillm reads safetensors, never pickle. Convert it once "
            "with transformers: python -c \"from transformers import T5ForConditionalGeneration as M; "
            f"M.from_pretrained('{folder}').save_pretrained('{folder}', safe_serialization=True)\"")
    raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} (minillm reads safetensors weights only)")


def read_pretrained(path: str | os.PathLike) -> tuple[T5Config, dict[str, np.ndarray], str]:
    """(config, tensors as stored, the weights file) of a Hugging Face T5 folder.

    The weights are model.safetensors or, sharded, the files that
    model.safetensors.index.json names; float32, float16 or bfloat16 (widened to
    float32 exactly) or float64. Every file is read by the one rule
    (:mod:`minillm.storage.reading`: a regular file inside the folder), and no more
    tensor bytes than the config's parameters can take in float64. The tensors are
    checked against the config by ``minillm.model.params.params_from_tensors``.
    """
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not a folder (expected a Hugging Face T5 folder)")
    cfg_path = os.path.join(folder, CONFIG_NAME)
    if not os.path.lexists(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: missing")
    config = T5Config.from_dict(read_json(cfg_path, "config", folder), source=cfg_path)
    # the most bytes its tensors can take: every parameter in float64, and an untied head
    budget = (config.num_parameters() + config.vocab_size * config.d_model) * 8
    tensors, source = _read_weights(folder, budget)
    return config, tensors, source


def save_pretrained(config: T5Config, params: dict, path: str | os.PathLike,
                    dtype: str | None = None) -> None:
    """Write config.json and model.safetensors (each atomically) that transformers loads.

    ``dtype``: the stored dtype, one of :data:`SAVE_DTYPES` (None: the params'
    own). bfloat16 is rounded to nearest, ties to even, from float32; float16 by
    NumPy's cast (also nearest-even). config.json's "dtype" says which.
    """
    if dtype is not None and dtype not in SAVE_DTYPES:
        raise ValueError(f"save dtype {dtype!r} is not one of {', '.join(SAVE_DTYPES)}")
    folder = os.fspath(path)
    os.makedirs(folder, exist_ok=True)
    tied = "lm_head.weight" not in params
    d = config.to_dict()
    d["tie_word_embeddings"] = tied
    d["scale_decoder_outputs"] = bool(config.scale_decoder_outputs)
    d["dtype"] = dtype or np.dtype(params["shared.weight"].dtype).name
    d.pop("torch_dtype", None)
    write_safetensors(os.path.join(folder, WEIGHTS_NAME), params, dtype=dtype, metadata={"format": "pt"})
    write_json(os.path.join(folder, CONFIG_NAME), d)
