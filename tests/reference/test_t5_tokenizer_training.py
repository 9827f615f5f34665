"""A tokenizer minillm trains in T5's layout (minillm.data.t5_tokenizer) is one transformers'
T5TokenizerFast reads: the same ids and texts, the sentinels where T5 has them."""

from __future__ import annotations

import pytest

from minillm.data.t5_tokenizer import train_t5_tokenizer
from minillm.data.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

CORPUS = ["Return true if the pathname refers to an existing directory.",
          "Split a pathname into head and tail.\n  Indented line 42; déjà vu!",
          "class Foo:\n    def f(self, x):\n        return x ** 2  # square it",
          "Thank you for inviting me to your party last week."] * 20
TEXTS = ["Thank you <extra_id_0> me to your party <extra_id_1> week.", "déjà 1234\n\n  x", "",
         "Return <extra_id_0> if the <extra_id_99> refers", "Zebra quux ~ {}", "a  b\tc"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("t5tok")
    train_t5_tokenizer(CORPUS, vocab_size=400).save(out / "tokenizer.json")
    return out


def test_t5_tokenizer_fast_reads_it(folder):
    ours = Tokenizer.from_file(folder / "tokenizer.json")
    theirs = transformers.T5TokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    assert len(theirs) == ours.vocab_size
    assert (theirs.pad_token_id, theirs.eos_token_id, theirs.unk_token_id) == (0, 1, 2)
    top = len(theirs) - 1
    sentinels = [f"<extra_id_{j}>" for j in range(100)]
    assert theirs.convert_tokens_to_ids(sentinels) == list(range(top, top - 100, -1))
    for text in TEXTS:
        ids = theirs(text).input_ids
        assert ours.encode(text) == ids, text
        for skip in (True, False):
            assert ours.decode(ids, skip) == theirs.decode(ids, skip_special_tokens=skip), text
    assert ours.encode_batch(TEXTS) == theirs(TEXTS).input_ids
