"""minillm eval: the metrics of a model folder, wired to the model's own loss."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import minillm
from minillm.cli import main
from minillm.data import collate, encode_examples, write_jsonl
from tests.conftest import cuda_available


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from minillm.data.tasks import train_tokenizer

    path = tmp_path_factory.mktemp("evalmodel")
    tok = train_tokenizer(vocab_size=300, n=2000)
    config = minillm.T5Config(vocab_size=tok.vocab_size, d_model=16, d_kv=4, num_heads=2, d_ff=32,
                              num_layers=1, dropout_rate=0.0)
    minillm.T5.init(config, np.random.default_rng(0)).save_pretrained(path)
    tok.save(path / "tokenizer.json")
    return path


@pytest.mark.skipif(cuda_available(), reason="CuPy and a GPU are available here")
@pytest.mark.parametrize("command", ["eval", "generate"])
def test_device_cuda_without_cupy_is_one_line(folder, tmp_path, capsys, command):
    preds = tmp_path / "preds.jsonl"
    args = {"eval": [str(folder), "--predictions", str(preds)], "generate": [str(folder), "a prompt"]}
    assert main([command, *args[command], "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"minillm {command}: error: "), err
    assert "CuPy" in err[0] and "gpu extra" in err[0], err[0]
    assert not preds.exists()


def test_eval_builtin_suite_prints_every_metric(folder, capsys, tmp_path):
    preds = tmp_path / "preds.jsonl"
    assert main(["eval", str(folder), "--n", "12", "--max-new-tokens", "6", "--no-progress",
                 "--predictions", str(preds)]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("loss", "perplexity", "bleu", "rouge1", "rouge2", "rougeL", "exact_match", "per_task",
                "decoding"):
        assert key in result, key
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]), rel=1e-12)
    assert 0 <= result["bleu"] <= 100 and 0 <= result["rougeL"] <= 1
    assert result["decoding"]["num_beams"] == 1 and result["n"] == 12
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(rows) == 12
    assert result["exact_match"] == sum(r["output"].strip() == r["target"].strip() for r in rows) / 12
    assert sum(row["n"] for row in result["per_task"].values()) == 12


def test_perplexity_is_exp_of_the_models_mean_token_loss(folder, tmp_path, capsys):
    """On data that fits one batch, eval's loss is exactly model.loss of that batch."""
    from minillm.data.tasks import builtin_dataset
    from minillm.data.tokenizer import Tokenizer

    examples = builtin_dataset(10, seed=3, split="eval")
    data = tmp_path / "d.jsonl"
    write_jsonl(examples, data)
    assert main(["eval", str(folder), "--data", str(data), "--max-new-tokens", "40",
                 "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    model = minillm.from_pretrained(folder)
    tok = Tokenizer.from_file(folder / "tokenizer.json")
    enc, _ = encode_examples(examples, tok, 256, 40)
    b = collate(enc, np.arange(len(examples)))
    loss = model.loss(b["input_ids"], b["labels"], b["attention_mask"])
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)


def test_eval_errors(folder, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x"}\n')
    assert main(["eval", str(folder), "--data", str(bad)]) == 2
    assert "bad.jsonl" in capsys.readouterr().err
