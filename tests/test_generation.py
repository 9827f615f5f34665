"""Generation: the KV cache against a full recompute, and every decoding strategy
against transformers' ``generate``, token for token, on random tiny T5s.

Random tiny T5s have flat next-token distributions, where a near tie could flip
an argmax between two implementations; the models here are initialised with a
larger ``initializer_factor`` (sharper distributions) and the EOS row of the
output embedding is pushed up so that sequences end and beam search's finished-
hypothesis and early-stopping paths run. transformers computes its scores in
float32 whatever the model's dtype (it casts the logits in ``_sample`` and
``_beam_search``), and so does minillm: the models are float64 on both sides,
the scores agree to float32 rounding.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minillm
from minillm.generation import GenerateOutput, generate, sample, top_k_filter, top_p_filter
from minillm.model.kv_cache import decode_step, init_cache, reorder_cache, step_weights
from tests.reference import random_batch, tiny_config, torch_model

VARIANTS = ["relu", "gated-gelu"]  # v1.0 tied, v1.1 untied
SEEDS = [0, 1, 2]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """transformers' small steps run fastest (and steadiest on a busy machine) on one thread."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sharp_model(variant: str, seed: int, dtype="float64", eos_bias: float = 2.5,
                factor: float = 3.0, **overrides):
    """A tiny T5 with peaked distributions and a likelier EOS (see the module docstring)."""
    cfg = tiny_config(variant, initializer_factor=factor, **overrides)
    model = minillm.T5.init(cfg, np.random.default_rng(seed), dtype=dtype)
    head = "shared.weight" if model.tied else "lm_head.weight"
    model.params[head][cfg.eos_token_id] += eos_bias * model.params[head].std()
    return model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(minillm model, transformers model, input_ids, attention_mask) per (variant, seed), built once."""
    built = {}

    def get(variant, seed):
        if (variant, seed) not in built:
            model = sharp_model(variant, seed)
            tm = torch_model(model, tmp_path_factory.mktemp(f"{variant}-{seed}"))
            ids, mask, _ = random_batch(np.random.default_rng(100 + seed), model.config.vocab_size,
                                        B=4, S=9)
            built[variant, seed] = (model, tm, ids, mask)
        return built[variant, seed]

    return get


def hf_generate(tm, ids, mask, **kwargs):
    """transformers' generate with scores; a fresh lazily-grown cache.

    transformers sizes its default cache by the encoder's layer count, which
    breaks when the decoder has more layers (as tiny_config's); a DynamicCache
    without a config grows one layer per decoder layer.
    """
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    with torch.no_grad():
        return tm.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                           cache=EncoderDecoderCache(DynamicCache(), DynamicCache()),
                           return_dict_in_generate=True, output_scores=True, **kwargs)


def assert_same_scores(ours, theirs, rtol=1e-5, atol=1e-5):
    """Processed float32 scores: -inf at the same places, the rest to float32 rounding."""
    theirs = theirs.numpy() if hasattr(theirs, "numpy") else np.asarray(theirs)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs))
    fin = np.isfinite(theirs)
    np.testing.assert_allclose(ours[fin], theirs[fin], rtol=rtol, atol=atol)


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


# ------------------------------------------------------ token for token with transformers

CASES = {
    "greedy": dict(),
    "greedy_min_new_tokens": dict(min_new_tokens=6),
    "greedy_repetition_penalty": dict(repetition_penalty=1.4),
    "greedy_repetition_reward": dict(repetition_penalty=0.7, min_new_tokens=3),
    "greedy_no_repeat_ngram": dict(no_repeat_ngram_size=2),
    "beam2_lp_0.6": dict(num_beams=2, length_penalty=0.6),
    "beam3_return3_early_true": dict(num_beams=3, num_return_sequences=3, early_stopping=True),
    "beam4_return2_never_lp2": dict(num_beams=4, num_return_sequences=2, early_stopping="never",
                                    length_penalty=2.0),
    "beam5_never_lp_neg": dict(num_beams=5, early_stopping="never", length_penalty=-0.5),
    "beam3_false_lp1.5": dict(num_beams=3, early_stopping=False, length_penalty=1.5),
    "beam3_no_repeat_ngram": dict(num_beams=3, no_repeat_ngram_size=2, num_return_sequences=2),
    "beam4_repetition_min_new": dict(num_beams=4, repetition_penalty=1.3, min_new_tokens=5),
    "beam2_ngram3_early_true": dict(num_beams=2, no_repeat_ngram_size=3, early_stopping=True,
                                    length_penalty=0.0),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_transformers(pair, case, variant, seed):
    model, tm, ids, mask = pair(variant, seed)
    kwargs = dict(max_new_tokens=10, **CASES[case])
    ours = generate(model, ids, mask, output_scores=True, **kwargs)
    theirs = hf_generate(tm, ids, mask, **kwargs)
    np.testing.assert_array_equal(ours.sequences, theirs.sequences.numpy())
    assert len(ours.scores) == len(theirs.scores)
    for a, b in zip(ours.scores, theirs.scores, strict=True):
        assert_same_scores(a, b)
    if kwargs.get("num_beams", 1) > 1:
        # float32 sums on both sides: agreement to a few float32 ulps of the score
        np.testing.assert_allclose(ours.sequences_scores, theirs.sequences_scores.numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ours.beam_indices, theirs.beam_indices.numpy())
    if kwargs.get("min_new_tokens"):
        n = kwargs["min_new_tokens"]
        assert not (ours.sequences[:, 1:n + 1] == model.config.eos_token_id).any()


def test_the_test_models_end_sequences(pair):
    """The EOS bias works: some greedy rows and some beam hypotheses end before max length."""
    ended = 0
    for seed in SEEDS:
        model, _, ids, mask = pair("relu", seed)
        for kw in (dict(), dict(num_beams=3, num_return_sequences=3)):
            out = generate(model, ids, mask, max_new_tokens=10, **kw)
            ended += int((out[:, 1:-1] == model.config.eos_token_id).any(axis=1).sum())
    assert ended >= 3


def test_use_cache_false_is_the_same(pair):
    model, _, ids, mask = pair("gated-gelu", 1)
    for kw in (dict(), dict(num_beams=3, num_return_sequences=2, length_penalty=0.5)):
        a = generate(model, ids, mask, max_new_tokens=8, output_scores=True, **kw)
        b = generate(model, ids, mask, max_new_tokens=8, output_scores=True, use_cache=False, **kw)
        np.testing.assert_array_equal(a.sequences, b.sequences)
        for x, y in zip(a.scores, b.scores, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


def test_minillm_generate_and_finished_rows_padding(pair):
    model, _, ids, mask = pair("relu", 2)
    out = minillm.generate(model, ids, mask, max_new_tokens=10)
    assert out.shape[0] == 4 and (out[:, 0] == model.config.decoder_start_token_id).all()
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    for row in out:
        hits = np.flatnonzero(row == eos)
        if len(hits):
            assert (row[hits[0] + 1:] == pad).all()


# ------------------------------------------------------------------------ sampling

SAMPLING = {
    "top_k": dict(top_k=5),
    "top_p": dict(top_k=0, top_p=0.8),
    "temperature_top_k_top_p": dict(temperature=0.7, top_k=12, top_p=0.9),
    "hot_repetition": dict(temperature=1.6, repetition_penalty=1.2, top_k=50),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", list(SAMPLING))
def test_sampling_distribution_matches_transformers(pair, case, variant):
    """At every step, the processed scores minillm samples from == transformers' on the same prefix."""
    import torch

    model, tm, ids, mask = pair(variant, 0)
    kwargs = SAMPLING[case]
    ours = generate(model, ids, mask, do_sample=True, rng=np.random.default_rng(5),
                    max_new_tokens=6, num_return_sequences=2, output_scores=True, **kwargs)
    assert isinstance(ours, GenerateOutput)
    ids2, mask2 = np.repeat(ids, 2, axis=0), np.repeat(mask, 2, axis=0)
    for t, scores in enumerate(ours.scores):
        prefix = torch.tensor(ours.sequences[:, :t + 1])
        theirs = hf_generate(tm, ids2, mask2, decoder_input_ids=prefix, do_sample=True,
                             max_new_tokens=1, **kwargs)
        assert_same_scores(scores, theirs.scores[0])
        # every token drawn had a finite processed score
        drawn = ours.sequences[:, t + 1]
        live = ~(ours.sequences[:, 1:t + 1] == model.config.eos_token_id).any(axis=1)
        assert np.isfinite(scores[np.arange(len(drawn)), drawn][live]).all()


def chi_square_p_value(counts, probs):
    """Pearson's chi-square test of counts against probs; categories expected < 5 times pooled."""
    import torch

    n = counts.sum()
    expected = n * probs
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = len(obs) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


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


def test_sampling_is_reproducible_and_beam_sampling_runs(pair):
    model, _, ids, mask = pair("relu", 1)
    a = generate(model, ids, mask, do_sample=True, rng=np.random.default_rng(3), max_new_tokens=6)
    b = generate(model, ids, mask, do_sample=True, rng=np.random.default_rng(3), max_new_tokens=6)
    np.testing.assert_array_equal(a, b)
    out = generate(model, ids, mask, do_sample=True, num_beams=3, num_return_sequences=2,
                   rng=np.random.default_rng(3), max_new_tokens=6, top_k=10, output_scores=True)
    assert out.sequences.shape[0] == 8 and out.sequences_scores.shape == (8,)
    scores = out.sequences_scores.reshape(4, 2)
    assert (scores[:, 0] >= scores[:, 1]).all()


def test_bad_options_are_clear_errors(pair):
    model, _, ids, mask = pair("relu", 0)
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


def _word_tokenizer(path, words):
    """A word-level tokenizer.json: <pad>=0, </s>=1, <unk>=2, then the words; '</s>' appended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()  # joins with spaces
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
    tok.save(str(path))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen-model")
    words = [f"w{i}" for i in range(61)]
    model = sharp_model("relu", 4, dtype="float32")
    model.save_pretrained(folder)
    _word_tokenizer(folder / "tokenizer.json", words)
    return folder, model, words


def _expected(model, words, prompts, **kwargs):
    ids = [[3 + words.index(w) for w in p.split()] + [1] for p in prompts]
    S = max(map(len, ids))
    x = np.zeros((len(ids), S), np.int64)
    m = np.zeros((len(ids), S), np.int64)
    for i, row in enumerate(ids):
        x[i, :len(row)], m[i, :len(row)] = row, 1
    out = generate(model, x, m, **kwargs)
    lines = []
    for row in out:
        gen = list(row[1:])
        gen = gen[:gen.index(1)] if 1 in gen else gen
        lines.append(" ".join(words[i - 3] for i in gen if i >= 3))
    return lines


def test_cli_prompts_from_arguments(model_dir, capsys):
    from minillm.cli import main

    folder, model, words = model_dir
    prompts = ["w1 w2 w3", "w40 w7", "w9"]
    assert main(["generate", str(folder), *prompts, "--max-new-tokens", "6", "--num-beams", "3",
                 "--num-return-sequences", "2", "--batch-size", "2"]) == 0
    got = capsys.readouterr().out.splitlines()
    assert got == _expected(model, words, prompts, max_new_tokens=6, num_beams=3,
                            num_return_sequences=2)


def test_cli_prompts_from_stdin_and_generation_config(model_dir, capsys, monkeypatch, tmp_path):
    import io
    import shutil

    from minillm.cli import main

    folder, model, words = model_dir
    local = tmp_path / "m"
    shutil.copytree(folder, local)
    (local / "generation_config.json").write_text(json.dumps(
        {"max_new_tokens": 5, "num_beams": 2, "repetition_penalty": 1.5, "decoder_start_token_id": 0}))
    monkeypatch.setattr("sys.stdin", io.StringIO("w5 w6\nw7\n"))
    assert main(["generate", str(local), "--num-beams", "1"]) == 0  # the flag wins
    got = capsys.readouterr().out.splitlines()
    assert got == _expected(model, words, ["w5 w6", "w7"], max_new_tokens=5,
                            repetition_penalty=1.5)


def test_cli_sampling_is_seeded(model_dir, capsys):
    from minillm.cli import main

    folder, _, _ = model_dir
    args = ["generate", str(folder), "w1 w2", "--do-sample", "--top-k", "5", "--max-new-tokens", "5"]
    outs = []
    for seed in ("1", "1"):
        assert main([*args, "--seed", seed]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == 1


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
