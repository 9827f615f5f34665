"""The fused LM head + mean cross-entropy (minillm.ops.lm_loss): finite differences, chunking,
and T5.loss_and_grads against the unfused path (forward, cross_entropy, backward)."""

from __future__ import annotations

import numpy as np
import pytest

import minillm
from minillm import ops
from minillm.ops.lm_loss import default_chunk_rows
from minillm.testing import assert_gradients, rel_error
from tests.conftest import random_batch, tiny_config


def problem(rng, N=10, C=5, V=7, dtype=np.float64):
    """h (N, C), W (V, C), labels (N,) with about a third ignored (at least one target)."""
    h = rng.standard_normal((N, C)).astype(dtype)
    w = rng.standard_normal((V, C)).astype(dtype)
    labels = rng.integers(0, V, N)
    labels[rng.random(N) < 0.3] = ops.IGNORE_INDEX
    labels[0] = 1
    return h, w, labels


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("scale", [1.0, 0.4])
@pytest.mark.parametrize("chunk_rows", [3, 100])
def test_finite_differences(smoothing, scale, chunk_rows):
    rng = np.random.default_rng(int(smoothing * 10 + scale * 100 + chunk_rows))
    h, w, labels = problem(rng)

    def forward(h, params):
        return ops.lm_head_cross_entropy_forward(h, params, labels, scale=scale, label_smoothing=smoothing,
                                                 chunk_rows=chunk_rows)

    # a random upstream gradient: the backward scales the unit gradients by it
    assert_gradients(forward, ops.lm_head_cross_entropy_backward, (h,), {"weight": w}, rng, 1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_chunked_equals_unchunked(smoothing):
    rng = np.random.default_rng(3)
    h, w, labels = problem(rng, N=10)  # 10 rows: chunks of 3, 3, 3, 1
    out = {}
    for rows in (10, 3):
        loss, cache = ops.lm_head_cross_entropy_forward(h, {"weight": w}, labels, scale=0.5,
                                                        label_smoothing=smoothing, chunk_rows=rows)
        dh, g = ops.lm_head_cross_entropy_backward(0.7, cache)
        out[rows] = (float(loss), dh, g["weight"])
    assert abs(out[10][0] - out[3][0]) <= 1e-12 * abs(out[10][0])
    assert rel_error(out[10][1], out[3][1]) < 1e-12
    assert rel_error(out[10][2], out[3][2]) < 1e-12


def test_equals_the_unfused_head_and_loss():
    """logits = (h s) W^T, the mean cross-entropy and their backward, each op whole."""
    rng = np.random.default_rng(4)
    h, w, labels = problem(rng, N=11, V=9)
    s, eps = 0.3, 0.1
    logits, c_lin = ops.linear_forward(h * s, {"weight": w})  # (N, V)
    loss, c_ce = ops.cross_entropy(logits, labels, eps)
    dlogits, _ = ops.cross_entropy_mean_backward(1.0, c_ce)
    dhs, g = ops.linear_backward(dlogits, c_lin)
    fused, cache = ops.lm_head_cross_entropy_forward(h, {"weight": w}, labels, scale=s, label_smoothing=eps,
                                                     chunk_rows=4)
    dh, g_fused = ops.lm_head_cross_entropy_backward(1.0, cache)
    assert abs(float(fused) - float(loss)) <= 1e-13
    assert rel_error(dh, dhs * s) < 1e-13
    assert rel_error(g_fused["weight"], g["weight"]) < 1e-13


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keeps_the_dtype_and_every_label_ignored_is_zero(dtype):
    rng = np.random.default_rng(5)
    h, w, _ = problem(rng, dtype=dtype)
    labels = np.full(len(h), ops.IGNORE_INDEX)
    loss, cache = ops.lm_head_cross_entropy_forward(h, {"weight": w}, labels, chunk_rows=4)
    dh, g = ops.lm_head_cross_entropy_backward(1.0, cache)
    assert loss.dtype == dh.dtype == g["weight"].dtype == dtype
    assert float(loss) == 0.0 and not dh.any() and not g["weight"].any()


def test_default_chunk_rows():
    assert default_chunk_rows(32128) == 261  # 2**23 logits: 32 MiB of float32
    assert default_chunk_rows(2**23) == 1
    with pytest.raises(ValueError, match="chunk_rows"):
        ops.lm_head_cross_entropy_forward(np.ones((2, 3)), {"weight": np.ones((4, 3))}, np.zeros(2, int),
                                          chunk_rows=0)


@pytest.mark.parametrize("variant", ["relu", "gated-gelu"])  # tied and scaled; untied
@pytest.mark.parametrize("chunk_rows", [None, 5])
def test_loss_and_grads_equals_the_unfused_path(variant, chunk_rows):
    config = tiny_config(variant)
    model = minillm.T5.init(config, np.random.default_rng(6), dtype="float64")
    assert model.tied == (variant == "relu") and config.scale_decoder_outputs == (variant == "relu")
    input_ids, mask, labels = random_batch(np.random.default_rng(7), config.vocab_size, B=3, S=9, T=7)
    logits, cache = model.forward(input_ids, model.shift_right(labels), mask)
    old_loss, ce_cache = ops.cross_entropy(logits, labels, 0.1)
    dlogits, _ = ops.cross_entropy_mean_backward(1.0, ce_cache)
    old = model.backward(dlogits, cache)
    loss, grads = model.loss_and_grads(input_ids, labels, mask, label_smoothing=0.1, chunk_rows=chunk_rows)
    assert abs(loss - float(old_loss)) <= 1e-12
    assert list(grads) == list(model.params)
    for k, g in old.items():
        assert rel_error(grads[k], g) < 1e-10, k
