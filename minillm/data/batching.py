"""Encoding with counted truncation, and batching with a resumable order.

The pipeline is::

    examples = load_jsonl("train.jsonl")                      # or minillm.data.tasks.builtin_dataset
    encoded, stats = encode_examples(examples, tok, 64, 32)   # token ids; truncation counted
    for batch in epoch_batches(encoded, 32, seed=0, epoch=e, start=i):
        ...                                                   # dict of int64 arrays

Batch order is a pure function of ``(seed, epoch)`` (:func:`epoch_order`), so a
trainer resumes mid-epoch from ``(epoch, batch index)`` with bit-identical batches.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

import minillm.seeds as seeds
from minillm.data.examples import Example
from minillm.ops.cross_entropy import IGNORE_INDEX

# ----------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class EncodedDataset:
    """Token ids of a data set: ``sources[i]`` and ``targets[i]`` both end with ``</s>``."""

    sources: list[np.ndarray]  # each (S_i,) int64
    targets: list[np.ndarray]  # each (T_i,) int64
    pad_id: int

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def lengths(self) -> np.ndarray:
        """(N, 2) int64: source and target length of every example."""
        return np.array(
            [(len(s), len(t)) for s, t in zip(self.sources, self.targets, strict=True)],
            dtype=np.int64,
        ).reshape(-1, 2)


@dataclass(frozen=True)
class EncodeStats:
    """What encoding did: how many sources/targets were cut to fit, and the longest seen."""

    n_examples: int
    truncated_sources: int
    truncated_targets: int
    max_source_tokens: int  # before truncation, including </s>
    max_target_tokens: int

    def summary(self) -> str:
        return (
            f"{self.n_examples} examples; truncated {self.truncated_sources} sources "
            f"(longest {self.max_source_tokens} tokens) and {self.truncated_targets} targets "
            f"(longest {self.max_target_tokens} tokens)"
        )


def truncate(ids: list[int], max_len: int, eos_id: int) -> tuple[list[int], bool]:
    """Keep the first ``max_len - 1`` tokens and the final ``</s>`` when too long."""
    if len(ids) <= max_len:
        return ids, False
    return ids[: max_len - 1] + [eos_id], True


def encode_examples(
    examples: Sequence[Example], tokenizer, max_source_len: int, max_target_len: int
) -> tuple[EncodedDataset, EncodeStats]:
    """Tokenize prompts and targets (each with ``</s>`` appended), cutting to the limits.

    Truncation is never silent: it is counted in the returned :class:`EncodeStats`
    and, when anything was cut, reported with a ``UserWarning``.
    """
    if max_source_len < 2 or max_target_len < 2:
        raise ValueError("max_source_len and max_target_len must be at least 2")
    eos = tokenizer.eos_token_id
    raw_src = tokenizer.encode_batch([ex.prompt for ex in examples])
    raw_tgt = tokenizer.encode_batch([ex.target for ex in examples])
    sources, targets, cut_s, cut_t = [], [], 0, 0
    for s, t in zip(raw_src, raw_tgt, strict=True):
        s, ts = truncate(s, max_source_len, eos)
        t, tt = truncate(t, max_target_len, eos)
        sources.append(np.asarray(s, dtype=np.int64))
        targets.append(np.asarray(t, dtype=np.int64))
        cut_s += ts
        cut_t += tt
    stats = EncodeStats(
        n_examples=len(examples),
        truncated_sources=cut_s,
        truncated_targets=cut_t,
        max_source_tokens=max((len(s) for s in raw_src), default=0),
        max_target_tokens=max((len(t) for t in raw_tgt), default=0),
    )
    if cut_s or cut_t:
        warnings.warn(f"encode_examples: {stats.summary()}", UserWarning, stacklevel=2)
    return EncodedDataset(sources, targets, int(tokenizer.pad_token_id)), stats


# ----------------------------------------------------------------------------- batching


def collate(encoded: EncodedDataset, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Pad the examples ``indices`` into one batch.

    Returns int64 arrays: ``input_ids`` (B, S) padded with the pad id,
    ``attention_mask`` (B, S) 1 on real tokens, ``labels`` (B, T) with -100 on
    padding, and ``index`` (B,). The decoder's input is the model's business
    (``T5.shift_right(labels)``), so it is not built here.
    """
    indices = np.asarray(indices, dtype=np.int64)
    src = [encoded.sources[i] for i in indices]
    tgt = [encoded.targets[i] for i in indices]
    B, S, T = len(indices), max(map(len, src)), max(map(len, tgt))
    pad = encoded.pad_id
    input_ids = np.full((B, S), pad, dtype=np.int64)  # (B, S)
    attention_mask = np.zeros((B, S), dtype=np.int64)  # (B, S)
    labels = np.full((B, T), IGNORE_INDEX, dtype=np.int64)  # (B, T)
    for b, (s, t) in enumerate(zip(src, tgt, strict=True)):
        input_ids[b, : len(s)] = s
        attention_mask[b, : len(s)] = 1
        labels[b, : len(t)] = t
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "index": indices,
    }


