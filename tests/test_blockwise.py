"""Blockwise elementwise work (backend.blockwise, the engine's kernels): every row computed
once, the same numbers whatever the block size, in-place outputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm import backend
from minillm.backend import as_rows, blockwise, random_bits16
from minillm.engine import activations as act
from minillm.engine import elementwise as ew
from minillm.engine.lm_loss import cross_entropy_rows, cross_entropy_rows_backward
from minillm.optim import AdamW

SETTINGS = settings(max_examples=30, deadline=None)


@SETTINGS
@given(n_rows=st.integers(0, 40), width=st.integers(1, 7), block=st.integers(1, 50))
def test_blockwise_visits_every_row_once(n_rows, width, block):
    x = np.arange(n_rows * width, dtype=np.float64).reshape(n_rows, width)
    seen = np.zeros(n_rows, dtype=np.int64)
    y = np.full_like(x, -1.0)

    def fn(xb, yb, sb):
        np.multiply(xb, 2.0, out=yb)
        sb += 1

    blockwise(fn, x, y, seen, block=block)
    assert np.array_equal(seen, np.ones(n_rows, dtype=np.int64))
    assert np.array_equal(y, 2.0 * x)


def test_as_rows_views_contiguous_arrays():
    x = np.zeros((2, 3, 4))
    r = as_rows(x)
    assert r.shape == (6, 4) and np.shares_memory(r, x)
    assert as_rows(np.float64(3.0)).shape == (1, 1)
    assert as_rows(np.zeros((3, 0))).shape == (3, 0)


def _blockwise_ops(rng):
    """Every blockwise op's outputs on arrays large enough to span many blocks."""
    x = rng.standard_normal((8, 40, 700)).astype(np.float32)  # 224,000 elements: 4+ blocks
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal(700).astype(np.float32)
    labels = rng.integers(0, 700, 320)
    out = {}
    out["gelu"], out["gelu_d"] = act.activation_forward("gelu_new", x)
    out["softmax"], y = ew.softmax_forward(x)
    out["softmax_dx"] = ew.softmax_backward(dy, y)
    out["norm"], c = ew.rms_norm_forward(x, w, 1e-6)
    out["norm_dx"], out["norm_dw"] = ew.rms_norm_backward(dy, c)
    out["ce"], p, safe, valid = cross_entropy_rows(x.reshape(320, 700), labels, 0.1)
    out["ce_dz"] = cross_entropy_rows_backward(dy.reshape(320, 700)[:, 0], p, safe, valid, 0.1)
    out["dropout"], c = ew.dropout_forward(x, 0.3, np.random.default_rng(5))
    out["dropout_dx"] = ew.dropout_apply(dy, c)
    params = {"a": x.copy(), "b": w.copy()}
    AdamW(lr=0.1).step(params, {"a": dy, "b": w})
    out["adam_a"], out["adam_b"] = params["a"], params["b"]
    return out


def test_results_do_not_depend_on_the_block_size(monkeypatch):
    results = []
    for block in (1000, 1 << 16, 1 << 30):  # many blocks ... one block
        monkeypatch.setattr(backend, "BLOCK_ELEMENTS", block)
        results.append(_blockwise_ops(np.random.default_rng(0)))
    for other in results[1:]:
        for name, value in results[0].items():
            assert np.array_equal(value, other[name]), f"{name} changed with the block size"


def test_blockwise_ops_match_whole_array_formulas():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 50, 900))  # several blocks, float64
    y, _ = ew.softmax_forward(x)
    e = np.exp(x - x.max(-1, keepdims=True))
    assert np.allclose(y, e / e.sum(-1, keepdims=True), rtol=1e-13, atol=0)
    w = rng.standard_normal(900)
    y, _ = ew.rms_norm_forward(x, w, 1e-6)
    assert np.allclose(y, w * x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6), rtol=1e-13, atol=0)


def test_adamw_updates_a_non_contiguous_parameter_in_place():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((6, 8))
    p_t = base.T  # a transposed view: not C-contiguous
    p_c = np.ascontiguousarray(p_t)
    g = rng.standard_normal(p_c.shape)
    AdamW(lr=0.1).step({"w": p_t}, {"w": g})
    AdamW(lr=0.1).step({"w": p_c}, {"w": g})
    assert np.array_equal(p_t, p_c)
    assert np.array_equal(base.T, p_c)  # the update reached the array the caller holds


def test_random_bits16_is_uniform_and_reproducible():
    a = random_bits16(np.random.default_rng(3), (1001, 7), like=np.zeros(1))
    b = random_bits16(np.random.default_rng(3), (1001, 7), like=np.zeros(1))
    assert a.dtype == np.uint16 and a.shape == (1001, 7)
    assert np.array_equal(a, b)
    counts = np.bincount((a >> 12).ravel(), minlength=16)  # 16 equal bins
    expected = a.size / 16
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 45  # 15 degrees of freedom: p < 1e-4


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keeps_one_minus_p(p):
    x = np.ones((400, 500), dtype=np.float32)
    y, _ = ew.dropout_forward(x, p, np.random.default_rng(4))
    kept = y != 0
    assert abs(kept.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / x.size)
    assert np.allclose(y[kept], 1 / (1 - p))


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_dropout_rejects_a_bad_probability(p):
    with pytest.raises(ValueError, match="dropout probability"):
        ew.dropout_forward(np.ones(3), p, np.random.default_rng(0))


@pytest.mark.parametrize("name", ["relu", "gelu_new", "silu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inference_activations_match_the_forward_ops(name, dtype):
    """One kernel per activation: the inference form's values are the forward's, bit for bit."""
    x = (np.random.default_rng(6).standard_normal((3, 50, 900)) * 4).astype(dtype)
    y = act.activation(name, x)
    assert y.dtype == dtype
    assert np.array_equal(y, act.activation_forward(name, x)[0])


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("name", ["gelu_new", "silu"])
def test_activations_saturate_quietly(name):
    x = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=np.float32)
    y, d = act.activation_forward(name, x)
    assert np.array_equal(y, [0.0, 0.0, 0.0, 100.0, 1e4])
    assert np.array_equal(d, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert np.array_equal(act.activation(name, x), y)


def test_sum_of_squares_is_numpys_sum_bit_for_bit():
    """(x * x).sum() without the (x * x) array: the same bits, float32 and float64, any shape."""
    from minillm.backend import sum_of_squares

    rng = np.random.default_rng(4)
    for shape in [(), (0,), (5,), (3, 7, 11), (1536, 512), (200_001,)]:
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal(shape).astype(dtype)
            assert np.asarray(sum_of_squares(x)).tobytes() == (x * x).sum().tobytes(), (shape, dtype)
            for leaf in (1, 128, 1000):  # NumPy's own pieces are of up to 128 elements
                assert np.asarray(sum_of_squares(x, leaf=leaf)).tobytes() == (x * x).sum().tobytes()
