"""The probes of benchmarks/probe_inputs.py, by category: each prepares a workspace and names a command.

A probe's ``prepare(ws)`` spoils copies of the base folders (``ws.model()``, ``ws.run()``)
and returns the ``minillm`` arguments; ``expect`` is the exit status (2 refused, 1 a run
that stopped, 130 interrupted, 0 worked), ``names`` the words the one error line must
hold. The issue's own cases are marked "(issue)" in their names.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from probe_inputs import Workspace

PROBES: list[Probe] = []
TINY = ["--preset", "tiny", "--no-progress", "--no-plot", "--steps", "4", "--eval-every", "2",
        "--n-train", "32", "--n-eval", "6"]
RL = ["--tasks", "reverse_words,uppercase", "--steps", "2", "--batch-size", "2", "--k", "2",
      "--n-train", "8", "--n-eval", "2", "--max-new-tokens", "4", "--no-progress"]
BIG = 10**20


@dataclass
class Probe:
    category: str
    name: str
    prepare: Callable[[Workspace], list]
    expect: int | tuple = 2
    names: tuple[str, ...] = ()
    timeout: float = 30.0
    signals: tuple = ()
    wait_for: str | None = None
    check: Callable | None = None
    custom: Callable | None = None
    outside_digest: Any = None

    @property
    def expect_codes(self) -> tuple:
        return self.expect if isinstance(self.expect, tuple) else (self.expect,)


def probe(category: str, name: str, expect=2, names=(), **kw):
    def register(prepare):
        PROBES.append(Probe(category, name, prepare, expect, tuple(names), **kw))
        return prepare
    return register


def baseline_probe() -> Probe:
    return Probe("baseline", "generate", lambda ws: ["generate", ws.model(), "hello"], expect=0)


# ------------------------------------------------------------------ spoiling a file


def replace(path: str, how: str, ws: Workspace) -> None:
    """Put something other than the file at ``path`` (how: fifo, zero, 2GB, outside, folder,
    dangling, loop)."""
    if os.path.lexists(path):
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    if how == "fifo":
        os.mkfifo(path)
    elif how == "zero":
        os.symlink("/dev/zero", path)
    elif how == "2GB":
        with open(path, "wb") as f:
            f.truncate(2 << 30)
    elif how == "outside":  # a link to the same file of a model folder elsewhere
        os.symlink(os.path.join(ws.outside, "model", os.path.basename(path)), path)
    elif how == "folder":
        os.mkdir(path)
    elif how == "dangling":
        os.symlink(ws.path("no-such-file"), path)
    elif how == "loop":
        os.symlink(path, path)


def json_file(path: str, text: str | bytes) -> None:
    with open(path, "wb") as f:
        f.write(text.encode("utf-8") if isinstance(text, str) else text)


def edit_json(path: str, **changes) -> None:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    doc.update(changes)
    json_file(path, json.dumps(doc))


# ------------------------------------------------------------------ a model folder's files

FOLDER_FILES = ("config.json", "generation_config.json", "tokenizer_config.json",
                "special_tokens_map.json", "tokenizer.json", "model.safetensors")
for _name in FOLDER_FILES:
    for _how in ("fifo", "zero", "2GB", "outside", "folder", "dangling", "loop"):
        def _prepare(ws, name=_name, how=_how):
            m = ws.model()
            replace(os.path.join(m, name), how, ws)
            return ["generate", m, "hello"]
        _issue = " (issue)" if _how in ("fifo", "zero", "2GB") and _name.endswith("json") else ""
        probe("model folder", f"{_name} as {_how}{_issue}", names=(_name,))(_prepare)

BAD_JSON = {"invalid UTF-8": b'{"a": "\xff"}', "nested 100k deep": "[" * 100_000 + "]" * 100_000,
            "NaN": '{"a": NaN}', "a 5000-digit number": '{"a": 1' + "0" * 5000 + "}",
            "not an object": "[1, 2]", "garbage": "\x00\x01 not json"}
for _name in ("config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json"):
    for _what, _text in BAD_JSON.items():
        def _prepare(ws, name=_name, text=_text):
            m = ws.model()
            json_file(os.path.join(m, name), text)
            return ["generate", m, "hello"]
        probe("model folder", f"{_name}: {_what}", names=(_name,))(_prepare)


@probe("model folder", "config.json: eos_token_id [] (issue)", names=("eos_token_id",))
def _(ws):
    m = ws.model()
    edit_json(os.path.join(m, "config.json"), eos_token_id=[])
    return ["generate", m, "hello"]


@probe("model folder", "config.json: vocab_size 10**12", names=("GiB",))
def _(ws):
    m = ws.model()
    edit_json(os.path.join(m, "config.json"), vocab_size=10**12)
    return ["generate", m, "hello"]


@probe("model folder", "config.json: num_layers 10**9", names=("GiB",))
def _(ws):
    m = ws.model()
    edit_json(os.path.join(m, "config.json"), num_layers=10**9)
    return ["generate", m, "hello"]


def _index_folder(ws, shard: str, spoil=None) -> str:
    """A model folder whose weights are one shard named by model.safetensors.index.json."""
    m = ws.model()
    os.rename(os.path.join(m, "model.safetensors"), os.path.join(m, "w-1.safetensors"))
    from minillm.storage.safetensors_file import stored_dtypes

    names = stored_dtypes(os.path.join(m, "w-1.safetensors"))
    json_file(os.path.join(m, "model.safetensors.index.json"),
              json.dumps({"weight_map": {n: shard for n in names}}))
    if spoil:
        spoil(m)
    return m


@probe("safetensors", "sharded: the index's shard read as expected", expect=0)
def _(ws):
    return ["generate", _index_folder(ws, "w-1.safetensors"), "hello"]


for _shard in ("../outside/model/model.safetensors", "/etc/passwd", ".hidden.safetensors"):
    def _prepare(ws, shard=_shard):
        return ["generate", _index_folder(ws, shard), "hello"]
    probe("safetensors", f"index names shard {_shard}", names=("model.safetensors.index.json",))(_prepare)

for _how in ("fifo", "zero", "outside", "2GB"):
    def _prepare(ws, how=_how):
        return ["generate", _index_folder(ws, "w-1.safetensors",
                                          lambda m: replace(os.path.join(m, "w-1.safetensors"), how, ws)),
                "hello"]
    probe("safetensors", f"the shard as {_how}", names=("w-1.safetensors",))(_prepare)

for _how in ("zero", "2GB", "fifo"):
    def _prepare(ws, how=_how):
        m = _index_folder(ws, "w-1.safetensors")
        replace(os.path.join(m, "model.safetensors.index.json"), how, ws)
        return ["generate", m, "hello"]
    probe("safetensors", f"the index as {_how}", names=("model.safetensors.index.json",))(_prepare)


def _safetensors(path: str, header: dict, data_size: int) -> None:
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        f.truncate(8 + len(text) + data_size)  # sparse


for _what, _header, _size in (
        ("a 4 GB tensor (sparse)", {"shared.weight": {"dtype": "F32", "shape": [1 << 30],
                                                      "data_offsets": [0, 4 << 30]}}, 4 << 30),
        ("header size 10**12", None, 0),
        ("an unknown dtype", {"x": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, 8),
        ("overlapping tensors", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                                 "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 4),
        ("truncated", {"a": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}, 40),
        ("a tensor the config lacks", {"nope": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 4)):
    def _prepare(ws, header=_header, size=_size):
        m = ws.model()
        path = os.path.join(m, "model.safetensors")
        if header is None:
            json_file(path, (10**12).to_bytes(8, "little") + b"{}")
        else:
            _safetensors(path, header, size)
        return ["generate", m, "hello"]
    probe("safetensors", f"model.safetensors: {_what}", names=("model.safetensors",))(_prepare)


# ------------------------------------------------------------------ tokenizer.json


def _tokenizer(ws, change) -> str:
    m = ws.model()
    path = os.path.join(m, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    change(doc)
    json_file(path, json.dumps(doc))
    return m


RUNAWAY = {"Regex": "(a+)+$"}
for _where, _value in (
        ("normalizer", {"type": "Replace", "pattern": RUNAWAY, "content": "x"}),
        ("pre_tokenizer", {"type": "Split", "pattern": RUNAWAY, "behavior": "Isolated", "invert": False}),
        ("decoder", {"type": "Replace", "pattern": RUNAWAY, "content": "x"})):
    def _prepare(ws, where=_where, value=_value):
        return ["generate", _tokenizer(ws, lambda d: d.__setitem__(where, value)), "a" * 40 + "b"]
    probe("tokenizer.json", f"a runaway regex in its {_where} (issue)",
          expect=(0, 2) if _where == "decoder" else 2,  # (a decoder's regex may never run away)
          names=() if _where == "decoder" else ("tokenizer.json",))(_prepare)


@probe("tokenizer.json", "not a tokenizer", names=("tokenizer.json",))
def _(ws):
    return ["generate", _tokenizer(ws, lambda d: d.__setitem__("model", {"type": "Nope"})), "hi"]


@probe("tokenizer.json", "ids beyond the model's vocabulary", names=("vocab_size",))
def _(ws):
    def grow(d):
        d["added_tokens"].append({"id": 100000, "content": "zzz", "single_word": False, "lstrip": False,
                                  "rstrip": False, "normalized": False, "special": True})
    return ["generate", _tokenizer(ws, grow), "zzz"]


@probe("tokenizer.json", "no pad token", names=("pad",))
def _(ws):
    def drop(d):
        d["added_tokens"] = [t for t in d["added_tokens"] if t["content"] != "<pad>"]
        d["model"]["vocab"] = {k: v for k, v in d["model"]["vocab"].items() if k != "<pad>"}
    return ["generate", _tokenizer(ws, drop), "hi"]
