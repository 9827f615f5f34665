"""The whole model against transformers (logits, loss, every gradient) and AdamW against torch.

Both tiers: the reference (``T5``'s methods) and the lean engine the trainers run
(``minillm.engine``), each against transformers directly."""

from __future__ import annotations

import numpy as np
import pytest

import minillm
from minillm import engine
from minillm.model import param_shapes
from minillm.optim import AdamW, clip_grad_norm, lr_schedule
from minillm.testing import padding_mask, rel_error
from tests.conftest import random_batch, tiny_config
from tests.reference.conftest import torch_model

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

VARIANTS = ["relu", "gated-gelu"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("seed", [0, 1])
def test_float64_parity_with_transformers(variant, seed, tmp_path):
    config = tiny_config(variant)
    rng = np.random.default_rng(seed)
    model = minillm.T5.init(config, rng, dtype="float64")
    tm = torch_model(model, tmp_path)
    input_ids, mask, labels = random_batch(rng, config.vocab_size, B=3, S=11, T=8)
    loss, grads = model.loss_and_grads(input_ids, labels, mask)
    out = tm(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(mask),
             labels=torch.tensor(labels))
    out.loss.backward()
    logits = model.logits(input_ids, model.shift_right(labels), mask)
    assert rel_error(logits, out.logits.detach().numpy()) < 1e-9
    assert abs(loss - out.loss.item()) < 1e-9 * abs(loss)
    torch_grads = {k: p.grad.numpy() for k, p in tm.named_parameters()}
    lean_loss, lean_grads = engine.loss_and_grads(model, input_ids, labels, mask)
    assert rel_error(engine.logits(model, input_ids, model.shift_right(labels), mask),
                     out.logits.detach().numpy()) < 1e-9
    assert abs(lean_loss - out.loss.item()) < 1e-9 * abs(loss)
    for tier in (grads, lean_grads):
        assert set(tier) == set(model.params)
        for name, g in tier.items():
            assert rel_error(g, torch_grads[name]) < 1e-8, name


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_parity_with_transformers(variant, tmp_path):
    config = tiny_config(variant, d_model=32, d_kv=8, num_heads=4, d_ff=64, vocab_size=100)
    rng = np.random.default_rng(5)
    model = minillm.T5.init(config, rng, dtype="float32")
    tm = torch_model(model, tmp_path)
    input_ids, mask, labels = random_batch(rng, config.vocab_size, B=4, S=16, T=10)
    dec = model.shift_right(labels)
    with torch.no_grad():
        ref = tm(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(mask),
                 decoder_input_ids=torch.tensor(dec)).logits.numpy()
    for logits in (model.logits(input_ids, dec, mask), engine.logits(model, input_ids, dec, mask)):
        assert logits.dtype == np.float32
        np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)


def test_decoder_attention_mask_and_padding_rows(tmp_path):
    """A decoder padding mask and fully padded encoder positions agree with transformers."""
    config = tiny_config("relu")
    rng = np.random.default_rng(3)
    model = minillm.T5.init(config, rng, dtype="float64")
    tm = torch_model(model, tmp_path)
    input_ids, mask, labels = random_batch(rng, config.vocab_size, B=3, S=7, T=6)
    dec = model.shift_right(labels)
    dmask = padding_mask(rng, 3, 6)
    logits = model.logits(input_ids, dec, mask, decoder_attention_mask=dmask)
    with torch.no_grad():
        ref = tm(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(mask),
                 decoder_input_ids=torch.tensor(dec),
                 decoder_attention_mask=torch.tensor(dmask)).logits.numpy()
    # compare the positions a real token occupies (pad queries attend to nothing real)
    keep = dmask.astype(bool)
    assert rel_error(logits[keep], ref[keep]) < 1e-9


def test_param_names_match_transformers(tmp_path):
    for variant in VARIANTS:
        config = tiny_config(variant)
        model = minillm.T5.init(config, np.random.default_rng(0))
        tm = torch_model(model, tmp_path / variant)
        names = {k: tuple(p.shape) for k, p in tm.named_parameters()}
        assert names == param_shapes(config)


@pytest.mark.parametrize("variant", VARIANTS)
def test_adamw_steps_track_torch(variant, tmp_path):
    """Ten AdamW steps (with clipping and a schedule) on the engine's gradient, as the trainers
    take them, give torch's losses and weights."""
    config = tiny_config(variant)
    rng = np.random.default_rng(7)
    model = minillm.T5.init(config, rng, dtype="float64")
    tm = torch_model(model, tmp_path)
    tm.train()  # dropout_rate is 0: train mode changes nothing else
    opt_t = torch.optim.AdamW(tm.parameters(), lr=1e-2, betas=(0.9, 0.98), eps=1e-8,
                              weight_decay=0.1)
    opt = AdamW(lr=1e-2, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1, no_decay=lambda n: False)
    input_ids, mask, labels = random_batch(rng, config.vocab_size, B=4, S=8, T=6)
    for step in range(10):
        lr = lr_schedule(step, lr=1e-2, total_steps=10, warmup_steps=3)
        loss, grads = engine.loss_and_grads(model, input_ids, labels, mask)
        norm = clip_grad_norm(grads, 1.0)
        opt.step(model.params, grads, lr=lr)

        opt_t.zero_grad()
        out = tm(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(mask),
                 labels=torch.tensor(labels))
        out.loss.backward()
        norm_t = torch.nn.utils.clip_grad_norm_(tm.parameters(), 1.0)
        for g in opt_t.param_groups:
            g["lr"] = lr
        opt_t.step()
        assert abs(loss - out.loss.item()) < 1e-9 * abs(loss), step
        assert abs(norm - norm_t.item()) < 1e-9 * norm, step
    final = {k: p.detach().numpy() for k, p in tm.named_parameters()}
    for name, p in model.params.items():
        assert rel_error(p, final[name]) < 1e-8, name
