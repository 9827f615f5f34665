"""T5's own tokenizer files: minillm encodes and decodes as transformers' T5TokenizerFast, and
``minillm generate`` / ``minillm eval`` on a T5 folder print what transformers' generate +
``decode(skip_special_tokens=True)`` gives.

The tokenizer.json is built locally in the layout of Google's T5 files
(tests.conftest.t5_tokenizer: Unigram, Metaspace, </s> by the post-processor, the 100
sentinels at the top; NFKC stands in for the Precompiled normalizer, which needs
SentencePiece to build), and the model has more rows than the tokenizer has tokens, as
T5's 32128 for 32100.
"""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest

from minillm.data.tokenizer import Tokenizer
from tests.conftest import model_rows, sharp_model, t5_tokenizer
from tests.reference.conftest import hf_generate, patch_t5_layernorm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = [
    "hello world", "  hello   world  ", "hello\nworld", "hello\n\n world\n", "\thello\tworld",
    "translate English to German: the cat sat on the mat.", "summarize: déjà vu, café; naïve garçon!",
    "Über die cafe\u0301 (de\u0301ja\u0300)", "question: what is it? answer: 42", "",
    " ", "the <extra_id_0> sat on <extra_id_1>.", "the<extra_id_0>sat<extra_id_99> b",
    "hello </s> world <pad> <unk>", "a , b ? it 's", "xyz QQQ ~ {}", "ÉTÉ à Noël",
]


@pytest.fixture(params=["hub", "converter"])
def layout(request):
    return request.param


def _fast(path):
    return transformers.T5TokenizerFast(tokenizer_file=str(path))


def test_encode_decode_equal_transformers_from_the_file(layout, tmp_path):
    path = t5_tokenizer(tmp_path, layout)
    ours, theirs = Tokenizer.from_file(path), _fast(path)
    assert ours.vocab_size == len(theirs)
    for text in TEXTS:
        ids = theirs(text).input_ids
        assert ours.encode(text) == ids, text
        assert ours.encode(text, add_eos=False) == theirs(text, add_special_tokens=False).input_ids
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
    assert ours.encode_batch(TEXTS) == theirs(TEXTS).input_ids


def test_decode_of_any_ids_equals_transformers(layout, tmp_path):
    """Random ids over the model's rows: specials, sentinels, and rows beyond the tokenizer."""
    path = t5_tokenizer(tmp_path, layout)
    ours, theirs = Tokenizer.from_file(path), _fast(path)
    rng = np.random.default_rng(0)
    rows = model_rows(ours.vocab_size)
    for _ in range(200):
        ids = rng.integers(0, rows, int(rng.integers(0, 12))).tolist()
        for skip in (True, False):
            assert ours.decode(ids, skip) == theirs.decode(ids, skip_special_tokens=skip), ids


@pytest.mark.parametrize("written_by", ["transformers", "t5-hub-configs", "clean-up"])
def test_folder_with_configs_equals_transformers(written_by, tmp_path):
    """A folder as transformers saves it, as Google's T5 folders come (tokenizer_config.json and
    special_tokens_map.json of transformers 4), and one whose config asks for the clean-up."""
    src = t5_tokenizer(tmp_path / "src", "hub", configs=written_by != "transformers")
    folder = tmp_path / "src"
    if written_by == "transformers":
        folder = tmp_path / "saved"
        _fast(src).save_pretrained(folder)
    if written_by == "clean-up":
        cfg = json.loads((folder / "tokenizer_config.json").read_text())
        cfg["clean_up_tokenization_spaces"] = True
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    theirs = transformers.T5TokenizerFast.from_pretrained(folder)
    ours = Tokenizer.from_file(folder / "tokenizer.json")
    assert ours.clean_up_tokenization_spaces == bool(theirs.clean_up_tokenization_spaces)
    # transformers 5 rebuilds T5's pipeline from its class here, keeping only a Precompiled
    # normalizer: the NFKC stand-in is dropped, so texts that NFKC changes are left out
    for text in [t for t in TEXTS if unicodedata.normalize("NFKC", t) == t]:
        ids = theirs(text).input_ids
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), text


# ------------------------------------------------------------------ generate and eval on a T5 folder

PROMPTS = ["translate English to German: the cat sat on the mat.", "summarize: déjà vu, café",
           "question: what is it?", "hello <extra_id_0> world", "a b"]


@pytest.fixture(scope="module", params=["relu", "gated-gelu"])
def t5_folder(request, tmp_path_factory):
    """A tiny random float64 T5 whose vocabulary has more rows than the T5-layout tokenizer."""
    folder = tmp_path_factory.mktemp(f"t5-{request.param}")
    t5_tokenizer(folder, "hub", configs=True)
    n = Tokenizer.from_file(folder / "tokenizer.json").vocab_size
    sharp_model(request.param, 3, vocab_size=model_rows(n)).save_pretrained(folder)
    return folder


def _transformers_outputs(folder, prompts, max_new_tokens):
    patch_t5_layernorm()
    tok = transformers.T5TokenizerFast.from_pretrained(folder)
    tm = transformers.T5ForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float64, attn_implementation="eager").eval()
    enc = tok(prompts, padding=True, return_tensors="np")
    out = hf_generate(tm, enc["input_ids"], enc["attention_mask"], max_new_tokens=max_new_tokens,
                      num_beams=1, do_sample=False)
    return tok.batch_decode(out.sequences, skip_special_tokens=True)


def test_generate_equals_transformers(t5_folder, capsys):
    from minillm.cli import main

    assert main(["generate", str(t5_folder), *PROMPTS, "--dtype", "float64", "--max-new-tokens", "8",
                 "--batch-size", "2"]) == 0
    got = capsys.readouterr().out.split("\n")[:len(PROMPTS)]
    assert got == _transformers_outputs(t5_folder, PROMPTS, 8)


def test_eval_predictions_equal_transformers(t5_folder, tmp_path):
    from minillm.workflows import EvalSettings, evaluate

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": "the cat"}) + "\n" for p in PROMPTS),
                    encoding="utf-8")
    result = evaluate(EvalSettings(dir=str(t5_folder), data=str(data), predictions=str(tmp_path / "p.jsonl"),
                                   dtype="float64", max_new_tokens=8, no_progress=True))
    outputs = [json.loads(line)["output"] for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert outputs == _transformers_outputs(t5_folder, PROMPTS, 8)
    assert result["n"] == len(PROMPTS)
