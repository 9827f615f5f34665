"""Generation: the KV cache against a full recompute, finished rows, sampling
against its distribution, seeds, options, the CLI.

The models (tests.conftest.sharp_model) have sharp distributions and a likelier
EOS, so that sequences end. Every decoding strategy against transformers'
``generate``, token for token, and the CLI's output against transformers on the
same folder: tests/reference/test_generation.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minillm
from minillm.engine import decode_step, init_cache, reorder_cache, step_weights
from minillm.generation import generate, sample, top_k_filter, top_p_filter
from tests.conftest import (
    chi_square_p_value,
    random_batch,
    sharp_model,
    sharp_prompts,
    tiny_config,
    word_tokenizer,
)

VARIANTS = ["relu", "gated-gelu"]  # v1.0 tied, v1.1 untied
SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def models():
    """(model, input_ids, attention_mask) per (variant, seed), built once."""
    built = {}

    def get(variant, seed):
        if (variant, seed) not in built:
            model = sharp_model(variant, seed)
            built[variant, seed] = (model, *sharp_prompts(seed, model.config.vocab_size))
        return built[variant, seed]

    return get


# ----------------------------------------------------------------- the KV cache


@st.composite
def cache_cases(draw):
    variant = draw(st.sampled_from(VARIANTS))
    H, D = draw(st.integers(1, 4)), draw(st.integers(1, 8))
    buckets = draw(st.integers(4, 12))
    cfg = tiny_config(variant, d_model=draw(st.sampled_from([8, 12, 16])), num_heads=H, d_kv=D,
                      d_ff=draw(st.integers(4, 24)), num_layers=draw(st.integers(1, 2)),
                      num_decoder_layers=draw(st.integers(1, 3)),
                      relative_attention_num_buckets=buckets,
                      # log-spaced buckets need max_distance > the exact ones (num_buckets / 2)
                      relative_attention_max_distance=draw(st.integers(buckets // 2 + 1, 24)),
                      vocab_size=draw(st.integers(8, 40)))
    B, S, T = draw(st.integers(1, 3)), draw(st.integers(1, 10)), draw(st.integers(1, 30))
    return cfg, B, S, T, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cache_cases())
def test_cached_step_equals_full_recompute(case):
    """Logits of step t from the cache == the full decoder over t+1 tokens (float64, 1e-10)."""
    cfg, B, S, T, seed = case
    rng = np.random.default_rng(seed)
    model = minillm.T5.init(cfg, rng, dtype="float64")
    ids, mask, _ = random_batch(rng, cfg.vocab_size, B=B, S=S)
    dec = rng.integers(0, cfg.vocab_size, (B, T))
    full = model.logits(ids, dec, mask)  # (B, T, V)
    cache = init_cache(model.params, cfg, model.encode(ids, mask), mask, max_length=T + 3)
    w = step_weights(model.params, cfg)
    for t in range(T):
        step = decode_step(w, cache, dec[:, t])  # (B, V)
        assert step.dtype == np.float64 and cache.length == t + 1
        err = np.abs(step - full[:, t]).max() / np.abs(full[:, t]).max()
        assert err <= 1e-10, (t, err)
    # the positions after the last step are never written
    assert all(not k[:, :, T:].any() for k in cache.self_k)


def test_reorder_cache_follows_the_beams():
    """After reorder_cache(index), row n continues row index[n]'s prefix."""
    rng = np.random.default_rng(0)
    cfg = tiny_config("gated-gelu")
    model = minillm.T5.init(cfg, rng, dtype="float64")
    ids, mask, _ = random_batch(rng, cfg.vocab_size, B=2, S=6)
    prefix = rng.integers(0, cfg.vocab_size, (4, 5))  # rows 0,1 -> prompt 0; rows 2,3 -> prompt 1
    cache = init_cache(model.params, cfg, model.encode(ids, mask), mask, 8, repeats=2)
    w = step_weights(model.params, cfg)
    for t in range(4):
        decode_step(w, cache, prefix[:, t])
    index = np.array([1, 1, 3, 2])  # parents stay within their prompt
    reorder_cache(cache, index)
    new = prefix[index]
    got = decode_step(w, cache, new[:, 4])
    full = model.logits(np.repeat(ids, 2, axis=0), new, np.repeat(mask, 2, axis=0))[:, 4]
    np.testing.assert_allclose(got, full, rtol=1e-12, atol=1e-12)


def test_float32_stays_float32():
    model = sharp_model("relu", 0, dtype="float32")
    ids, mask, _ = random_batch(np.random.default_rng(0), model.config.vocab_size, B=2, S=5)
    cache = init_cache(model.params, model.config, model.encode(ids, mask), mask, 4)
    assert cache.self_k[0].dtype == np.float32 and cache.cross_v[0].dtype == np.float32
    logits = decode_step(step_weights(model.params, model.config), cache, np.zeros(2, np.int64))
    assert logits.dtype == np.float32
    out = generate(model, ids, mask, max_new_tokens=3, num_beams=2, output_scores=True)
    assert out.sequences_scores.dtype == np.float32


