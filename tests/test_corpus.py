"""The pretraining text (minillm.data.corpus), the docstring-names task and the T5-layout tokenizer."""

from __future__ import annotations

import hashlib
import json

import pytest

from minillm.data.corpus import (
    Document,
    builtin_documents,
    corpus_digest,
    is_held_out,
    read_text_files,
    split_documents,
    tidy,
)
from minillm.data.docstring_names import INSTRUCTION, name_examples, summary
from minillm.data.t5_tokenizer import sentinel_ids, train_t5_tokenizer
from minillm.data.tokenizer import Tokenizer

FAKE_STDLIB = {
    "posixpath.py": '"""Common operations on Posix pathnames."""\n\n'
                    'def isdir(s):\n    """Return true if the pathname refers to an existing directory."""\n',
    "_pyio.py": 'def isdir(s):\n    """Return true if the pathname refers to an existing directory."""\n',
    "json/__init__.py": '"""JSON encoder and decoder."""\nclass JSONDecoder:\n'
                        '    """Simple JSON decoder."""\n    def decode(self, s):\n'
                        '        """Return the Python representation of ``s``."""\n',
    "test/test_os.py": '"""Tests are left out."""\n',
    "site-packages/numpy.py": '"""Installed packages are left out."""\n',
    "lib2to3_data/bad.py": 'def broken(:\n',
}


@pytest.fixture(scope="module")
def stdlib():
    return builtin_documents()


def test_builtin_corpus_reads_docstrings_without_importing(tmp_path):
    for rel, source in FAKE_STDLIB.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    docs = builtin_documents(str(tmp_path))
    mine = [d for d in docs if not d.name.startswith("topics.")]
    assert [(d.name, d.defines) for d in mine] == [  # a folder's files, then its subfolders
        ("_pyio.isdir", "isdir"), ("posixpath", None),  # posixpath.isdir repeats _pyio's: kept once
        ("json", None), ("json.JSONDecoder", "JSONDecoder"), ("json.JSONDecoder.decode", "decode")]
    assert mine[0].text == "_pyio.isdir\nReturn true if the pathname refers to an existing directory."
    assert mine[0].key == "Return true if the pathname refers to an existing directory."
    topics = [d for d in docs if d.name.startswith("topics.")]
    assert len(topics) > 50 and all(d.defines is None and d.text for d in topics)


def test_tidy_drops_layout_not_words():
    text = "Summary line.\n\n    Example::\n\n        >>> f(1,  2)\n\n\n\n\tthe  end  "
    assert tidy(text) == "Summary line.\n\nExample::\n\n>>> f(1, 2)\n\nthe end"
    assert tidy(text).split() == text.split()


def test_the_real_standard_library_gives_a_corpus(stdlib):
    names = {d.name for d in stdlib}
    assert "os.makedirs" in names and "json.decoder.JSONDecoder.decode" in names
    assert not any(".test." in n or n.startswith("test.") for n in names)
    assert sum(len(d.text) for d in stdlib) > 1_000_000  # about 2.4 MB on CPython 3.11
    train, held = split_documents(stdlib)
    assert len(held) / len(stdlib) == pytest.approx(0.1, abs=0.02)
    assert len(train) + len(held) == len(stdlib)


def test_held_out_rule_is_the_sha256_of_the_key():
    docs = [Document(f"d{i}", f"text {i}", key=f"text {i}") for i in range(200)]
    train, held = split_documents(docs)
    expected = [d for d in docs if int(hashlib.sha256(d.key.encode()).hexdigest(), 16) % 10 == 0]
    assert held == expected and len(held) > 5
    assert all(not is_held_out(d) for d in train)


def test_corpus_digest_changes_with_any_text():
    a = [Document("a", "x", "x"), Document("b", "y", "y")]
    b = [Document("a", "x", "x"), Document("b", "y.", "y.")]
    c = [Document("ab", "", ""), Document("", "xy", "xy")]  # the same bytes, other boundaries
    assert len({corpus_digest(a), corpus_digest(b), corpus_digest(c)}) == 3


