"""``minillm generate`` as one call: decode prompts with a T5 folder, as transformers' ``generate`` would.

    from minillm.workflows import GenerateSettings, generate
    outputs = generate(GenerateSettings(dir="runs/sft", prompts=("Reverse the words.\\nred blue",),
                                        num_beams=4, num_return_sequences=2))

Each prompt is encoded with ``</s>`` appended (T5's convention); each output is
decoded up to its first end-of-sequence token with the special tokens skipped.
The result is one string per prompt and returned sequence: the sequences of a
prompt one after the other, prompts in order. The decoding options are
transformers' ``GenerationConfig`` fields; their defaults come from the
folder's generation_config.json when it has one, then from transformers'
defaults (:func:`minillm.generation.generate`'s). Settings given override both.
Sampling draws on the "generate" stream of :mod:`minillm.seeds`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

import minillm.seeds as seeds
from minillm.backend import to_numpy
from minillm.data.batching import truncate
from minillm.generation import check_options
from minillm.generation import generate as generate_ids
from minillm.storage.fileio import read_json
from minillm.workflows.checks import Log, apply_threads, check_device, check_folder, log_to_stderr

# settings that are generate() keywords of the same name (None: not given), and their types
OPTIONS = {
    "max_new_tokens": int, "min_new_tokens": int, "num_beams": int, "temperature": float,
    "top_k": int, "top_p": float, "length_penalty": float, "num_return_sequences": int,
    "repetition_penalty": float, "no_repeat_ngram_size": int,
}
# generation_config.json keys read as defaults (others are ignored)
FILE_KEYS = (*OPTIONS, "do_sample", "early_stopping", "eos_token_id", "pad_token_id",
             "max_length", "min_length")
FILE_TYPES = {"do_sample": bool, "early_stopping": bool, "eos_token_id": int, "pad_token_id": int,
              "max_length": int, "min_length": int}
DEFAULT_MAX_SOURCE_LEN = 512  # T5's model_max_length (tokenizer_config.json)
MAX_BATCH, MAX_SOURCE_LEN, MAX_SEED = 1 << 16, 1 << 16, (1 << 63) - 1  # the flags' ranges


@dataclass(frozen=True)
class GenerateSettings:
    """One field per ``minillm generate`` flag (``dir`` and ``prompts`` are the positionals)."""

    dir: str
    prompts: Iterable[str] = ()  # a sequence, or any iterable read once (stdin's lines)
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    num_beams: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    length_penalty: float | None = None
    num_return_sequences: int | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    do_sample: bool | None = None
    early_stopping: bool | str | None = None  # True, False or "never" (the CLI's "true"/"false" too)
    seed: int = 0
    batch_size: int = 16
    max_source_len: int = DEFAULT_MAX_SOURCE_LEN
    dtype: str = "float32"
    device: str = "cpu"
    threads: int | str | None = None  # BLAS threads: a count, "auto" (the idle cores) or None


def read_generation_config(path: str, folder: str | None = None) -> dict[str, Any]:
    """The keys of :data:`FILE_KEYS` a generation_config.json (of ``folder``) sets; a bad file or
    key is one line."""
    file_cfg = read_json(path, "config", folder)
    if not isinstance(file_cfg, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(file_cfg).__name__}")
    opts = {k: file_cfg[k] for k in FILE_KEYS if file_cfg.get(k) is not None}
    for k, v in opts.items():
        want = FILE_TYPES.get(k, OPTIONS.get(k))
        ok = (isinstance(v, bool) if want is bool else
              isinstance(v, int) and not isinstance(v, bool) if want is int else
              isinstance(v, int | float) and not isinstance(v, bool) if want is float else True)
        if k == "eos_token_id" and isinstance(v, list):
            ok = bool(v) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
        if k == "early_stopping":
            ok = isinstance(v, bool) or v == "never"
        if not ok:
            what = ("a token id or a non-empty list of them" if k == "eos_token_id"
                    else getattr(want, "__name__", want))
            raise ValueError(f"{path}: {k}: expected {what}, got {v!r:.80}")
    return opts


def generation_options(settings: GenerateSettings) -> dict[str, Any]:
    """generate() keywords: the folder's generation_config.json, overridden by the settings given."""
    s = settings
    opts: dict[str, Any] = {}
    path = os.path.join(s.dir, "generation_config.json")
    if os.path.lexists(path):
        opts = read_generation_config(path, s.dir)
        # max_length / min_length count the decoder start token; *_new_tokens do not
        if "max_length" in opts:
            length = opts.pop("max_length")
            opts.setdefault("max_new_tokens", length - 1)
        if "min_length" in opts:
            length = opts.pop("min_length")
            if length > 0:
                opts.setdefault("min_new_tokens", length - 1)
    for name in OPTIONS:
        if getattr(s, name) is not None:
            opts[name] = getattr(s, name)
    if s.do_sample:
        opts["do_sample"] = True
    if s.early_stopping is not None:
        opts["early_stopping"] = {"true": True, "false": False}.get(s.early_stopping,
                                                                   s.early_stopping)
    return opts


