"""The files transformers writes beside a tokenizer.json, read for :class:`minillm.data.tokenizer.Tokenizer`.

    tokenizer_config.json     pad/eos/unk tokens, additional special tokens,
                              clean_up_tokenization_spaces
    special_tokens_map.json   pad/eos/unk tokens, additional special tokens

A token is written as a string or as an AddedToken object ({"content": ...}).
Either file may be absent; when both name a field, tokenizer_config.json wins,
as in transformers. Each is read by the one rule of :mod:`minillm.storage.reading`
(a regular file of the folder, 16 MiB at most); every field read is checked, and a
bad one is a ValueError naming the file and the field.
"""

from __future__ import annotations

import os
from typing import Any

from minillm.storage.fileio import read_json

CONFIG_NAME, SPECIAL_MAP_NAME = "tokenizer_config.json", "special_tokens_map.json"


def _token(value: Any, where: str) -> str | None:
    """A special token as a config writes it: a string, {"content": ...} (AddedToken), or null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{where}: expected a token (a string or {{\"content\": ...}}), got {value!r:.80}")


def read_tokenizer_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The settings transformers' tokenizer files in ``folder`` give :class:`Tokenizer`; {} without them.

    From tokenizer_config.json and special_tokens_map.json (either may be absent):
    ``pad_token``, ``eos_token``, ``unk_token``; ``extra_special_tokens`` (their
    additional_special_tokens / extra_special_tokens); ``clean_up_tokenization_spaces``.
    Every field is checked; a bad one is a ValueError naming the file and the field.
    """
    out: dict[str, Any] = {}
    extra: list[str] = []
    for name in (SPECIAL_MAP_NAME, CONFIG_NAME):  # the config last: it wins, as in transformers
        path = os.path.join(os.fspath(folder), name)
        if not os.path.lexists(path):
            continue
        doc = read_json(path, "tokenizer config", folder)
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: expected a JSON object")
        for field in ("pad_token", "eos_token", "unk_token"):
            token = _token(doc.get(field), f"{path}: field {field!r}")
            if token is not None:
                out[field] = token
        for field in ("additional_special_tokens", "extra_special_tokens"):
            tokens = doc.get(field)
            if isinstance(tokens, dict):  # a name -> token map (transformers 5's named extras)
                tokens = list(tokens.values())
            if tokens is None:
                continue
            if not isinstance(tokens, list):
                raise ValueError(f"{path}: field {field!r} must be a list of tokens")
            extra += [t for i, v in enumerate(tokens)
                      if (t := _token(v, f"{path}: field {field!r}[{i}]")) is not None]
        if "clean_up_tokenization_spaces" in doc:
            flag = doc["clean_up_tokenization_spaces"]
            if not isinstance(flag, bool):
                raise ValueError(f"{path}: field 'clean_up_tokenization_spaces' must be true or "
                                 f"false, got {flag!r:.40}")
            out["clean_up_tokenization_spaces"] = flag
    if extra:
        out["extra_special_tokens"] = list(dict.fromkeys(extra))
    return out