def test_text_files_give_paragraphs_and_jsonl_lines(tmp_path):
    (tmp_path / "a.txt").write_text("first line\nsecond line\n\n\nnext paragraph\n")
    lines = [json.dumps({"text": "one"}), "", json.dumps({"text": "two"})]
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n")
    docs = read_text_files([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")])
    assert [d.text for d in docs] == ["first line\nsecond line", "next paragraph", "one", "two"]
    assert docs[3].name == f"{tmp_path / 'b.jsonl'}, line 3"


@pytest.mark.parametrize("content, match", [
    (b"", "no text"), (b"\xff\xfe", "line 1: not UTF-8"), (b'{"text": 3}\n', "line 1: expected an object"),
    (b"{bad\n", "line 1: malformed JSON")])
def test_bad_text_files_are_one_line_errors(tmp_path, content, match):
    path = tmp_path / ("x.jsonl" if content.startswith(b"{") else "x.txt")
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as e:
        read_text_files([str(path)])
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_text_files([str(tmp_path / "missing.txt")])


# ------------------------------------------------------------------ the docstring-names task


def test_docstring_names_task(stdlib):
    train, held = name_examples(stdlib)
    assert len(train) > 3000 and len(held) > 300
    training_text = "\n".join(d.text for d in stdlib if not is_held_out(d))
    for ex in held:
        instruction, line = ex.prompt.split("\n")
        assert instruction == INSTRUCTION and line not in training_text  # not in the pretraining text
        assert ex.target.strip("_").lower() not in line.lower() and len(line.split()) >= 3
    assert not {e.prompt for e in train} & {e.prompt for e in held}
    by_name = {d.name: d for d in stdlib}
    some = train[0]
    assert summary(by_name[some.origin].key) == some.prompt.split("\n")[1]
    assert by_name[some.origin].defines == some.target


# ------------------------------------------------------------------ the T5-layout tokenizer

TEXTS = ["Return true if the pathname refers to an existing directory.",
         "Split a pathname into head and tail.\n  Indented line 42; déjà vu!",
         "def f(x):\n    return x ** 2  # a comment"] * 10


def test_t5_layout(tmp_path):
    tok = train_t5_tokenizer(TEXTS, vocab_size=300, num_sentinels=100)
    assert [tok.token_to_id(t) for t in ("<pad>", "</s>", "<unk>")] == [0, 1, 2]
    top = tok.vocab_size - 1
    assert [tok.token_to_id(f"<extra_id_{j}>") for j in range(100)] == list(range(top, top - 100, -1))
    assert sentinel_ids(tok, 100) == top
    tok.save(tmp_path / "tokenizer.json")
    back = Tokenizer.from_file(tmp_path / "tokenizer.json")
    back.save(tmp_path / "again.json")  # the same file however often it is saved
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "tokenizer.json").read_bytes()
    for text in [*TEXTS[:3], "a <extra_id_0> span <extra_id_7> end.", "unseen Zebra 7"]:
        ids = tok.encode(text)
        assert back.encode(text) == ids and ids[-1] == 1
        assert back.decode(ids, skip_special_tokens=False) == text + "</s>"  # the text, exactly
    assert tok.encode("x <extra_id_3> y", add_eos=False).count(top - 3) == 1


def test_sentinel_check_names_the_missing_one():
    tok = train_t5_tokenizer(TEXTS, vocab_size=300, num_sentinels=10)
    assert sentinel_ids(tok, 10) == tok.vocab_size - 1
    with pytest.raises(ValueError, match="needs 11 sentinels.*<extra_id_10> is missing"):
        sentinel_ids(tok, 11)
    with pytest.raises(ValueError, match="sentinels"):
        train_t5_tokenizer(TEXTS, vocab_size=300, num_sentinels=0)

