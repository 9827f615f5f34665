"""Activation recomputation (``recompute=True``, ``minillm train --recompute``): each block keeps
only its input and is recomputed in the backward (:mod:`minillm.engine.stack`). The gradient is
the cached path's, bit for bit (the dropout masks replayed), the caller's Generator ends where it
would, and the flag travels from the command line to the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

import minillm
from minillm import engine
from minillm.cli import main
from minillm.engine.stack import BlockInput, stack_backward, stack_forward
from minillm.ops.attention import padding_keep
from minillm.testing import assert_gradients
from tests.conftest import random_batch, tiny_config

VARIANTS = ["relu", "gated-gelu"]  # tied and scaled; untied


def model_and_batch(variant: str, dropout: float, seed: int = 0, **overrides):
    config = tiny_config(variant, dropout_rate=dropout, **overrides)
    model = minillm.T5.init(config, np.random.default_rng(seed), dtype="float64")
    return model, random_batch(np.random.default_rng(seed + 1), config.vocab_size, B=3, S=9, T=7)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_equal_the_cached_path_bit_for_bit(variant):
    model, (input_ids, mask, labels) = model_and_batch(variant, dropout=0.1)
    out = {}
    for recompute in (False, True):
        out[recompute] = engine.loss_and_grads(model, input_ids, labels, mask, rng=np.random.default_rng(11),
                                               label_smoothing=0.1, recompute=recompute)
    assert out[True][0] == out[False][0]
    assert list(out[True][1]) == list(model.params)
    for k, g in out[False][1].items():
        np.testing.assert_array_equal(out[True][1][k], g, err_msg=k)
    # dropout was on: another stream gives another gradient (so the equality above is not vacuous)
    _, other = engine.loss_and_grads(model, input_ids, labels, mask, rng=np.random.default_rng(12),
                                     recompute=True)
    assert not np.array_equal(other["shared.weight"], out[True][1]["shared.weight"])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_recomputed_gradient_against_finite_differences(variant, dropout):
    """engine.forward / backward with recompute=True, a random upstream gradient on the logits."""
    config = tiny_config(variant, dropout_rate=dropout, vocab_size=20, d_model=6, d_kv=3, num_heads=2,
                         d_ff=8, num_layers=2, num_decoder_layers=2)
    rng = np.random.default_rng(2)
    model = minillm.T5.init(config, rng, dtype="float64")
    input_ids, mask, labels = random_batch(rng, config.vocab_size, B=2, S=5, T=4)
    dec = model.shift_right(labels)

    def forward(params, drng):
        return engine.forward(minillm.T5(config, params), input_ids, dec, mask, rng=drng if dropout else None,
                              recompute=True)

    def backward(dlogits, cache):
        return (), engine.backward(model, dlogits, cache)

    assert_gradients(forward, backward, (), model.params, rng, 1e-6, max_entries=12,
                     drng=np.random.default_rng(5))


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_callers_generator_advances_as_without_recompute(variant):
    model, (input_ids, mask, labels) = model_and_batch(variant, dropout=0.1)
    after = {}
    for recompute in (False, True):
        rng = np.random.default_rng(21)
        engine.loss_and_grads(model, input_ids, labels, mask, rng=rng, recompute=recompute)
        after[recompute] = rng
    assert after[True].bit_generator.state == after[False].bit_generator.state
    assert after[True].bit_generator.state != np.random.default_rng(21).bit_generator.state  # it drew
    assert after[True].random() == after[False].random()


@pytest.mark.parametrize("recompute", [False, True])
def test_the_stack_backward_consumes_its_cache(recompute):
    """The cache holds a BlockInput per block (recompute) or the layers' caches; the backward pops
    each block as it goes (its activations freed), and the cache cannot be used twice."""
    model, (input_ids, mask, _) = model_and_batch("relu", dropout=0.3)
    h, cache = stack_forward(model.params, model.config, "encoder", input_ids, padding_keep(mask),
                             rng=np.random.default_rng(3), recompute=recompute)
    assert len(cache.blocks) == model.config.num_layers
    assert all(isinstance(b, BlockInput) == recompute for b in cache.blocks)
    dh = np.random.default_rng(4).standard_normal(h.shape)
    stack_backward(dh, cache)
    assert cache.blocks == []
    with pytest.raises(ValueError, match="used by a backward already"):
        stack_backward(dh, cache)


def test_cli_flag_reaches_the_trainer_and_resume_may_change_it(tmp_path, monkeypatch):
    """--recompute reaches engine.loss_and_grads; a run stopped without it and resumed with it is the
    uninterrupted --recompute run, bit for bit (dropout on); the flag is not saved with the run."""
    seen = []
    original = engine.loss_and_grads

    def spy(*args, **kwargs):
        seen.append(kwargs.get("recompute"))
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "loss_and_grads", spy)
    args = ["train", "--preset", "tiny", "--no-progress", "--steps", "4", "--eval-every", "0",
            "--n-train", "32", "--n-eval", "4", "--dropout", "0.2", "--no-plot"]
    assert main([*args, "--out", str(tmp_path / "a"), "--recompute", "--stop-after", "4"]) == 0
    assert seen and all(r is True for r in seen)
    n_steps = len(seen)
    seen.clear()
    assert main([*args, "--out", str(tmp_path / "b"), "--stop-after", "2"]) == 0
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--recompute", "--no-progress",
                 "--no-plot", "--stop-after", "4"]) == 0
    assert seen == [False] * (n_steps // 2) + [True] * (n_steps // 2)
    a, b = minillm.from_pretrained(tmp_path / "a"), minillm.from_pretrained(tmp_path / "b")
    for k, v in a.params.items():
        np.testing.assert_array_equal(b.params[k], v, err_msg=k)
    assert "recompute" not in json.loads((tmp_path / "b" / "trainer_state.json").read_text())["train_config"]
