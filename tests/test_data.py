"""Examples, JSONL I/O, encoding with counted truncation, bucketed resumable batching."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minillm.data import (
    IGNORE_INDEX,
    EncodedDataset,
    Example,
    batch_order,
    batches,
    collate,
    encode_examples,
    epoch_batches,
    epoch_order,
    format_prompt,
    load_jsonl,
    num_batches,
    write_jsonl,
)


class CharTokenizer:
    """A stand-in tokenizer: one id per character (3 + code point % 97), then </s>."""

    pad_token_id, eos_token_id = 0, 1

    def encode_batch(self, texts):
        return [[3 + ord(c) % 97 for c in t] + [1] for t in texts]


def _write(tmp_path, lines, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_both_formats(tmp_path):
    path = _write(
        tmp_path,
        [
            json.dumps({"instruction": "Reverse.", "input": "a b", "output": "b a", "task": "rev"}),
            "",
            json.dumps({"instruction": "Say hi.", "input": "", "output": "hi"}),
            "   ",
            json.dumps({"prompt": "2 + 2 =", "completion": "4"}),
        ],
    )
    assert load_jsonl(path) == [
        Example("Reverse.\na b", "b a", task="rev"),
        Example("Say hi.", "hi"),
        Example("2 + 2 =", "4"),
    ]
    assert format_prompt("I", "x") == "I\nx" and format_prompt("I", None) == "I"


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"instruction": "a", "output": ', "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"instruction": "a"}', "missing 'output'"),
        ('{"prompt": "a"}', "missing 'completion'"),
        ('{"instruction": "a", "output": 3}', "'output' must be a string"),
        ('{"instruction": "a", "input": 1, "output": "b"}', "'input' must be a string"),
        ('{"prompt": "a", "completion": "b", "task": 7}', "'task' must be a string"),
        ('{"instruction": "a", "output": "b", "prompt": "c"}', "mixes"),
        ('{"text": "a"}', "needs either"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, line, message):
    path = _write(tmp_path, ['{"prompt": "ok", "completion": "ok"}', "", line])
    with pytest.raises(ValueError, match=message) as info:
        load_jsonl(path)
    assert f"{path}, line 3" in str(info.value)


def test_empty_file_is_an_error(tmp_path):
    path = _write(tmp_path, ["", "  "])
    with pytest.raises(ValueError, match="no examples") as info:
        load_jsonl(path)
    assert str(path) in str(info.value)


def test_write_then_load_round_trip(tmp_path):
    examples = [Example("Do it.\nx y", "y x", task="t"), Example("Ünïcode é", "ok", task=None)]
    path = tmp_path / "out.jsonl"
    write_jsonl(examples, path)
    assert load_jsonl(path) == examples
    record = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert record == {"instruction": "Do it.\nx y", "input": "", "output": "y x", "task": "t"}
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left


def test_encode_counts_truncation():
    examples = [Example("abc", "de"), Example("a" * 10, "b" * 10), Example("a" * 4, "b")]
    with pytest.warns(UserWarning, match="truncated 1 sources"):
        enc, stats = encode_examples(examples, CharTokenizer(), 6, 8)
    assert (stats.truncated_sources, stats.truncated_targets) == (1, 1)
    assert (stats.max_source_tokens, stats.max_target_tokens) == (11, 11)
    assert [len(s) for s in enc.sources] == [4, 6, 5]
    assert [len(t) for t in enc.targets] == [3, 8, 2]
    assert all(s[-1] == 1 for s in enc.sources) and all(t[-1] == 1 for t in enc.targets)


def test_encode_without_truncation_is_quiet(recwarn):
    enc, stats = encode_examples([Example("ab", "c")], CharTokenizer(), 8, 8)
    assert stats.truncated_sources == stats.truncated_targets == 0
    assert not recwarn.list
    assert enc.sources[0].dtype == np.int64


def _dataset(n=203, seed=0):
    rng = np.random.default_rng(seed)
    sources = [rng.integers(3, 50, size=rng.integers(1, 30)).tolist() + [1] for _ in range(n)]
    targets = [rng.integers(3, 50, size=rng.integers(1, 10)).tolist() + [1] for _ in range(n)]
    return EncodedDataset(
        [np.array(s, dtype=np.int64) for s in sources],
        [np.array(t, dtype=np.int64) for t in targets],
        pad_id=0,
    )


def test_collate_pads_and_masks():
    enc = _dataset(5)
    b = collate(enc, np.array([3, 1]))
    B, S = b["input_ids"].shape
    T = b["labels"].shape[1]
    assert (B, S, T) == (2, max(len(enc.sources[i]) for i in (3, 1)), b["labels"].shape[1])
    assert set(b) == {"input_ids", "attention_mask", "labels", "index"}
    for key in b:
        assert b[key].dtype == np.int64
    for row, i in enumerate([3, 1]):
        s, t = enc.sources[i], enc.targets[i]
        assert np.array_equal(b["input_ids"][row, : len(s)], s)
        assert np.all(b["input_ids"][row, len(s) :] == 0)
        assert b["attention_mask"][row].sum() == len(s)
        assert np.array_equal(b["labels"][row, : len(t)], t)
        assert np.all(b["labels"][row, len(t) :] == IGNORE_INDEX)
    assert np.array_equal(b["index"], [3, 1])


def test_every_example_once_per_epoch_and_deterministic():
    enc = _dataset()
    run = lambda seed: list(batches(enc, 16, np.random.default_rng(seed)))
    a, b, c = run(0), run(0), run(1)
    assert len(a) == num_batches(len(enc), 16) == 13
    assert sorted(np.concatenate([x["index"] for x in a]).tolist()) == list(range(len(enc)))
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)
    assert any(not np.array_equal(x["index"], y["index"]) for x, y in zip(a, c, strict=True))


def test_no_shuffle_keeps_order_and_drop_last():
    order = batch_order(np.ones(10), 4, np.random.default_rng(0), shuffle=False, bucket=False)
    assert [o.tolist() for o in order] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    order = batch_order(np.ones(10), 4, np.random.default_rng(0), shuffle=False, bucket=False, drop_last=True)
    assert len(order) == 2 == num_batches(10, 4, drop_last=True)


def test_bucketing_reduces_padding():
    enc = _dataset(800)
    lengths = enc.lengths[:, 0]

    def padding(bucket):
        order = batch_order(enc.lengths, 16, np.random.default_rng(0), bucket=bucket)
        return sum(len(idx) * lengths[idx].max() - lengths[idx].sum() for idx in order)

    assert padding(True) < 0.3 * padding(False)


def test_resume_mid_epoch_is_bit_identical():
    """A run stopped after 5 batches and resumed with start=5 sees what the unstopped run saw
    next; the 5 it saw and the resumed ones hold every example of the epoch once."""
    enc = _dataset()
    run = epoch_batches(enc, 16, seed=7, epoch=2)
    seen = [next(run) for _ in range(5)]
    rest = list(run)  # the unstopped run's next batches
    resumed = list(epoch_batches(enc, 16, seed=7, epoch=2, start=5))
    assert len(resumed) == len(rest) == num_batches(len(enc), 16) - 5
    for x, y in zip(rest, resumed, strict=True):
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    index = np.concatenate([b["index"] for b in seen + resumed])
    assert sorted(index.tolist()) == list(range(len(enc)))  # no example repeated, none skipped
    e2, e3 = epoch_order(enc.lengths, 16, 7, 2), epoch_order(enc.lengths, 16, 7, 3)
    assert any(not np.array_equal(a, b) for a, b in zip(e2, e3, strict=True))


def test_split_held_out_holds_out_five_percent_on_the_held_out_stream():
    from minillm import seeds
    from minillm.data import split_held_out

    examples = [Example(f"p{i}", f"t{i}") for i in range(200)]
    train, held = split_held_out(examples, seed=4)
    assert len(held) == 10 and len(train) == 190
    chosen = sorted(seeds.generator(4, "held_out").permutation(200)[:10])  # the documented draw
    assert held == [examples[i] for i in chosen]
    assert train == [ex for i, ex in enumerate(examples) if i not in set(chosen)]
    assert split_held_out(examples, seed=5)[1] != held
    assert split_held_out(examples[:1], seed=0) == (examples[:1], [])
