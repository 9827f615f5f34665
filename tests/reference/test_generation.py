"""Every decoding strategy against transformers' ``generate``, token for token and
score for score, on random tiny T5s; the CLI's output against transformers on the
same folder; the chi-square helper of the pure tests against torch.

The models (tests.conftest.sharp_model) have sharp distributions and a likelier
EOS, so that near ties do not flip an argmax between the two implementations
and sequences end. transformers computes its scores in float32 whatever the
model's dtype (it casts the logits in ``_sample`` and ``_beam_search``), and so
does minillm: the models are float64 on both sides, the scores agree to float32
rounding.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from minillm.generation import GenerateOutput, generate
from tests.conftest import gammaincc, sharp_model, sharp_prompts, word_tokenizer
from tests.reference.conftest import hf_generate, patch_t5_layernorm, torch_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VARIANTS = ["relu", "gated-gelu"]  # v1.0 tied, v1.1 untied
SEEDS = [0, 1, 2]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """transformers' small steps run fastest (and steadiest on a busy machine) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(minillm model, transformers model, input_ids, attention_mask) per (variant, seed), built once."""
    built = {}

    def get(variant, seed):
        if (variant, seed) not in built:
            model = sharp_model(variant, seed)
            tm = torch_model(model, tmp_path_factory.mktemp(f"{variant}-{seed}"))
            built[variant, seed] = (model, tm, *sharp_prompts(seed, model.config.vocab_size))
        return built[variant, seed]

    return get


def assert_same_scores(ours, theirs, rtol=1e-5, atol=1e-5):
    """Processed float32 scores: -inf at the same places, the rest to float32 rounding."""
    theirs = theirs.numpy() if hasattr(theirs, "numpy") else np.asarray(theirs)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs))
    fin = np.isfinite(theirs)
    np.testing.assert_allclose(ours[fin], theirs[fin], rtol=rtol, atol=atol)


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


def test_gammaincc_matches_torch():
    """The regularised upper incomplete gamma behind the pure tests' chi-square p-values."""
    for a in (0.5, 1.0, 1.5, 2.0, 3.0, 4.5, 7.0, 10.0, 20.0, 50.5):
        for x in (1e-3, 0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0, 60.0, 100.0):
            ref = float(torch.special.gammaincc(torch.tensor(a, dtype=torch.float64),
                                                torch.tensor(x, dtype=torch.float64)))
            assert abs(gammaincc(a, x) - ref) <= 1e-8 * ref + 1e-300, (a, x)


# ------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A float32 sharp model with a word-level tokenizer: w0..w60 are ids 3..63."""
    folder = tmp_path_factory.mktemp("gen-model")
    words = [f"w{i}" for i in range(61)]
    sharp_model("relu", 4, dtype="float32").save_pretrained(folder)
    word_tokenizer(folder / "tokenizer.json", words)
    return folder, words


def hf_lines(folder, words, prompts, **kwargs):
    """transformers' generate on ``folder``: per output, its words up to the first </s>."""
    patch_t5_layernorm()
    tm = transformers.T5ForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()
    ids = [[3 + words.index(w) for w in p.split()] + [1] for p in prompts]
    x = np.zeros((len(ids), max(map(len, ids))), np.int64)
    m = np.zeros_like(x)
    for i, row in enumerate(ids):
        x[i, :len(row)], m[i, :len(row)] = row, 1
    lines = []
    for row in hf_generate(tm, x, m, **kwargs).sequences.numpy():
        gen = list(row[1:])
        gen = gen[:gen.index(1)] if 1 in gen else gen
        lines.append(" ".join(words[i - 3] for i in gen if i >= 3))
    return lines


def test_cli_prompts_from_arguments(model_dir, capsys):
    from minillm.cli import main

    folder, words = model_dir
    prompts = ["w1 w2 w3", "w40 w7", "w9"]
    assert main(["generate", str(folder), *prompts, "--max-new-tokens", "6", "--num-beams", "3",
                 "--num-return-sequences", "2", "--batch-size", "2"]) == 0
    got = capsys.readouterr().out.splitlines()
    assert got == hf_lines(folder, words, prompts, max_new_tokens=6, num_beams=3,
                           num_return_sequences=2)


def test_cli_prompts_from_stdin_and_generation_config(model_dir, capsys, monkeypatch, tmp_path):
    import io
    import shutil

    from minillm.cli import main

    folder, words = model_dir
    local = tmp_path / "m"
    shutil.copytree(folder, local)
    (local / "generation_config.json").write_text(json.dumps(
        {"max_new_tokens": 5, "num_beams": 2, "repetition_penalty": 1.5, "decoder_start_token_id": 0}))
    monkeypatch.setattr("sys.stdin", io.StringIO("w5 w6\nw7\n"))
    assert main(["generate", str(local), "--num-beams", "1"]) == 0  # the flag wins
    got = capsys.readouterr().out.splitlines()
    assert got == hf_lines(folder, words, ["w5 w6", "w7"], max_new_tokens=5, num_beams=1,
                           repetition_penalty=1.5)


@pytest.mark.parametrize("min_keep", [1, 2, 3, 7])
@pytest.mark.parametrize("seed", range(4))
def test_top_p_filter_matches_transformers_with_any_min_tokens_to_keep(seed, min_keep):
    """TopPLogitsWarper keeps the top min_tokens_to_keep tokens (all of them when that exceeds the
    vocabulary: its slice [..., -m:] starts at 0), as top_p_filter does; the issue's case first."""
    from transformers import TopPLogitsWarper

    from minillm.generation import top_p_filter

    rng = np.random.default_rng(seed)
    cases = [(np.array([[51.48, 9.64]], dtype=np.float32), 0.05)] if seed == 0 else []
    cases.append(((rng.standard_normal((3, 5)) * 3).astype(np.float32), float(rng.uniform(0.05, 0.95))))
    for scores, p in cases:
        ours = np.isfinite(top_p_filter(scores, p, min_tokens_to_keep=min_keep))
        warper = TopPLogitsWarper(top_p=p, min_tokens_to_keep=min_keep)
        theirs = torch.isfinite(warper(torch.zeros((len(scores), 1), dtype=torch.long),
                                       torch.from_numpy(scores.copy()))).numpy()
        np.testing.assert_array_equal(ours, theirs)
