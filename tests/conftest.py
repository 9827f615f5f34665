"""Shared test helpers, and the line between pure tests and reference tests.

tests/*.py are the pure tests: they need only minillm's runtime dependencies
(numpy, tokenizers, safetensors, tqdm) plus pytest and hypothesis. They check
minillm against finite differences, hand-computed values and its own invariants.

tests/reference/ holds the reference tests: parity with torch, transformers,
sacrebleu and rouge-score. Each of its modules skips itself (``importorskip``)
when a library it compares against is not installed, and every test there is
marked ``reference``: ``-m "not reference"`` runs the pure tests only.
``test_pure_tests_import_no_reference_library`` keeps the line where it is.

Helpers shared by several modules live here (``from tests.conftest import
tiny_config``), never in one test module imported by another.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib

import numpy as np
import pytest

import minillm

TESTS = pathlib.Path(__file__).parent


@pytest.fixture(autouse=True)
def _blas_threads_restored():
    """A test that runs a command with ``--threads N`` in this process sets OpenBLAS's pool
    for the whole process (as the flag does for a Python caller); put it back after each
    test, so a later test comparing an in-process run with a subprocess's bit for bit
    sees the default pool on both sides."""
    from minillm.blas import blas_threads, set_blas_threads

    before = blas_threads()
    yield
    if before is not None and blas_threads() != before:
        set_blas_threads(before)


REFERENCE = TESTS / "reference"
REFERENCE_LIBRARIES = ("torch", "transformers", "sacrebleu", "rouge_score")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REFERENCE in item.path.parents:
            item.add_marker(pytest.mark.reference)


def cuda_available() -> bool:
    """CuPy imports and sees a GPU."""
    from minillm.backend import xp_for

    try:
        xp_for("cuda")
        return True
    except RuntimeError:
        return False


def tiny_config(variant: str = "relu", **overrides) -> minillm.T5Config:
    """A tiny T5: 'relu' (v1.0, tied) or 'gated-gelu' (v1.1 / FLAN-T5, untied).

    H*D != C and decoder layers != encoder layers on purpose.
    """
    base = dict(
        vocab_size=64, d_model=16, d_kv=6, num_heads=3, d_ff=24, num_layers=2,
        num_decoder_layers=3, relative_attention_num_buckets=8,
        relative_attention_max_distance=20, dropout_rate=0.0,
        feed_forward_proj=variant, tie_word_embeddings=(variant == "relu"),
    )
    base.update(overrides)
    return minillm.T5Config(**base)


def random_batch(rng: np.random.Generator, vocab: int, B: int = 3, S: int = 9, T: int = 7):
    """input_ids (B, S), attention_mask (B, S) with right padding, labels (B, T) with -100 tails."""
    input_ids = rng.integers(2, vocab, (B, S))
    mask = np.ones((B, S), dtype=np.int64)
    labels = rng.integers(2, vocab, (B, T))
    for b in range(B):
        s_len = int(rng.integers(1, S + 1))
        mask[b, s_len:] = 0
        input_ids[b, s_len:] = 0
        t_len = int(rng.integers(1, T + 1))
        labels[b, t_len:] = -100
    return input_ids, mask, labels


def sharp_model(variant: str, seed: int, dtype="float64", eos_bias: float = 2.5,
                factor: float = 3.0, **overrides) -> minillm.T5:
    """A tiny T5 with peaked next-token distributions and a likelier EOS.

    Random tiny T5s have flat distributions, where a near tie could flip an
    argmax between two implementations; a larger ``initializer_factor`` sharpens
    them, and pushing up the EOS row of the output embedding makes sequences end
    (so finished rows, and beam search's finished hypotheses, are exercised).
    """
    cfg = tiny_config(variant, initializer_factor=factor, **overrides)
    model = minillm.T5.init(cfg, np.random.default_rng(seed), dtype=dtype)
    head = "shared.weight" if model.tied else "lm_head.weight"
    model.params[head][cfg.eos_token_id] += eos_bias * model.params[head].std()
    return model


def sharp_prompts(seed: int, vocab: int):
    """The (input_ids, attention_mask) (4, 9) that generation tests pair with ``sharp_model(_, seed)``."""
    ids, mask, _ = random_batch(np.random.default_rng(100 + seed), vocab, B=4, S=9)
    return ids, mask


def word_tokenizer(path, words) -> None:
    """Write a word-level tokenizer.json: <pad>=0, </s>=1, <unk>=2, then the words; '</s>' appended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()  # joins with spaces
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
    tok.save(str(path))


T5_WORDS = ("hello", "world", "the", "cat", "sat", "on", "mat", "translate", "English", "to", "German",
            "summarize", "question", "answer", "déjà", "vu", "café", "naïve", "über", "garçon", "a", "b",
            "is", "it", "what")
T5_SYMBOLS = tuple(".,:;?!'\"()-0123456789") + tuple("abcdefghijklmnopqrstuvwxyzéèàçïüABCDEGHQTW")


def t5_tokenizer(folder, layout: str = "hub", configs: bool = False) -> pathlib.Path:
    """Write a tokenizer.json in the layout of Google's T5 files, with a small made-up vocabulary.

    Unigram: <pad>=0, </s>=1, <unk>=2, "▁", "▁word" and "word" pieces, single characters,
    then the 100 sentinels at the top, <extra_id_99> first and <extra_id_0> last (as in
    T5: 32000..32099 of 32100). The special tokens are added tokens (special, not
    normalized); the post-processor appends </s>; the decoder is Metaspace("▁", always).

    ``layout`` "hub": the pre-tokenizer of Google's files, WhitespaceSplit then Metaspace;
    their normalizer is Precompiled (SentencePiece's nmt_nfkc charsmap), which cannot be
    built without SentencePiece: NFKC stands in for it. "converter": what transformers'
    T5Converter writes for a model without a charsmap: Strip(right) and Replace(" {2,}", "▁")
    as the normalizer, Metaspace alone as the pre-tokenizer.
    ``configs``: also tokenizer_config.json and special_tokens_map.json as transformers 4 wrote
    them for T5 (extra_ids, additional_special_tokens). Returns the tokenizer.json path.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    pieces = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "▁": -2.0}
    for i, w in enumerate(T5_WORDS):
        pieces.setdefault("▁" + w, -3.0 - 0.05 * i)
        pieces.setdefault(w, -6.0 - 0.05 * i)
    for c in T5_SYMBOLS:
        pieces.setdefault("▁" + c, -8.0)
        pieces.setdefault(c, -9.0)
    sentinels = [f"<extra_id_{i}>" for i in range(99, -1, -1)]
    vocab = list(pieces.items()) + [(t, 0.0) for t in sentinels]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    if layout == "hub":
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(),
             pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    elif layout == "converter":
        tok.normalizer = normalizers.Sequence(
            [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "▁")])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    else:
        raise ValueError(f"layout {layout!r}")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)])
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in ["<pad>", "</s>", "<unk>", *sentinels]])
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    if configs:
        extra = [f"<extra_id_{i}>" for i in range(100)]
        special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
                   "additional_special_tokens": extra}
        (folder / "special_tokens_map.json").write_text(json.dumps(special))
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {**special, "extra_ids": 100, "model_max_length": 512, "tokenizer_class": "T5Tokenizer"}))
    return folder / "tokenizer.json"


def model_rows(tokenizer_size: int) -> int:
    """The model's vocab_size for a tokenizer of that size: the next multiple of 128 above it
    (T5: 32128 rows for 32100 tokens)."""
    return (tokenizer_size // 128 + 1) * 128


def start_folder(folder, tasks, n_examples: int = 300) -> pathlib.Path:
    """Write a small starting model folder (random weights) with a tokenizer for built-in ``tasks``.

    The tokenizer is trained on ``n_examples`` of those tasks and all their phrasings;
    the model is a 1+1-layer, d_model 16 T5. For the trainers' and the CLI's run-folder tests.
    """
    from minillm.data.tasks import TASKS, builtin_dataset
    from minillm.data.tokenizer import Tokenizer
    from minillm.runfolder import checkpoint

    ex = builtin_dataset(n_examples, seed=0, tasks=tasks)
    phrasings = [p for t in tasks for p in TASKS[t].instructions + TASKS[t].heldout_instructions]
    tok = Tokenizer.train([e.prompt for e in ex] + [e.target for e in ex] + phrasings, vocab_size=160)
    config = minillm.T5Config(vocab_size=tok.vocab_size, d_model=16, d_kv=4, num_heads=2, d_ff=32,
                              num_layers=1, num_decoder_layers=1, dropout_rate=0.0,
                              relative_attention_num_buckets=8)
    checkpoint.save_model(folder, minillm.T5.init(config, np.random.default_rng(0)), tok)
    return pathlib.Path(folder)


def folder_digest(folder) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder``."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def trainer_state(step: int, **fields) -> dict:
    """A complete trainer state of an SFT run at ``step`` (what save_checkpoint takes), for tests.

    Its settings are checked as an object only (ckpt.read_state without config classes).
    """
    rng = np.random.default_rng(step)
    run = {"preset": "tiny", "data": None, "eval_data": None, "init": None, "n_train": 8,
           "n_eval": 2, "n_eval_periodic": None, "seed": 0, "max_source_len": 16,
           "max_target_len": 16, "data_sha256": None, "eval_data_sha256": None}
    return {"step": step, "epoch": 0, "batch_in_epoch": 0, "rng_state": rng.bit_generator.state,
            "best": None, "dtype": "float32", "train_config": {}, "run": run, **fields}


# ------------------------------------------------------------------ chi-square p-values


def gammaincc(a: float, x: float) -> float:
    """The regularised upper incomplete gamma function Q(a, x) = Gamma(a, x) / Gamma(a).

    Series for P = 1 - Q when x < a + 1, else a continued fraction for Q (modified
    Lentz), both to double precision (Numerical Recipes, 6.2). Checked against
    torch.special.gammaincc in tests/reference/test_generation.py.
    """
    if x <= 0:
        return 1.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:  # P(a, x) = x^a e^-x / Gamma(a + 1) * sum_n x^n / ((a + 1) ... (a + n))
        term = total = 1.0 / a
        n = a
        while abs(term) > abs(total) * 1e-17:
            n += 1
            term *= x / n
            total += term
        return 1.0 - total * math.exp(log_prefix)
    # Q(a, x) = x^a e^-x / Gamma(a) * 1 / (x + 1 - a - 1(1 - a) / (x + 3 - a - 2(2 - a) / (x + 5 - a - ...)))
    tiny = 1e-300
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return math.exp(log_prefix) * h


def chi_square_p_value(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's chi-square test of counts against probs; categories expected < 5 times pooled."""
    n = counts.sum()
    expected = n * probs
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = len(obs) - 1
    return gammaincc(df / 2, stat / 2)
