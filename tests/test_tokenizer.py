"""The T5-style tokenizer: exact round trips, special ids, save/load, HF T5 files."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors

from minillm.data.tasks import TASKS, builtin_dataset, train_tokenizer
from minillm.data.tokenizer import Tokenizer, check_vocab


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(vocab_size=800, n=3000, seed=0)


def test_special_ids(tok):
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert [tok.id_to_token(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert 100 < tok.vocab_size <= 800


def test_encode_appends_one_eos(tok):
    ids = tok.encode("Reverse the words.\nred cat")
    assert ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1
    assert tok.encode("red cat", add_eos=False) == ids[-3:-1]  # whole-word pieces
    assert tok.encode_batch(["red cat", "12"]) == [tok.encode("red cat"), tok.encode("12")]


def test_digits_are_single_tokens(tok):
    pieces = [tok.id_to_token(i) for i in tok.encode("735 and 40", add_eos=False)]
    assert all(len(p.strip("▁")) == 1 for p in pieces if any(c.isdigit() for c in p))
    assert [p for p in pieces if p.strip("▁").isdigit()] == ["7", "3", "5", "4", "0"]


def test_round_trip_on_every_task(tok):
    texts = []
    for split in ("train", "eval"):
        for ex in builtin_dataset(450, seed=5, split=split):
            texts += [ex.prompt, ex.target]
    texts += [t for task in TASKS.values() for t in task.heldout_instructions]
    texts += ["quatre-vingt-dix-neuf", "(x + 3) * y // 2", "a\n\nb  c", "ÉTÉ, déjà: 42?"]
    for text in texts:
        ids = tok.encode(text)
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text


def test_builtin_tasks_are_short_in_tokens(tok):
    # Learnability guard: short inputs and outputs for a small model (minillm.data.tasks).
    examples = builtin_dataset(900, seed=2)
    assert max(len(tok.encode(ex.prompt)) for ex in examples) <= 40
    assert max(len(tok.encode(ex.target)) for ex in examples) <= 20


def test_decode_skips_specials_and_label_padding(tok):
    ids = tok.encode("red cat")
    assert tok.decode([0] + ids + [0, 0, -100]) == "red cat"
    assert "</s>" in tok.decode(ids, skip_special_tokens=False)


def test_save_and_load(tok, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # temp file renamed
    again = Tokenizer.from_file(path)
    text = "Write this number in French words.\n281"
    assert again.encode(text) == tok.encode(text)
    assert again.decode(again.encode(text)) == text
    assert again.vocab_size == tok.vocab_size


def _hf_t5_style(tmp_path, with_post_processor=True):
    """A miniature of Hugging Face T5's tokenizer.json: Unigram + Metaspace + $A </s>."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0), ("▁hello", -3.0),
             ("▁world", -3.0), ("▁", -2.0)] + [(c, -5.0) for c in "helowrd"]  # fmt: skip
    vocab = list(dict(vocab).items())
    hf = HFTokenizer(models.Unigram(vocab, unk_id=2))
    hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    hf.decoder = decoders.Metaspace()
    hf.add_special_tokens(["<pad>", "</s>", "<unk>"])
    if with_post_processor:
        hf.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
        )
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    return path


@pytest.mark.parametrize("with_post_processor", [True, False])
def test_hf_t5_tokenizer_json_loads(tmp_path, with_post_processor):
    tok = Tokenizer.from_file(_hf_t5_style(tmp_path, with_post_processor))
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok.encode("hello world")
    assert ids == [4, 5, 1]  # one </s>, not two, whoever appends it
    assert tok.encode("hello world", add_eos=False) == [4, 5]
    assert tok.decode(ids) == "hello world"
    assert tok.unk_token_id in tok.encode("hello xyz")  # letters outside the vocab


def test_missing_special_token_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="eos token"):
        Tokenizer.from_file(_hf_t5_style(tmp_path), eos_token="<eos>")


def test_check_vocab(tok):
    check_vocab(tok, tok.vocab_size)
    check_vocab(tok, 32128)
    with pytest.raises(ValueError, match=rf"vocab_size {tok.vocab_size - 1} does not cover"):
        check_vocab(tok, tok.vocab_size - 1)


# ------------------------------------------------------------------ T5's own layout


@pytest.fixture(params=["hub", "converter"])
def t5_tok(request, tmp_path):
    from tests.conftest import t5_tokenizer

    return t5_tokenizer(tmp_path / request.param, request.param)


def _backend(path):
    return HFTokenizer.from_file(str(path))  # the file as written, for the ids of its pieces


