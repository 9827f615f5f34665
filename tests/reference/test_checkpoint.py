"""A training run folder loads in transformers: the model (same logits) and the tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

import minillm
from minillm.optim import AdamW
from minillm.runfolder import checkpoint as ckpt

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_transformers_loads_run_folder(tmp_path):
    from minillm.data.tokenizer import Tokenizer

    texts = ["write the number in words", "one two three", "Reverse: red owl pen", "pen owl red"]
    tokenizer = Tokenizer.train(texts * 10, vocab_size=200)
    config = minillm.T5Config(vocab_size=tokenizer.vocab_size, d_model=16, d_kv=4, num_heads=2,
                              d_ff=32, num_layers=1, dropout_rate=0.0, relative_attention_num_buckets=8)
    model = minillm.T5.init(config, np.random.default_rng(0))
    opt = AdamW(lr=1e-2)
    rng = np.random.default_rng(1)
    opt.step(model.params, {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.params.items()})
    ckpt.save_checkpoint(tmp_path, model, tokenizer, opt, {"step": 1})
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids = np.array([tokenizer.encode("one two three")])
    labels = np.array([tokenizer.encode("pen owl red")])
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), labels=torch.tensor(labels)).logits.numpy()
    ours = model.logits(ids, model.shift_right(labels))
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-4)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf_tok("one two three")["input_ids"] == tokenizer.encode("one two three")
    assert hf_tok.pad_token_id == 0 and hf_tok.eos_token_id == 1
