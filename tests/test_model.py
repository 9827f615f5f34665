"""The whole model: finite differences, init statistics, the schedule, bad inputs.

Parity with transformers and AdamW against torch: tests/reference/test_model.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import minillm
from minillm import engine
from minillm.optim import lr_schedule
from minillm.testing import assert_gradients, rel_error, rngs, t5_configs
from tests.conftest import random_batch, tiny_config

VARIANTS = ["relu", "gated-gelu"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_whole_model_gradient_check(variant, dropout):
    config = tiny_config(variant, dropout_rate=dropout, vocab_size=20, d_model=6, d_kv=3,
                         num_heads=2, d_ff=8, num_layers=2, num_decoder_layers=2)
    rng = np.random.default_rng(0)
    model = minillm.T5.init(config, rng, dtype="float64")
    input_ids, mask, labels = random_batch(rng, config.vocab_size, B=2, S=5, T=4)
    dec = model.shift_right(labels)
    seed = 123

    def forward(params, drng):
        return minillm.T5(config, params).forward(input_ids, dec, mask,
                                                  rng=drng if dropout else None)

    def backward(dlogits, cache):
        return (), minillm.T5(config, model.params).backward(dlogits, cache)

    assert_gradients(forward, backward, (), model.params, rng, 1e-6,
                     max_entries=12, drng=np.random.default_rng(seed))


@settings(max_examples=8, deadline=None)
@given(config=t5_configs(), rng=rngs())
def test_loss_and_grads_gradient_check_random_configs(config, rng):
    """loss_and_grads (mean CE over non-ignored labels) against finite differences of loss."""
    model = minillm.T5.init(config, rng, dtype="float64")
    input_ids, mask, labels = random_batch(rng, config.vocab_size, B=2, S=4, T=3)
    loss, grads = model.loss_and_grads(input_ids, labels, mask)
    assert abs(loss - model.loss(input_ids, labels, mask)) < 1e-12
    # the engine, held to it: to rounding of the gradient's scale (a tensor whose gradient is a
    # cancelling sum of much larger terms, 1e-10 of the rest, keeps only that rounding's digits)
    lean_loss, lean_grads = engine.loss_and_grads(model, input_ids, labels, mask)
    scale = max(float(np.abs(g).max()) for g in grads.values())
    assert abs(lean_loss - loss) < 1e-12
    assert all(rel_error(lean_grads[k], grads[k], noise=1e-13 * scale) < 1e-11 for k in grads)
    h = 1e-6
    for name in rng.choice(sorted(model.params), size=min(6, len(model.params)), replace=False):
        p = model.params[name]
        i = int(rng.integers(p.size))
        old = p.flat[i]
        p.flat[i] = old + h
        lp = model.loss(input_ids, labels, mask)
        p.flat[i] = old - h
        lm = model.loss(input_ids, labels, mask)
        p.flat[i] = old
        numeric = (lp - lm) / (2 * h)
        assert abs(numeric - grads[name].flat[i]) <= 1e-6 * max(1.0, abs(numeric)), name


def test_init_statistics_follow_t5():
    config = minillm.T5Config(vocab_size=2000, d_model=64, d_kv=16, num_heads=4, d_ff=256,
                              num_layers=1, initializer_factor=1.0)
    p = minillm.T5.init(config, np.random.default_rng(0), dtype="float64").params
    b = "encoder.block.0.layer"
    expect = {
        "shared.weight": 1.0,
        f"{b}.0.SelfAttention.q.weight": (64 * 16) ** -0.5,
        f"{b}.0.SelfAttention.k.weight": 64**-0.5,
        f"{b}.0.SelfAttention.o.weight": (4 * 16) ** -0.5,
        f"{b}.1.DenseReluDense.wi.weight": 64**-0.5,
        f"{b}.1.DenseReluDense.wo.weight": 256**-0.5,
    }
    for name, std in expect.items():
        assert abs(p[name].std() / std - 1) < 0.1, name
    assert np.all(p[f"{b}.0.layer_norm.weight"] == 1.0)


def test_lr_schedule_shapes():
    kw = dict(lr=1.0, total_steps=110, warmup_steps=10)
    assert lr_schedule(0, **kw) == pytest.approx(0.1)
    assert lr_schedule(9, **kw) == pytest.approx(1.0)
    assert lr_schedule(60, **kw) == pytest.approx(0.5)  # half way through the cosine
    assert lr_schedule(110, **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_schedule(60, kind="linear", **kw) == pytest.approx(0.5)
    # wsd: held at lr until 3/4 of the 110 steps (82.5), then linear to 0 at 110
    assert lr_schedule(10, kind="wsd", **kw) == lr_schedule(82, kind="wsd", **kw) == 1.0
    assert lr_schedule(96.25, kind="wsd", **kw) == pytest.approx(0.5)
    assert lr_schedule(110, kind="wsd", **kw) == 0.0
    assert lr_schedule(96.25, kind="wsd", min_lr_ratio=0.2, **kw) == pytest.approx(0.6)
    assert lr_schedule(55, kind="wsd", decay_fraction=0.5, **kw) == 1.0
    assert lr_schedule(82.5, kind="wsd", decay_fraction=0.5, **kw) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule"):
        lr_schedule(5, kind="step", **kw)


def test_bad_inputs_are_named():
    model = minillm.T5.init(tiny_config(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="input_ids holds id 64"):
        model.logits(np.array([[1, 64]]), np.array([[0]]))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.logits(np.array([[1, 2]]), np.array([[0]]), attention_mask=np.ones((1, 3)))
    with pytest.raises(ValueError, match="2-D integer"):
        model.logits(np.array([1.0, 2.0]), np.array([[0]]))
    with pytest.raises(TypeError, match="Generator"):
        minillm.T5.init(tiny_config(), 0)