# ------------------------------------------------------------------ finished rows


def test_the_test_models_end_sequences(models):
    """The EOS bias works: some greedy rows and some beam hypotheses end before max length."""
    ended = 0
    for seed in SEEDS:
        model, ids, mask = models("relu", seed)
        for kw in (dict(), dict(num_beams=3, num_return_sequences=3)):
            out = generate(model, ids, mask, max_new_tokens=10, **kw)
            ended += int((out[:, 1:-1] == model.config.eos_token_id).any(axis=1).sum())
    assert ended >= 3


def test_use_cache_false_is_the_same(models):
    model, ids, mask = models("gated-gelu", 1)
    for kw in (dict(), dict(num_beams=3, num_return_sequences=2, length_penalty=0.5)):
        a = generate(model, ids, mask, max_new_tokens=8, output_scores=True, **kw)
        b = generate(model, ids, mask, max_new_tokens=8, output_scores=True, use_cache=False, **kw)
        np.testing.assert_array_equal(a.sequences, b.sequences)
        for x, y in zip(a.scores, b.scores, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


def test_minillm_generate_and_finished_rows_padding(models):
    """Rows that end early are padded after their EOS; generation stops once every row has ended."""
    model, ids, mask = models("relu", 2)  # its rows end after 1 or 2 tokens
    out = minillm.generate(model, ids, mask, max_new_tokens=10)
    assert out.shape[0] == 4 and (out[:, 0] == model.config.decoder_start_token_id).all()
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    assert (out == eos).any(axis=1).all()
    first_eos = np.array([np.flatnonzero(row == eos)[0] for row in out])
    assert first_eos.min() < first_eos.max() == out.shape[1] - 1 < 10
    for row, t in zip(out, first_eos, strict=True):
        assert (row[t + 1:] == pad).all()


# ------------------------------------------------------------------------ sampling


@pytest.mark.parametrize("kwargs", [dict(top_k=8, temperature=0.8), dict(top_k=0, top_p=0.9),
                                    dict(top_k=0, temperature=2.0)])
def test_draws_follow_the_processed_distribution(kwargs):
    """4000 first tokens of one prompt against softmax of the scores they were drawn from."""
    model = sharp_model("relu", 3, dtype="float32", eos_bias=0.0, factor=1.0)  # a flat one
    ids, mask, _ = random_batch(np.random.default_rng(7), model.config.vocab_size, B=1, S=6)
    out = generate(model, ids, mask, do_sample=True, rng=np.random.default_rng(11),
                   max_new_tokens=1, num_return_sequences=4000, output_scores=True, **kwargs)
    scores = out.scores[0].astype(np.float64)
    np.testing.assert_allclose(scores, np.broadcast_to(scores[0], scores.shape), rtol=1e-5, atol=1e-5)
    probs = np.exp(scores[0] - scores[0].max())
    probs /= probs.sum()
    counts = np.bincount(out.sequences[:, 1], minlength=len(probs)).astype(np.float64)
    assert counts[probs == 0].sum() == 0
    assert chi_square_p_value(counts, probs) > 1e-3


def test_sample_is_an_inverse_cdf():
    """sample() on a known distribution: zero-probability ids never drawn, chi-square fits."""
    probs = np.array([0.5, 0.0, 0.2, 0.25, 0.0, 0.05])
    scores = np.log(np.where(probs > 0, probs, 1e-300)).astype(np.float32)
    scores[probs == 0] = -np.inf
    draws = sample(np.repeat(scores[None], 20000, axis=0), np.random.default_rng(0))
    counts = np.bincount(draws, minlength=6).astype(np.float64)
    assert counts[1] == counts[4] == 0
    assert chi_square_p_value(counts, probs) > 1e-3


def test_filters_match_their_definitions():
    scores = np.array([[1.0, 3.0, 2.0, 3.0, -1.0]], dtype=np.float32)
    # top_k keeps ties with the k-th
    np.testing.assert_array_equal(np.isfinite(top_k_filter(scores, 2)), [[0, 1, 0, 1, 0]])
    p = np.exp(scores[0]) / np.exp(scores[0]).sum()
    # top_p: the fewest top tokens with mass >= p
    kept = np.isfinite(top_p_filter(scores, float(2 * p[1] + 1e-3)))[0]
    np.testing.assert_array_equal(kept, [0, 1, 1, 1, 0])
    kept = np.isfinite(top_p_filter(scores, 0.01, min_tokens_to_keep=3))[0]
    assert kept.sum() == 3


@pytest.mark.parametrize("seed", range(8))
def test_top_p_filter_is_its_closed_form_for_any_min_tokens_to_keep(seed):
    """Sorted by probability, the token of rank r (0: the top) is kept when the tokens above it
    hold less than p of the mass, or when r < min_tokens_to_keep: every token when that exceeds V
    (the issue's case first: [[51.48, 9.64]], p 0.05, 3 kept both in transformers, one here)."""
    rng = np.random.default_rng(seed)
    V = int(rng.integers(2, 8))
    probs = rng.dirichlet(np.ones(V))
    p, m = float(rng.uniform(0.05, 0.95)), int(rng.integers(1, V + 4))
    order = np.argsort(-probs)
    above = np.concatenate([[0.0], np.cumsum(probs[order])[:-1]])  # the mass above each rank
    want = np.zeros(V, dtype=bool)
    want[order] = (above < p) | (np.arange(V) < m)
    got = np.isfinite(top_p_filter(np.log(probs)[None], p, min_tokens_to_keep=m))[0]
    np.testing.assert_array_equal(got, want)
    both = top_p_filter(np.array([[51.48, 9.64]], dtype=np.float32), 0.05, min_tokens_to_keep=3)
    assert np.isfinite(both).all()


def test_sampling_is_reproducible_and_beam_sampling_runs(models):
    model, ids, mask = models("relu", 1)
    a, b, c = (generate(model, ids, mask, do_sample=True, rng=np.random.default_rng(seed), max_new_tokens=6)
               for seed in (3, 3, 4))
    np.testing.assert_array_equal(a, b)  # the same seed, the same samples
    assert not np.array_equal(a, c)  # another seed, other samples
    out = generate(model, ids, mask, do_sample=True, num_beams=3, num_return_sequences=2,
                   rng=np.random.default_rng(3), max_new_tokens=6, top_k=10, output_scores=True)
    assert out.sequences.shape[0] == 8 and out.sequences_scores.shape == (8,)
    scores = out.sequences_scores.reshape(4, 2)
    assert (scores[:, 0] >= scores[:, 1]).all()


def test_bad_options_are_clear_errors(models):
    model, ids, mask = models("relu", 0)
    with pytest.raises(ValueError, match="rng"):
        generate(model, ids, mask, do_sample=True)
    with pytest.raises(ValueError, match="num_return_sequences"):
        generate(model, ids, mask, num_return_sequences=2)
    with pytest.raises(ValueError, match="num_return_sequences"):
        generate(model, ids, mask, num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="early_stopping"):
        generate(model, ids, mask, num_beams=2, early_stopping="sometimes")
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, ids, mask, max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, ids, mask, do_sample=True, temperature=0.0, rng=np.random.default_rng(0))


