"""What ``minillm pretrain`` starts from: its documents, tokenizer, model, raw and held-out examples.

    info.update(text_sources(settings))                  # --text / --eval-text with their sha256
    train_docs, held_docs = read_documents(info)         # the same documents on every resume
    tokenizer = pretraining_tokenizer(settings, train_docs)
    model = start_model(settings, tokenizer)              # --init's, or the preset's T5, new
    data = pretraining_examples(info, train_docs, held_docs, tokenizer)

The ``run`` dict of the trainer state (:mod:`minillm.runfolder.state_file`, kind
"pretrain") names the text files (absolute paths, each with its sha256) or the
built-in corpus (``text`` null), the corruption (input, raw and target lengths,
noise density, mean span length) and the sizes; a resumed run reads the same
documents again (the corpus's digest is checked), tokenizes them with the run's
own tokenizer and packs them into the same raw examples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

import minillm.seeds as seeds
from minillm.data.batching import EncodedDataset
from minillm.data.corpus import (
    Document,
    builtin_documents,
    encode_documents,
    read_text_files,
    split_documents,
)
from minillm.data.span_corruption import pack, span_counts
from minillm.workflows.checks import Log, SettingsError, check_folder, flag
from minillm.workflows.presets import get_preset
from minillm.workflows.runs import check_same_file, file_digest

DEFAULT_VOCAB_SIZE = 4000  # the tokenizer trained when none is given (100 of them sentinels)


@dataclass(frozen=True)
class PretrainingData:
    """``raw`` (N, L) training examples; ``held`` the held-out ones, corrupted once; ``noise``."""

    raw: np.ndarray
    held: EncodedDataset
    noise: Any  # minillm.training.pretrain.Noise


def text_sources(settings) -> dict[str, Any]:
    """``text`` / ``eval_text`` as lists of absolute paths with their sha256 (null: none given)."""
    run: dict[str, Any] = {}
    for key in ("text", "eval_text"):
        paths = [os.path.abspath(p) for p in getattr(settings, key)] or None
        digests = []
        for given, path in zip(getattr(settings, key), paths or [], strict=True):
            if not os.path.lexists(path):
                raise FileNotFoundError(f"{given}: no such file ({flag(key)})")
            try:
                digests.append(file_digest(path))
            except ValueError as e:  # a folder, a FIFO, a device
                raise ValueError(f"{e} ({flag(key)})") from None
        run[key], run[f"{key}_sha256"] = paths, digests or None
    return run


def check_text_files(info: dict[str, Any], whose: str) -> None:
    """On resume: each text file of the run is still there with its sha256."""
    for key in ("text", "eval_text"):
        for path, digest in zip(info[key] or [], info[f"{key}_sha256"] or [], strict=True):
            check_same_file(path, digest, key, whose)


def read_documents(info: dict[str, Any]) -> tuple[list[Document], list[Document]]:
    """(training documents, held-out documents) of the run ``info`` names.

    The built-in corpus or the --text files, split by the corpus's stable rule;
    with --eval-text, every --text document trains and --eval-text is held out.
    """
    docs = read_text_files(info["text"]) if info["text"] else builtin_documents()
    if info["eval_text"]:
        return docs, read_text_files(info["eval_text"], "--eval-text")
    train, held = split_documents(docs)
    if not held or not train:
        raise SettingsError(f"the held-out rule leaves {len(train)} training and {len(held)} held-out "
                            f"documents of {len(docs)}; give --eval-text for the held-out text")
    return train, held


def pretraining_tokenizer(s, train_docs: list[Document]):
    """--tokenizer's file, --init's tokenizer, or one in T5's layout trained on the training documents."""
    from minillm.data.t5_tokenizer import train_t5_tokenizer
    from minillm.data.tokenizer import Tokenizer

    if s.tokenizer:
        if not os.path.isfile(s.tokenizer):
            raise FileNotFoundError(f"{s.tokenizer}: no such file (--tokenizer wants a tokenizer.json)")
        return Tokenizer.from_file(s.tokenizer)
    if s.init:
        return Tokenizer.from_file(check_folder(s.init, "--init wants a Hugging Face T5 folder",
                                                "--init needs the model's tokenizer.json"))
    return train_t5_tokenizer((d.text for d in train_docs), vocab_size=s.vocab_size or DEFAULT_VOCAB_SIZE)


def pretraining_examples(info: dict[str, Any], train_docs: list[Document], held_docs: list[Document],
                         tokenizer, log: Log | None = None) -> PretrainingData:
    """The documents as raw examples of ``info["raw_length"]`` tokens, and the held-out ones corrupted.

    ValueError in one line when the tokenizer lacks the sentinels the corruption needs,
    or when either text is shorter than one raw example.
    """
    from minillm.data.t5_tokenizer import count_sentinels, sentinel_ids
    from minillm.training.pretrain import Noise, held_out_examples

    length = info["raw_length"]
    _, spans = span_counts(length, info["noise_density"], info["mean_span_length"])
    first = sentinel_ids(tokenizer, spans)
    noise = Noise(info["noise_density"], info["mean_span_length"], first, tokenizer.eos_token_id)
    parts = []
    for what, docs in (("training", train_docs), ("held-out", held_docs)):
        ids, dropped = encode_documents(docs, tokenizer, first - count_sentinels(tokenizer) + 1)
        if dropped and log:
            log(f"{what} text: {dropped} sentinel token(s) written in the text left out")
        raw = pack(ids, length)
        if not len(raw):
            raise ValueError(f"the {what} text has {sum(map(len, ids))} tokens, fewer than one raw "
                             f"example of {length} (--input-length {info['input_length']})")
        parts.append(raw)
    held = held_out_examples(parts[1], noise, info["seed"], tokenizer.pad_token_id)
    return PretrainingData(parts[0], held, noise)


def start_model(s, tokenizer):
    """The model a new run starts from: --init's, or the preset's T5 sized to ``tokenizer`` with
    weights on the "init" stream of ``s.seed`` (``s``: a PretrainSettings; what SFT from scratch
    starts from, for a comparison)."""
    from minillm.config import T5Config
    from minillm.data.tokenizer import check_vocab
    from minillm.model import T5

    dtype = s.dtype or "float32"
    if s.init:
        model = T5.from_pretrained(s.init, dtype=dtype, device=s.device)
        if s.dropout is not None:
            model = T5(model.config.replace(dropout_rate=s.dropout), model.params)
    else:
        shape = dict(get_preset(s.preset).model)
        if s.dropout is not None:
            shape["dropout_rate"] = s.dropout
        rng = seeds.generator(0 if s.seed is None else s.seed, "init")
        model = T5.init(T5Config(vocab_size=tokenizer.vocab_size, **shape), rng, dtype=dtype, device=s.device)
    check_vocab(tokenizer, model.config.vocab_size)
    return model
