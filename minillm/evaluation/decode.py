"""Decoding a model's outputs for scoring: greedy or sampled, cut at ``</s>``, as ids or text.

    outputs = decode_outputs(model, tokenizer, encoded, num_beams=1, max_new_tokens=32)  # strings
    labels = sample_outputs(model, input_ids, attention_mask, k, rng, max_new_tokens)      # (B*k, L)
    texts = decode_labels(tokenizer, labels)

Generated ids start with the decoder start token and run to ``</s>`` (or to
``max_new_tokens``); what is scored is the text before the first ``</s>``. For
REINFORCE the sampled ids are kept as labels (N, L): the ``</s>`` is part of the
sample (its probability is part of pi(y)) and everything after it is -100.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from minillm.backend import get_xp, to_numpy
from minillm.data.batching import EncodedDataset, collate
from minillm.generation import generate
from minillm.ops.cross_entropy import IGNORE_INDEX
from minillm.parallel import SINGLE


def strip_after_eos(ids: Sequence[int], eos_id: int, start_id: int | None = None) -> list[int]:
    """Generated ids without the leading decoder start token, cut before the first eos."""
    ids = [int(i) for i in ids]
    if start_id is not None and ids and ids[0] == start_id:
        ids = ids[1:]
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def decode_outputs(model, tokenizer, encoded: EncodedDataset, batch_size: int = 64,
                   progress: bool = False, world=None, **gen_kwargs: Any) -> list[str]:
    """Generate for every source in ``encoded`` (batched by length); decoded strings, in order.

    gen_kwargs go to ``generate`` (max_new_tokens, num_beams, do_sample, rng, ...);
    with num_return_sequences > 1 only the first sequence of each prompt is kept.
    ``world`` (:mod:`minillm.parallel`, None: one process): rank r decodes the
    length-sorted batches r, r + R, r + 2R, ... (the very batches one process
    decodes, so the same outputs), and every rank gets all the outputs.
    """
    order = np.argsort(encoded.lengths[:, 0], kind="stable")
    out: list[str] = [""] * len(encoded)
    cfg = model.config
    r = int(gen_kwargs.get("num_return_sequences", 1))
    world = SINGLE if world is None else world
    rank, size = world.rank, world.size
    if size > 1 and gen_kwargs.get("do_sample"):
        raise ValueError("sampled decoding draws one stream across the batches: it is not split "
                         "over ranks (run it in one process)")
    starts = list(range(0, len(order), batch_size))[rank::size]
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc="decoding", unit="ex", leave=False)
    with world.together():  # an error on one rank is raised on every rank
        for i in starts:
            idx = order[i : i + batch_size]
            b = collate(encoded, idx)
            ids = to_numpy(generate(model, b["input_ids"], b["attention_mask"], **gen_kwargs))
            for j, k in enumerate(idx):
                out[int(k)] = tokenizer.decode(
                    strip_after_eos(ids[j * r], cfg.eos_token_id, cfg.decoder_start_token_id))
            if bar is not None:
                bar.update(len(idx) * size)
    if bar is not None:
        bar.close()
    if size > 1:
        mine = {int(k): out[int(k)] for i in starts for k in order[i : i + batch_size]}
        for text in world.gather_texts(json.dumps(mine, ensure_ascii=False)):
            for k, v in json.loads(text).items():
                out[int(k)] = v
    return out


def greedy_outputs(model, tokenizer, encoded: EncodedDataset, batch_size: int = 150,
                   max_new_tokens: int = 32, world=None) -> list[str]:
    """Greedy decoding of every source in ``encoded``: what exact match and rewards score."""
    return decode_outputs(model, tokenizer, encoded, batch_size, world=world,
                          max_new_tokens=max_new_tokens, num_beams=1)


def prompt_batch(encoded: EncodedDataset, indices) -> dict:
    """input_ids (B, S) and attention_mask (B, S) of the prompts ``indices`` (host arrays)."""
    b = collate(encoded, np.asarray(indices))
    return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}


def sampled_labels(ids, eos_token_id: int):
    """Generated ids (N, 1+L), decoder start first -> labels (N, L): -100 after the first ``</s>``.

    The ``</s>`` itself is a sampled token (its probability is part of pi(y)); a
    row that never produced it keeps all L tokens (cut by max_new_tokens).
    """
    xp = get_xp(ids)
    labels = ids[:, 1:].copy()  # (N, L)
    is_eos = labels == eos_token_id
    after = (xp.cumsum(is_eos, axis=1) - is_eos) > 0  # (N, L) strictly after the first eos
    labels[after] = IGNORE_INDEX
    return labels


def sample_outputs(model, input_ids, attention_mask, k: int, rng: np.random.Generator,
                   max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 1.0):
    """k samples per prompt: input_ids (B, S) -> labels (B*k, L), rows of a prompt adjacent."""
    ids = generate(model, input_ids, attention_mask, max_new_tokens=max_new_tokens, do_sample=True,
                   temperature=temperature, top_k=top_k, top_p=top_p, num_return_sequences=k,
                   rng=rng)  # (B*k, 1+L)
    return sampled_labels(ids, model.config.eos_token_id)


def decode_labels(tokenizer, labels) -> list[str]:
    """labels (N, L) -> N strings (each cut before its ``</s>``)."""
    eos = tokenizer.eos_token_id
    out = []
    for row in to_numpy(labels):
        out.append(tokenizer.decode(strip_after_eos(row[row != IGNORE_INDEX], eos)))
    return out