# ------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen-model")
    words = [f"w{i}" for i in range(61)]
    model = sharp_model("relu", 4, dtype="float32")
    model.save_pretrained(folder)
    word_tokenizer(folder / "tokenizer.json", words)
    return folder, model, words


def test_cli_sampling_is_seeded(model_dir, capsys):
    from minillm.cli import main

    folder, _, _ = model_dir
    args = ["generate", str(folder), "w1 w2", "--do-sample", "--top-k", "5", "--temperature", "3",
            "--max-new-tokens", "5"]  # hot enough that seeds 1 and 2 draw differently
    outs = []
    for seed in ("1", "1", "2"):
        assert main([*args, "--seed", seed]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == 1  # the same seed, the same line
    assert outs[2] != outs[0]  # another seed, another line


def test_cli_errors(tmp_path, model_dir, capsys):
    from minillm.cli import main

    assert main(["generate", str(tmp_path / "nowhere"), "x"]) == 2
    assert "not a folder" in capsys.readouterr().err
    folder, _, _ = model_dir
    assert main(["generate", str(folder), "w1", "--num-beams", "2",
                 "--num-return-sequences", "3"]) == 2
    assert "num_return_sequences" in capsys.readouterr().err
    assert main(["generate", str(tmp_path), "x"]) == 2
    assert "tokenizer.json" in capsys.readouterr().err


def test_cache_capacity_does_not_change_the_steps():
    """A step reads the cache up to its own position only, so T_max does not matter."""
    model = sharp_model("relu", 0, dtype="float32")
    ids, mask, _ = random_batch(np.random.default_rng(0), model.config.vocab_size, B=1, S=4)
    memory = model.encode(ids, mask)
    w = step_weights(model.params, model.config)
    short = init_cache(model.params, model.config, memory, mask, 4)
    long = init_cache(model.params, model.config, memory, mask, 400)
    for t in range(4):
        np.testing.assert_array_equal(decode_step(w, short, np.array([t])),
                                      decode_step(w, long, np.array([t])))
    assert math.prod(long.self_k[0].shape) == 100 * math.prod(short.self_k[0].shape)