def test_t5_layout_ids_and_sizes(t5_tok):
    from tests.conftest import model_rows

    tok, raw = Tokenizer.from_file(t5_tok), _backend(t5_tok)
    n = raw.get_vocab_size(with_added_tokens=True)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.vocab_size == n
    assert tok.token_to_id("<extra_id_0>") == n - 1 and tok.token_to_id("<extra_id_99>") == n - 100
    check_vocab(tok, model_rows(n))  # more model rows than tokens, as 32128 for 32100
    with pytest.raises(ValueError, match="does not cover"):
        check_vocab(tok, n - 1)


def test_t5_layout_encodes_pieces_and_sentinels(t5_tok):
    tok, ids = Tokenizer.from_file(t5_tok), _backend(t5_tok).token_to_id
    assert tok.encode("hello world") == [ids("▁hello"), ids("▁world"), 1]
    assert tok.encode("hello   world  ") == tok.encode("hello world")  # repeated spaces: one
    assert tok.encode("déjà vu", add_eos=False) == [ids("▁déjà"), ids("▁vu")]
    s0, s1 = ids("<extra_id_0>"), ids("<extra_id_1>")
    assert tok.encode("the <extra_id_0> sat on <extra_id_1>") == [ids("▁the"), s0, ids("▁sat"),
                                                                  ids("▁on"), s1, 1]
    assert tok.encode("hello </s>") == [ids("▁hello"), 1, 1]  # a typed </s> is kept, one appended
    assert tok.decode(tok.encode("the <extra_id_0> sat")) == "the sat"
    assert tok.decode(tok.encode("the <extra_id_0> sat"), skip_special_tokens=False) == \
        "the<extra_id_0> sat</s>"


def test_ids_beyond_the_tokenizer_decode_to_nothing(t5_tok):
    tok, ids = Tokenizer.from_file(t5_tok), _backend(t5_tok).token_to_id
    beyond = tok.vocab_size + 5  # a model row with no token (T5: 32100..32127)
    assert tok.decode([ids("▁cat"), beyond, ids("▁sat"), 1, 0, 0]) == "cat sat"


def test_specials_missing_from_added_tokens_are_registered(t5_tok, tmp_path):
    """A tokenizer.json whose <pad>, </s>, sentinels are plain vocabulary entries: still special,
    ids unchanged; and one without a post-processor still ends with </s>."""
    doc = json.loads(t5_tok.read_text())
    doc["added_tokens"], doc["post_processor"] = [], None
    path = tmp_path / "bare" / "tokenizer.json"
    path.parent.mkdir()
    path.write_text(json.dumps(doc))
    tok, ids = Tokenizer.from_file(path), _backend(t5_tok).token_to_id
    assert tok.encode("hello </s> <extra_id_0>") == [ids("▁hello"), 1, ids("<extra_id_0>"), 1]
    assert tok.decode([0, ids("▁hello"), ids("<extra_id_3>"), 1, 2, 0]) == "hello"
    assert tok.vocab_size == _backend(t5_tok).get_vocab_size(with_added_tokens=True)


def test_tokenizer_config_beside_is_read(t5_tok):
    folder = t5_tok.parent
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"clean_up_tokenization_spaces": True, "pad_token": {"content": "<pad>", "__type": "AddedToken"},
         "additional_special_tokens": ["<extra_id_0>"]}))
    tok = Tokenizer.from_file(t5_tok)
    assert tok.clean_up_tokenization_spaces
    assert tok.decode(tok.encode("a , b ? it 's")) == "a, b? it's"  # transformers' clean-up
    assert Tokenizer.from_file(t5_tok, clean_up_tokenization_spaces=False).decode(
        tok.encode("a , b ?")) == "a , b ?"


@pytest.mark.parametrize("name, doc, message", [
    ("tokenizer_config.json", {"clean_up_tokenization_spaces": "yes"}, "'clean_up_tokenization_spaces' must"),
    ("tokenizer_config.json", {"eos_token": 5}, "field 'eos_token': expected a token"),
    ("special_tokens_map.json", {"additional_special_tokens": "<x>"}, "must be a list of tokens"),
    ("special_tokens_map.json", {"additional_special_tokens": [3]}, r"additional_special_tokens'\[0\]"),
    ("tokenizer_config.json", [1], "expected a JSON object"),
    ("tokenizer_config.json", {"eos_token": "<eos>"}, "tokenizer has no eos token '<eos>'"),
])
def test_bad_tokenizer_config_is_named(t5_tok, name, doc, message):
    (t5_tok.parent / name).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=message) as e:
        Tokenizer.from_file(t5_tok)
    if "tokenizer has no" not in message:
        assert name in str(e.value)


def test_run_folder_tokenizer_config_says_how_to_decode(tok, tmp_path):
    from minillm.runfolder.checkpoint import tokenizer_config

    cfg = tokenizer_config(tok)
    assert cfg["clean_up_tokenization_spaces"] is False
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok.save(tmp_path / "tokenizer.json")
    again = Tokenizer.from_file(tmp_path / "tokenizer.json")
    assert again.decode(again.encode("Reverse: a , b")) == "Reverse: a , b"
