"""Hugging Face folders both ways with transformers: minillm writes, transformers loads, and back."""

from __future__ import annotations

import numpy as np
import pytest

import minillm
from minillm.testing import rel_error
from tests.conftest import random_batch, tiny_config
from tests.reference.conftest import patch_t5_layernorm, torch_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VARIANTS = ["relu", "gated-gelu"]


def _torch_logits(tm, input_ids, mask, dec):
    with torch.no_grad():
        return tm(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(mask),
                  decoder_input_ids=torch.tensor(dec)).logits.numpy()


@pytest.mark.parametrize("variant", VARIANTS)
def test_minillm_to_transformers(variant, tmp_path, caplog):
    model = minillm.T5.init(tiny_config(variant), np.random.default_rng(0), dtype="float64")
    with caplog.at_level("WARNING"):
        tm = torch_model(model, tmp_path)
    messages = " ".join(r.getMessage() for r in caplog.records).lower()
    assert "newly initialized" not in messages and "missing" not in messages
    tied = tm.lm_head.weight.data_ptr() == tm.shared.weight.data_ptr()
    assert tied == (variant == "relu")
    input_ids, mask, labels = random_batch(np.random.default_rng(1), 64)
    dec = model.shift_right(labels)
    assert rel_error(model.logits(input_ids, dec, mask), _torch_logits(tm, input_ids, mask, dec)) < 1e-9


@pytest.mark.parametrize("variant", VARIANTS)
def test_transformers_to_minillm(variant, tmp_path):
    """A folder that transformers itself initialises and saves loads into minillm."""
    from transformers import T5Config, T5ForConditionalGeneration

    patch_t5_layernorm()
    cfg = tiny_config(variant).to_dict()
    torch.manual_seed(0)
    tm = T5ForConditionalGeneration(T5Config(**{k: v for k, v in cfg.items()
                                                if k not in ("architectures", "dtype")}))
    if variant != "relu":  # FLAN-T5 style: a separate LM head
        tm.lm_head.weight = torch.nn.Parameter(torch.randn_like(tm.shared.weight))
    tm = tm.double().eval()
    tm.save_pretrained(tmp_path)
    model = minillm.from_pretrained(tmp_path, dtype="float64")
    assert model.tied == (variant == "relu")
    input_ids, mask, labels = random_batch(np.random.default_rng(2), 64)
    dec = model.shift_right(labels)
    assert rel_error(model.logits(input_ids, dec, mask), _torch_logits(tm, input_ids, mask, dec)) < 1e-9
    # float32 load of the same folder
    model32 = minillm.from_pretrained(tmp_path)
    assert model32.dtype == np.float32
    np.testing.assert_allclose(model32.logits(input_ids, dec, mask),
                               _torch_logits(tm.float(), input_ids, mask, dec), rtol=1e-4, atol=1e-4)
