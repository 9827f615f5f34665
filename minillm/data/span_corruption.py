"""T5's span corruption: the pretraining objective of Raffel et al. (2020), section 3.1.4.

A raw example is L tokens of running text. A noise mask picks n of them in s
spans; the input keeps the other tokens and puts one sentinel where each noise
span was; the target gives each noise span after its sentinel:

    raw      Thank you for inviting me to your party last week .
    input    Thank you <extra_id_0> me to your party <extra_id_1> week . </s>
    target   <extra_id_0> for inviting <extra_id_1> last </s>

Interleaving the input and the target at the sentinels gives the raw tokens back
(:func:`restore`). The counts are fixed by L alone (T5's ``random_spans_noise_mask``,
transformers' ``DataCollatorForT5MLM`` in ``examples/flax/language-modeling/
run_t5_mlm_flax.py``), so every example of a length has the same input and target
lengths and a batch needs no padding:

    n = clamp(round(L * noise_density), 1, L - 1)                 noise tokens
    s = max(1, round(min(n, L - n) / mean_span_length))           noise spans (= non-noise spans)
    input length  S = (L - n) + s + 1                             kept tokens, a sentinel per span, </s>
    target length T = n + s + 1                                   noise tokens, a sentinel per span, </s>

The mask alternates s non-noise and s noise spans, beginning with non-noise; the
span lengths are two uniform random compositions (n into s positive parts, L - n
into s), so every such mask is equally likely. Sentinel j (the j-th span,
0-based) is ``first_sentinel - j``: ``<extra_id_0>`` is the top id of T5's
vocabulary and the sentinels go down from it. As in transformers, the target has
no closing sentinel (the paper's figure shows one).

:func:`expanded_length` is transformers' ``compute_input_and_target_lengths``
(T5's ``random_spans_helper``): the raw length L whose input is a given S (512 ->
568 raw tokens and 114 target tokens at density 0.15 and mean span 3). Random draws
come from the Generator passed in (the trainer's "span_noise" stream, :mod:`minillm.seeds`).
Rounding is Python's (half to even), as NumPy's and TensorFlow's.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def check_noise(noise_density: float, mean_span_length: float) -> None:
    """ValueError unless 0 < noise_density < 1 and mean_span_length >= 1."""
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise density must be between 0 and 1 (exclusive), got {noise_density}")
    if not mean_span_length >= 1.0:
        raise ValueError(f"mean span length must be at least 1, got {mean_span_length}")


def span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(n, s): noise tokens and noise spans of a raw example of ``length`` >= 2 tokens (module docstring)."""
    check_noise(noise_density, mean_span_length)
    if length < 2:
        raise ValueError(f"a raw example needs at least 2 tokens, got {length}")
    n = min(max(round(length * noise_density), 1), length - 1)
    s = max(1, round(min(n, length - n) / mean_span_length))
    return n, s


