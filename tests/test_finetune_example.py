"""examples/finetune_flan_t5.py end to end at a tiny size: fine-tune, evaluate, generate.

The folder is a FLAN-T5-layout T5 (gated-gelu, untied, more rows than tokens) with a
T5-layout tokenizer, written by minillm; the example's --make-random-folder (transformers)
and the real flan-t5-small shape are run in tests/reference/test_hf.py.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np

import minillm
from minillm.data.tokenizer import Tokenizer
from tests.conftest import model_rows, t5_tokenizer

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "finetune_flan_t5.py"


def load_example():
    spec = importlib.util.spec_from_file_location("finetune_flan_t5", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finetune_flan_t5_example_runs_end_to_end(tmp_path, capsys):
    from minillm.storage.safetensors_file import stored_dtypes

    folder = tmp_path / "flan-tiny"
    t5_tokenizer(folder, "hub", configs=True)
    n = Tokenizer.from_file(folder / "tokenizer.json").vocab_size
    config = minillm.T5Config(vocab_size=model_rows(n), d_model=16, d_kv=4, num_heads=2, d_ff=32,
                              num_layers=1, num_decoder_layers=1, feed_forward_proj="gated-gelu",
                              tie_word_embeddings=False, relative_attention_num_buckets=8)
    minillm.T5.init(config, np.random.default_rng(0)).save_pretrained(folder)
    out = tmp_path / "runs" / "ft"
    code = load_example().main(["--model", str(folder), "--out", str(out), "--steps", "2",
                                "--batch-size", "4", "--max-new-tokens", "4", "--save-dtype", "bfloat16",
                                "--no-progress", "--prompt", "the cat sat", "--prompt", "hello world"])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    assert any(line.startswith("fine-tuned 2 steps") for line in printed), printed
    assert any(line.startswith("held-out: exact_match ") for line in printed), printed
    assert [line.split(" -> ")[0] for line in printed[-2:]] == ["'the cat sat'", "'hello world'"]
    assert set(stored_dtypes(out / "best" / "model.safetensors").values()) == {"BF16"}
    assert minillm.from_pretrained(out).config.vocab_size == model_rows(n)
    assert (tmp_path / "runs" / "ft-demo-train.jsonl").exists()  # no --data: the built-in demo file