def batch_order(
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    *,
    shuffle: bool = True,
    bucket: bool = True,
    chunk_batches: int = 50,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """Split ``range(N)`` into batches of indices.

    ``lengths`` is (N,) or (N, 2) (source, target lengths). With ``shuffle`` the
    examples are permuted; with ``bucket`` each chunk of ``chunk_batches`` batches
    is sorted by length (source, then target) so a batch holds similar lengths and
    pads little; with ``shuffle`` the batches are then shuffled. Only ``rng``
    makes choices, so the order is a function of the Generator's state.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim == 1:
        lengths = lengths[:, None]
    n = len(lengths)
    idx = rng.permutation(n) if shuffle else np.arange(n)
    if bucket:
        chunk = batch_size * chunk_batches
        parts = []
        for start in range(0, n, chunk):
            c = idx[start : start + chunk]
            keys = lengths[c]
            # np.lexsort sorts by the last key first: source length, then target length.
            parts.append(c[np.lexsort(keys.T[::-1])])
        idx = np.concatenate(parts) if parts else idx
    out = [idx[i : i + batch_size] for i in range(0, n, batch_size)]
    if drop_last and out and len(out[-1]) < batch_size:
        out.pop()
    if shuffle:
        out = [out[i] for i in rng.permutation(len(out))]
    return out


def batches(
    encoded: EncodedDataset,
    batch_size: int,
    rng: np.random.Generator,
    shuffle: bool = True,
    bucket: bool = True,
    **order_kwargs,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield padded batches (see :func:`collate`) in the order :func:`batch_order` draws."""
    for idx in batch_order(encoded.lengths, batch_size, rng, shuffle=shuffle, bucket=bucket, **order_kwargs):
        yield collate(encoded, idx)


def epoch_order(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, **order_kwargs
) -> list[np.ndarray]:
    """The batches of epoch ``epoch``: a pure function of ``(lengths, batch_size, seed, epoch)``.

    Each epoch draws from its own stream, ``seeds.generator(seed, "order", epoch)``,
    so any epoch can be rebuilt without replaying the ones before it.
    """
    if seed < 0 or epoch < 0:
        raise ValueError("seed and epoch must be non-negative")
    rng = seeds.generator(seed, "order", epoch)
    return batch_order(lengths, batch_size, rng, **order_kwargs)


def epoch_batches(
    encoded: EncodedDataset,
    batch_size: int,
    seed: int,
    epoch: int,
    start: int = 0,
    **order_kwargs,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield the batches of ``epoch`` from batch number ``start`` on.

    Resuming after ``k`` batches with ``start=k`` yields exactly the batches an
    uninterrupted run would have seen next.
    """
    order = epoch_order(encoded.lengths, batch_size, seed, epoch, **order_kwargs)
    for idx in order[start:]:
        yield collate(encoded, idx)


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches an epoch of ``n`` examples has."""
    return n // batch_size if drop_last else -(-n // batch_size)


def split_held_out(examples: Sequence[Example], seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held out): 5% of ``examples`` (at least 1, at most 500) held out, chosen by ``seed``.

    For training on one JSONL file without a separate evaluation file; order is
    kept. The choice draws on the "held_out" stream of :mod:`minillm.seeds`.
    """
    train_pos, held_pos = held_out_positions(len(examples), seed)
    return [examples[i] for i in train_pos], [examples[i] for i in held_pos]


def held_out_positions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) positions of :func:`split_held_out` among ``n`` examples, each sorted."""
    k = min(500, max(1, n // 20)) if n >= 2 else 0
    perm = seeds.generator(seed, "held_out").permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def batch_stream(encoded: EncodedDataset, batch_size: int, seed: int, epoch: int = 0,
                 start: int = 0) -> Iterator[tuple[dict, tuple[int, int]]]:
    """Endless (batch, position after it) from data position (epoch, start).

    Epoch e's order is ``minillm.data.epoch_order(lengths, batch_size, seed, e)``
    (length-bucketed, shuffled), a pure function, so a position is all a resumed
    run needs. The position after the last batch of an epoch is (e + 1, 0).
    """
    lengths = encoded.lengths
    while True:
        order = epoch_order(lengths, batch_size, seed, epoch)
        for i in range(start, len(order)):
            pos = (epoch + 1, 0) if i + 1 == len(order) else (epoch, i + 1)
            yield collate(encoded, order[i]), pos
        epoch, start = epoch + 1, 0
