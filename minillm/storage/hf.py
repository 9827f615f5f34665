"""Hugging Face T5 folders: config.json + model.safetensors, read and written.

This module knows the files, not the model: it reads a folder's config and
tensors as stored (single file or sharded) and writes them back. The check that
the tensors fit the config is the model's schema
(``minillm.model.params.params_from_tensors``).
"""

from __future__ import annotations

import os

import numpy as np

from minillm.backend import to_numpy
from minillm.config import T5Config
from minillm.storage.fileio import atomic_path, read_json, write_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"

def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file; a missing, truncated or garbage file is one line naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not os.path.isfile(path):
        raise (ValueError if os.path.isdir(path) else FileNotFoundError)(f"{path}: missing")

    try:
        return load_file(path)
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: cannot read tensors ({e})") from None


def _read_weights(folder: str) -> dict[str, np.ndarray]:
    single = os.path.join(folder, WEIGHTS_NAME)
    index = os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.exists(single):
        return read_safetensors(single)
    if os.path.exists(index):  # a sharded checkpoint
        try:
            weight_map = read_json(index)["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{index}: not a safetensors index ({e})") from None
        tensors: dict[str, np.ndarray] = {}
        for shard in shards:
            if not isinstance(shard, str) or os.path.basename(shard) != shard or shard in ("", "..", "."):
                raise ValueError(f"{index}: shard {shard!r} is not a file name in the folder")
            tensors.update(read_safetensors(os.path.join(folder, shard)))
        return tensors
    raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} (minillm reads safetensors weights only)")


def read_pretrained(path: str | os.PathLike) -> tuple[T5Config, dict[str, np.ndarray], str]:
    """(config, tensors as stored, the weights file's name) of a Hugging Face T5 folder.

    The tensors are checked against the config by ``minillm.model.params.params_from_tensors``.
    """
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not a folder (expected a Hugging Face T5 folder)")
    cfg_path = os.path.join(folder, CONFIG_NAME)
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: missing")
    config = T5Config.from_dict(read_json(cfg_path), source=cfg_path)
    return config, _read_weights(folder), os.path.join(folder, WEIGHTS_NAME)


def save_pretrained(config: T5Config, params: dict, path: str | os.PathLike) -> None:
    """Write config.json and model.safetensors (each atomically) that transformers loads."""
    from safetensors.numpy import save_file

    folder = os.fspath(path)
    os.makedirs(folder, exist_ok=True)
    tied = "lm_head.weight" not in params
    d = config.to_dict()
    d["tie_word_embeddings"] = tied
    d["scale_decoder_outputs"] = bool(config.scale_decoder_outputs)
    d["dtype"] = str(params["shared.weight"].dtype)
    d.pop("torch_dtype", None)
    tensors = {k: np.ascontiguousarray(to_numpy(v)) for k, v in params.items()}
    with atomic_path(os.path.join(folder, WEIGHTS_NAME)) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    write_json(os.path.join(folder, CONFIG_NAME), d)
