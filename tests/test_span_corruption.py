"""T5's span corruption (minillm.data.span_corruption) held to its definition and to transformers'.

The transformers formulation (``compute_input_and_target_lengths``, and
``create_sentinel_ids`` + ``filter_input_ids`` of ``DataCollatorForT5MLM`` in
examples/flax/language-modeling/run_t5_mlm_flax.py) is written out below as that
script computes it (cumulative sums over the mask, negative ids dropped), an
implementation independent of minillm's (runs found by their starts, np.insert).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minillm.data.span_corruption import (
    corrupt,
    corrupt_batch,
    corrupted_lengths,
    expanded_length,
    pack,
    random_segmentation,
    random_spans_noise_mask,
    restore,
    span_counts,
)

EOS, TOP, NUM_SENTINELS = 1, 999, 100  # <extra_id_0> = 999, the top id; raw tokens lie below 899

densities = st.floats(0.01, 0.99)
means = st.floats(1.0, 8.0)
seeds = st.integers(0, 2**32 - 1)


def hf_compute_input_and_target_lengths(inputs_length, noise_density, mean_noise_span_length):
    """transformers' helper as its script writes it (no clamping of the counts)."""
    def lengths(tokens_length):
        num_noise_tokens = int(round(tokens_length * noise_density))
        num_nonnoise_tokens = tokens_length - num_noise_tokens
        num_noise_spans = int(round(num_noise_tokens / mean_noise_span_length))
        return num_nonnoise_tokens + num_noise_spans + 1, num_noise_tokens + num_noise_spans + 1

    tokens_length = inputs_length
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, lengths(tokens_length)[1]


def hf_filter(tokens, mask, vocab_len):
    """create_sentinel_ids then filter_input_ids of the collator, for one row (len(tokenizer) = vocab_len)."""
    mask = mask.astype(np.int8)[None]  # (1, L)
    start = mask - np.roll(mask, 1, axis=-1) * mask
    start[:, 0] = mask[:, 0]
    sentinel = np.where(start != 0, np.cumsum(start, axis=-1), start)
    sentinel = np.where(sentinel != 0, vocab_len - sentinel, 0)
    sentinel -= mask - start
    full = np.where(sentinel != 0, sentinel, np.asarray(tokens)[None])
    return np.concatenate([full[full >= 0], [EOS]])


def runs(mask) -> list[tuple[bool, int]]:
    """(value, length) of each run of equal values."""
    return [(bool(k), len(list(g))) for k, g in itertools.groupby(mask)]


# ------------------------------------------------------------------ the definition


def test_t5_lengths_at_512():
    """T5's 512-token inputs: 568 raw tokens, 114 target tokens (85 noise tokens in 28 spans, </s>)."""
    assert expanded_length(512, 0.15, 3.0) == (568, 114)
    assert span_counts(568, 0.15, 3.0) == (85, 28)
    assert corrupted_lengths(568, 0.15, 3.0) == (512, 114)


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 1024), st.floats(0.01, 0.4999), means)
def test_expanded_length_equals_transformers(inputs_length, density, mean):
    assume(round(inputs_length * density) >= 1)  # their helper does not clamp n to at least 1
    theirs = hf_compute_input_and_target_lengths(inputs_length, density, mean)
    assume(corrupted_lengths(theirs[0], density, mean)[0] <= inputs_length)  # tiny inputs: L = S overflows
    assert expanded_length(inputs_length, density, mean) == hf_compute_input_and_target_lengths(
        inputs_length, density, mean)
    length, targets = expanded_length(inputs_length, density, mean)
    assert corrupted_lengths(length, density, mean) == (inputs_length, targets)
    assert corrupted_lengths(length + 1, density, mean)[0] > inputs_length


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 2000), densities, means, seeds)
def test_mask_has_the_defined_counts_for_every_length(length, density, mean, seed):
    mask = random_spans_noise_mask(length, density, mean, np.random.default_rng(seed))
    n = min(max(round(length * density), 1), length - 1)
    s = max(1, round(min(n, length - n) / mean))
    assert span_counts(length, density, mean) == (n, s)
    assert mask.shape == (length,) and mask.dtype == bool
    assert int(mask.sum()) == n
    r = runs(mask)
    assert [v for v, _ in r] == [False, True] * s  # s non-noise spans and s noise spans, alternating
    assert all(k >= 1 for _, k in r)


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 600), densities, means, seeds)
def test_interleaving_input_and_target_restores_the_tokens(length, density, mean, seed):
    rng = np.random.default_rng(seed)
    assume(span_counts(length, density, mean)[1] <= NUM_SENTINELS)
    tokens = rng.integers(2, TOP - NUM_SENTINELS + 1, length)
    mask = random_spans_noise_mask(length, density, mean, rng)
    inputs, target = corrupt(tokens, mask, TOP, EOS)
    assert restore(inputs, target, TOP, NUM_SENTINELS, EOS) == tokens.tolist()
    assert (len(inputs), len(target)) == corrupted_lengths(length, density, mean)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 600), densities, means, seeds)