def corrupted_lengths(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(S, T): input and target lengths, ``</s>`` included, of a raw example of ``length`` tokens."""
    n, s = span_counts(length, noise_density, mean_span_length)
    return length - n + s + 1, n + s + 1


def expanded_length(input_length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(L, T): the longest raw length L whose input fits ``input_length``, and its target length.

    transformers' ``compute_input_and_target_lengths``: L grows from S while the
    input of L + 1 tokens still fits in S. For 512 at 0.15 and 3: (568, 114).
    (Their helper also trims L by one at density 0.5 when T > S; here S and T are
    always the lengths :func:`corrupt` makes; and for inputs so short that L = S does not
    fit, L first shrinks until it does.)
    """
    length = input_length
    while length > 2 and corrupted_lengths(length, noise_density, mean_span_length)[0] > input_length:
        length -= 1  # only tiny inputs: spans of one token, a sentinel each, and </s>
    if corrupted_lengths(length, noise_density, mean_span_length)[0] > input_length:
        shortest = corrupted_lengths(2, noise_density, mean_span_length)[0]
        raise ValueError(f"input length {input_length} is too short for span corruption "
                         f"(2 raw tokens already make {shortest})")
    while corrupted_lengths(length + 1, noise_density, mean_span_length)[0] <= input_length:
        length += 1
    return length, corrupted_lengths(length, noise_density, mean_span_length)[1]


def random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """(num_segments,) positive ints summing to ``num_items``: a uniformly random composition.

    Choose which num_segments - 1 of the num_items - 1 gaps between items start a
    new segment (every choice equally likely); the segment lengths are the gaps'
    differences.
    """
    cuts = rng.permutation(np.arange(num_items - 1) < num_segments - 1)  # (num_items - 1,) bool
    starts = np.concatenate([[0], np.flatnonzero(cuts) + 1, [num_items]])  # (num_segments + 1,)
    return np.diff(starts)


def random_spans_noise_mask(length: int, noise_density: float, mean_span_length: float,
                            rng: np.random.Generator) -> np.ndarray:
    """(L,) bool: True on the noise tokens, s non-noise spans then s noise spans, alternating.

    The noise lengths are drawn first, then the non-noise lengths, as in transformers.
    """
    n, s = span_counts(length, noise_density, mean_span_length)
    noise = random_segmentation(n, s, rng)  # (s,) noise span lengths
    keep = random_segmentation(length - n, s, rng)  # (s,) non-noise span lengths
    spans = np.stack([keep, noise], axis=1).reshape(-1)  # (2s,) keep_0, noise_0, keep_1, ...
    return np.repeat(np.tile([False, True], s), spans)  # (L,)


def corrupt(tokens, noise: np.ndarray, first_sentinel: int, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) of raw ``tokens`` (L,) under the bool ``noise`` mask (L,).

    input: each run of noise tokens replaced by its sentinel, then ``</s>``;
    target: each run of noise tokens after its sentinel, then ``</s>``; the j-th
    run's sentinel is ``first_sentinel - j``. Any mask works (a run may open the example).
    """
    tokens = np.asarray(tokens, dtype=np.int64)  # (L,)
    noise = np.asarray(noise, dtype=bool)  # (L,)
    starts = noise & ~np.concatenate([[False], noise[:-1]])  # (L,) first token of each noise run
    sentinel = first_sentinel - (np.cumsum(starts) - 1)  # (L,) the sentinel of the run a token is in
    eos = np.array([eos_id], dtype=np.int64)
    # input: a run's first token becomes its sentinel, the rest of the run is dropped
    inputs = np.where(starts, sentinel, tokens)[~noise | starts]
    # target: the noise tokens, each run's sentinel inserted before its first token
    target = np.insert(tokens[noise], np.flatnonzero(starts[noise]), sentinel[starts])
    return np.concatenate([inputs, eos]), np.concatenate([target, eos])


def corrupt_batch(raw: np.ndarray, noise_density: float, mean_span_length: float,
                  rng: np.random.Generator, first_sentinel: int, eos_id: int) -> dict[str, np.ndarray]:
    """A training batch of raw examples (B, L): a fresh noise mask per row, drawn in row order.

    Returns int64 ``input_ids`` (B, S), ``attention_mask`` (B, S) (all ones: no
    padding) and ``labels`` (B, T), with (S, T) = :func:`corrupted_lengths` (L).
    """
    raw = np.asarray(raw, dtype=np.int64)
    B, L = raw.shape
    S, T = corrupted_lengths(L, noise_density, mean_span_length)
    input_ids = np.empty((B, S), dtype=np.int64)  # (B, S)
    labels = np.empty((B, T), dtype=np.int64)  # (B, T)
    for b in range(B):
        mask = random_spans_noise_mask(L, noise_density, mean_span_length, rng)
        input_ids[b], labels[b] = corrupt(raw[b], mask, first_sentinel, eos_id)
    return {"input_ids": input_ids, "attention_mask": np.ones((B, S), dtype=np.int64), "labels": labels}


def restore(inputs, target, first_sentinel: int, num_sentinels: int, eos_id: int) -> list[int]:
    """The raw tokens back from an (input, target) pair: each sentinel of the input replaced by
    what follows that sentinel in the target. Ids in (first_sentinel - num_sentinels,
    first_sentinel] are sentinels; the final ``</s>`` of each is dropped."""
    def is_sentinel(t: int) -> bool:
        return first_sentinel - num_sentinels < t <= first_sentinel

    inputs, target = _without_eos(inputs, eos_id), _without_eos(target, eos_id)
    spans: dict[int, list[int]] = {}
    for t in target:
        if is_sentinel(t):
            spans[t] = current = []
        else:
            current.append(t)  # a target opens with a sentinel, so ``current`` is set
    out: list[int] = []
    for t in inputs:
        out.extend(spans[t] if is_sentinel(t) else [t])
    return out


def _without_eos(ids, eos_id: int) -> list[int]:
    ids = [int(t) for t in ids]
    if not ids or ids[-1] != eos_id:
        raise ValueError("a corrupted input or target ends with </s>")
    return ids[:-1]


def pack(documents: Iterable[list[int]], length: int) -> np.ndarray:
    """(N, length) int64: the documents' tokens end to end, cut into rows; the remainder is dropped.

    As ``group_texts`` in transformers' script: each document keeps the ``</s>``
    its encoding ends with, so a row may hold the end of one document and the
    start of the next.
    """
    stream = np.fromiter((t for doc in documents for t in doc), dtype=np.int64)
    rows = len(stream) // length
    return stream[: rows * length].reshape(rows, length)  # (N, L)