def generate(settings: GenerateSettings, log: Log = log_to_stderr) -> list[str]:
    """The decoded outputs for ``settings.prompts``: ``num_return_sequences`` per prompt, in order.

    ValueError / FileNotFoundError (one line) for a bad folder, device or option.
    """
    return list(iter_generate(settings, log))


def iter_generate(settings: GenerateSettings, log: Log = log_to_stderr) -> Iterator[str]:
    """:func:`generate`, yielding each batch's outputs as soon as it is decoded.

    ``settings.prompts`` may be any iterable (stdin's lines): it is read once,
    after the folder and the options are checked.
    """
    from minillm.data.tokenizer import Tokenizer
    from minillm.model import T5

    s = settings
    check_device(s.device)
    apply_threads(s.threads, log)
    tok_path = check_folder(s.dir, "expected a T5 folder with tokenizer.json",
                            "minillm generate tokenizes with it")
    check_sizes(s)
    opts = generation_options(s)
    tokenizer = Tokenizer.from_file(tok_path, folder=s.dir)
    model = T5.from_pretrained(s.dir, dtype=s.dtype, device=s.device)
    check_options(model.config, s.batch_size, s.max_source_len, **opts)  # before a prompt is read
    eos = opts.get("eos_token_id", model.config.eos_token_id)
    eos = set(eos) if isinstance(eos, list) else {eos}
    rng = seeds.generator(s.seed, "generate") if opts.get("do_sample") else None
    truncated = seen = 0
    for batch in _batches(s.prompts, s.batch_size):  # read lazily: stdin's lines as they come
        encoded = [_encode(tokenizer, p, s.max_source_len, model.config.vocab_size) for p in batch]
        truncated, seen = truncated + sum(t for _, t in encoded), seen + len(batch)
        input_ids, mask = _pad([ids for ids, _ in encoded], model.config.pad_token_id)
        out = to_numpy(generate_ids(model, input_ids, mask, rng=rng, **opts))  # (B * r, 1 + L)
        for row in out:
            gen = [int(i) for i in row[1:]]  # after the decoder start token
            cut = next((j for j, i in enumerate(gen) if i in eos), len(gen))
            yield tokenizer.decode(gen[:cut], skip_special_tokens=True)
    if truncated:
        log(f"minillm generate: truncated {truncated} of {seen} prompts to "
            f"--max-source-len {s.max_source_len} tokens")


def check_sizes(s: GenerateSettings) -> None:
    """ValueError naming the flag for a batch size, prompt length or seed out of range."""
    if not 1 <= s.batch_size <= MAX_BATCH:
        raise ValueError(f"--batch-size must be in [1, {MAX_BATCH:,}], got {s.batch_size}")
    if not 2 <= s.max_source_len <= MAX_SOURCE_LEN:
        raise ValueError(f"--max-source-len must be in [2, {MAX_SOURCE_LEN:,}], got {s.max_source_len}")
    if not 0 <= s.seed <= MAX_SEED:
        raise ValueError(f"--seed must be in [0, 2**63), got {s.seed}")


def _batches(prompts: Iterable[str], size: int) -> Iterator[list[str]]:
    """The prompts in lists of ``size``, read from the iterable as each list is needed."""
    it = iter(prompts)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _encode(tokenizer, prompt: str, max_source_len: int, vocab_size: int) -> tuple[list[int], bool]:
    """(the prompt's ids with </s>, cut to ``max_source_len``; whether it was cut)."""
    ids, cut = truncate(tokenizer.encode(prompt, add_eos=True), max_source_len, tokenizer.eos_token_id)
    if max(ids, default=0) >= vocab_size:
        raise ValueError(f"the tokenizer gives id {max(ids)}, beyond the model's vocab_size "
                         f"{vocab_size}: tokenizer.json does not match the model")
    return ids, cut


def _pad(batch: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), both (B, S): the rows right-padded with ``pad_id``."""
    S = max(len(ids) for ids in batch)
    input_ids = np.full((len(batch), S), pad_id, dtype=np.int64)  # (B, S)
    mask = np.zeros((len(batch), S), dtype=np.int64)  # (B, S)
    for b, ids in enumerate(batch):
        input_ids[b, :len(ids)] = ids
        mask[b, :len(ids)] = 1
    return input_ids, mask