def test_sentinels_descend_from_the_top_id(length, density, mean, seed):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, TOP - NUM_SENTINELS + 1, length)
    mask = random_spans_noise_mask(length, density, mean, rng)
    inputs, target = corrupt(tokens, mask, TOP, EOS)
    _, s = span_counts(length, density, mean)
    assume(s <= NUM_SENTINELS)
    expected = list(range(TOP, TOP - s, -1))  # <extra_id_0>, <extra_id_1>, ...
    assert [t for t in inputs.tolist() if t > TOP - NUM_SENTINELS] == expected
    assert [t for t in target.tolist() if t > TOP - NUM_SENTINELS] == expected
    assert target[0] == TOP
    assert inputs[-1] == EOS and target[-1] == EOS
    assert EOS not in inputs[:-1].tolist() and EOS not in target[:-1].tolist()


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 600), densities, means, seeds)
def test_corrupt_equals_transformers_collator(length, density, mean, seed):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, TOP - NUM_SENTINELS + 1, length)
    mask = random_spans_noise_mask(length, density, mean, rng)
    inputs, target = corrupt(tokens, mask, TOP, EOS)
    np.testing.assert_array_equal(inputs, hf_filter(tokens, mask, TOP + 1))
    np.testing.assert_array_equal(target, hf_filter(tokens, ~mask, TOP + 1))


def test_corrupt_of_a_hand_made_mask():
    tokens = [10, 11, 12, 13, 14, 15, 16]
    mask = np.array([1, 0, 0, 1, 1, 0, 1], dtype=bool)  # a mask may open with noise here
    inputs, target = corrupt(tokens, mask, 50, EOS)
    assert inputs.tolist() == [50, 11, 12, 49, 15, 48, EOS]
    assert target.tolist() == [50, 10, 49, 13, 14, 48, 16, EOS]
    assert restore(inputs, target, 50, 3, EOS) == tokens


def test_every_mask_is_equally_likely():
    """L = 10, density 0.4, mean 2: n = 4 in s = 2 spans; 3 x 5 = 15 masks, each 1/15."""
    rng = np.random.default_rng(0)
    draws = 15_000
    counts: dict[bytes, int] = {}
    for _ in range(draws):
        m = random_spans_noise_mask(10, 0.4, 2.0, rng).tobytes()
        counts[m] = counts.get(m, 0) + 1
    assert len(counts) == 15
    assert max(abs(c - draws / 15) for c in counts.values()) < 150  # ~5 standard deviations


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 50), st.data())
def test_random_segmentation_is_a_composition(items, data):
    segments = data.draw(st.integers(1, items))
    parts = random_segmentation(items, segments, np.random.default_rng(data.draw(seeds)))
    assert len(parts) == segments and parts.sum() == items and (parts >= 1).all()


def test_corrupt_batch_draws_a_mask_per_row_in_order():
    raw = np.arange(2, 2 + 3 * 40).reshape(3, 40)
    batch = corrupt_batch(raw, 0.15, 3.0, np.random.default_rng(7), TOP, EOS)
    rng = np.random.default_rng(7)
    S, T = corrupted_lengths(40, 0.15, 3.0)
    assert batch["input_ids"].shape == (3, S) and batch["labels"].shape == (3, T)
    assert (batch["attention_mask"] == 1).all()
    for b in range(3):
        inputs, target = corrupt(raw[b], random_spans_noise_mask(40, 0.15, 3.0, rng), TOP, EOS)
        np.testing.assert_array_equal(batch["input_ids"][b], inputs)
        np.testing.assert_array_equal(batch["labels"][b], target)


def test_pack_joins_documents_and_drops_the_remainder():
    docs = [[5, 6, EOS], [7, EOS], [8, 9, 10, EOS]]
    np.testing.assert_array_equal(pack(docs, 4), [[5, 6, EOS, 7], [EOS, 8, 9, 10]])
    assert pack(docs, 20).shape == (0, 20)


def test_tiny_inputs_shrink_the_raw_length_or_are_refused():
    assert expanded_length(3, 0.25, 1.0) == (2, 3)  # 3 raw tokens would make an input of 4
    assert corrupted_lengths(2, 0.25, 1.0) == (3, 3)
    with pytest.raises(ValueError, match="too short"):
        expanded_length(2, 0.25, 1.0)


@pytest.mark.parametrize("bad", [dict(noise_density=0.0), dict(noise_density=1.0),
                                 dict(mean_span_length=0.5), dict(length=1)])
def test_bad_settings_are_one_line_errors(bad):
    args = dict(length=10, noise_density=0.15, mean_span_length=3.0) | bad
    with pytest.raises(ValueError, match="noise density|mean span|at least 2"):
        span_counts(**args)
