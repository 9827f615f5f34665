"""Hugging Face T5 folders: config.json + model.safetensors, read and written.

Parameter names are transformers' state-dict names, so loading is a walk
over names (no renaming). Reading is strict: every missing, unexpected or
wrong-shape tensor is named in one error.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from minillm.backend import to_numpy
from minillm.config import T5Config
from minillm.fileio import atomic_path, write_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"

# Tensors transformers' T5ForConditionalGeneration ignores when it finds them.
IGNORED_KEYS = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
# Names under which transformers may store the shared embedding again.
EMBEDDING_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

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
        return _read_safetensors(single)
    if os.path.exists(index):  # a sharded checkpoint
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{index}: not a safetensors index ({e})") from None
        tensors: dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(_read_safetensors(os.path.join(folder, shard)))
        return tensors
    raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} (minillm reads safetensors weights only)")


def load_pretrained(path: str | os.PathLike, dtype: Any = "float32") -> tuple[T5Config, dict]:
    """(config, params) from a Hugging Face T5 folder, params cast to ``dtype``."""
    from minillm.model import param_shapes

    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not a folder (expected a Hugging Face T5 folder)")
    cfg_path = os.path.join(folder, CONFIG_NAME)
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: missing")
    config = T5Config.from_json_file(cfg_path)
    tensors = _read_weights(folder)
    weights_file = os.path.join(folder, WEIGHTS_NAME)

    for k in IGNORED_KEYS:
        tensors.pop(k, None)
    for alias in EMBEDDING_ALIASES:  # tied to shared.weight
        t = tensors.pop(alias, None)
        if t is not None and "shared.weight" not in tensors:
            tensors["shared.weight"] = t

    # The LM head: separate when the file holds its own lm_head.weight (unless
    # the config ties it and the file merely repeats shared.weight).
    lm = tensors.get("lm_head.weight")
    if lm is not None and config.tie_word_embeddings and "shared.weight" in tensors \
            and lm.shape == tensors["shared.weight"].shape \
            and np.array_equal(lm, tensors["shared.weight"]):
        del tensors["lm_head.weight"]
    separate_head = "lm_head.weight" in tensors or not config.tie_word_embeddings
    expected = param_shapes(config, lm_head=separate_head)

    problems = []
    missing = [k for k in expected if k not in tensors]
    if missing:
        problems.append(f"missing tensor(s): {', '.join(missing)}")
    unexpected = sorted(k for k in tensors if k not in expected)
    if unexpected:
        problems.append(f"unexpected tensor(s): {', '.join(unexpected)}")
    for k, shape in expected.items():
        if k in tensors and tuple(tensors[k].shape) != shape:
            problems.append(f"tensor {k} has shape {tuple(tensors[k].shape)}, config says {shape}")
    if problems:
        raise ValueError(f"{weights_file}: " + "; ".join(problems))

    params = {k: np.ascontiguousarray(tensors[k], dtype=dtype) for k in expected}
    for k, v in params.items():
        if not np.isfinite(v).all():
            raise ValueError(f"{weights_file}: tensor {k} holds NaN or inf")
    return config, params


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
