"""The lean engine held to the reference it sits beside (llm.c's kernels against their CPU reference).

Bit for bit where the engine does the same operations in the same order, only in row blocks
and into ``out=`` buffers: softmax, the RMS norm, the activations, dropout, the gate, the
cross-entropy without smoothing, the embedding's summed gradient, recomputation and the
inference passes. To float64 rounding where the engine computes differently, each with its
reason: fused GEMMs ([W_q; W_k; W_v], [W_i0; W_i1]: a fused GEMM's columns are not always its
parts' bit for bit, and its backward sums dx over the fused width in one product), the LM
head's dW summed over row chunks, and label smoothing's -mean log p taken as logsumexp(z) -
mean z.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minillm
from minillm import engine, ops
from minillm.engine import activations as act
from minillm.engine import attention as lean_attention
from minillm.engine import elementwise as ew
from minillm.engine import ffn as lean_ffn
from minillm.engine import lm_loss
from minillm.engine.model import embedding_backward_rows, embedding_backward_sum
from minillm.ops.cross_entropy import cross_entropy_mean_backward
from minillm.testing import assert_gradients, dims, rel_error, rngs
from tests.conftest import random_batch, tiny_config

DTYPES = [np.float32, np.float64]
ROUNDING = 1e-12  # float64: what a different summation order leaves
SETTINGS = settings(max_examples=20, deadline=None)


def same(a, b) -> bool:
    return a.dtype == b.dtype and np.array_equal(a, b)


# ------------------------------------------------------------------ the elementwise kernels: bit for bit


@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_kernels_are_the_reference_bit_for_bit(dtype):
    """Many row blocks of softmax, the RMS norm and dropout: the reference ops' numbers exactly."""
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal((6, 40, 700))).astype(dtype)  # 168,000 elements: several blocks
    dy = rng.standard_normal(x.shape).astype(dtype)
    w = rng.uniform(0.5, 1.5, 700).astype(dtype)

    y, cache = ops.softmax_forward(x)
    y2, cache2 = ew.softmax_forward(x)
    assert same(y2, y) and same(ew.softmax(x), y)
    assert same(ew.softmax_backward(dy, cache2), ops.softmax_backward(dy, cache)[0])

    y, cache = ops.rms_norm_forward(x, {"weight": w})
    y2, cache2 = ew.rms_norm_forward(x, w, 1e-6)
    assert same(y2, y) and same(ew.rms_norm(x, w, 1e-6), y) and same(ew.rms_norm_output(cache2), y)
    assert same(cache2.xhat, cache.xhat) and same(cache2.r, cache.r)
    dx, g = ops.rms_norm_backward(dy, cache)
    dx2, dw2 = ew.rms_norm_backward(dy, cache2)
    assert same(dx2, dx) and same(dw2, g["weight"])

    y, cache = ops.dropout_forward(x, p=0.3, rng=np.random.default_rng(5))
    y2, cache2 = ew.dropout_forward(x, 0.3, np.random.default_rng(5))
    assert same(y2, y) and np.array_equal(cache2.keep, cache.keep)
    assert same(ew.dropout_apply(dy, cache2), ops.dropout_backward(dy, cache)[0])
    assert same(ew.dropout_apply(x, cache2), y)  # dropout(x) remade from x and the mask


@pytest.mark.parametrize("name", sorted(ops.ACTIVATIONS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_are_the_reference_bit_for_bit(name, dtype):
    """The value and the derivative the engine keeps: the reference's forward and backward exactly."""
    rng = np.random.default_rng(1)
    x = (4 * rng.standard_normal((5, 30, 500))).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    forward, backward = ops.ACTIVATIONS[name]
    y, cache = forward(x)
    y2, d = act.activation_forward(name, x)
    assert same(y2, y) and same(act.activation(name, x), y)
    assert same(dy * d, backward(dy, cache)[0])  # dx = dy * dy/dx, as the reference computes it


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_gate_is_the_gated_ffns_hidden_bit_for_bit(dtype):
    """gate([h0|h1]) -> act(h0), act'(h0) * h1, act(h0) * h1, as the reference's gated FFN makes h."""
    rng = np.random.default_rng(2)
    h01 = (3 * rng.standard_normal((4, 9, 2 * 300))).astype(dtype)
    h0, h1 = h01[..., :300], h01[..., 300:]
    g, q, h = act.gate(h01, "gelu_new")
    g_ref, cache = ops.gelu_new_forward(h0)
    assert same(g, g_ref) and same(h, g_ref * h1)
    assert same(q, (np.ones_like(h0) * ops.gelu_new_backward(np.ones_like(h0), cache)[0]) * h1)


# ------------------------------------------------------------------ the cross-entropy and the fused LM head


@SETTINGS
@given(rng=rngs(), N=dims(1, 9), V=dims(2, 11), smoothing=st.sampled_from([0.0, 0.1]))
def test_cross_entropy_rows_are_the_reference(rng, N, V, smoothing):
    """In place (p over the logits, dz over p); bit for bit without smoothing, to rounding with it."""
    z, y, seed = 3 * rng.standard_normal((N, V)), rng.integers(0, V, N), rng.standard_normal(N)
    y[0] = ops.IGNORE_INDEX
    loss, cache = ops.cross_entropy_forward(z, y, smoothing)
    dz, _ = ops.cross_entropy_backward(seed, cache)
    z2 = z.copy()
    loss2, p, safe, valid = lm_loss.cross_entropy_rows(z2, y, smoothing, out=z2)
    assert p is z2 and same(p, cache.p)
    dz2 = lm_loss.cross_entropy_rows_backward(seed, p, safe, valid, smoothing)
    assert dz2 is z2 and same(dz2, dz)
    if smoothing:
        assert rel_error(loss2, loss) < ROUNDING
    else:
        assert same(loss2, loss)


def _reference_head_loss(h, w, labels, scale, smoothing):
    """The reference: the whole (N, V) logits, the mean cross-entropy, and its backward."""
    logits, c_lin = ops.linear_forward(h * scale, {"weight": w})
    loss, c_ce = ops.cross_entropy(logits, labels, smoothing)
    dlogits, _ = cross_entropy_mean_backward(1.0, c_ce)
    dhs, g = ops.linear_backward(dlogits, c_lin)
    return loss, dhs * scale, g["weight"]


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, None])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_fused_lm_head_loss_is_the_reference(chunk_rows, smoothing, monkeypatch):
    """Any chunking (and dW added in blocks of 2 rows) gives the unfused head and loss, to rounding."""
    monkeypatch.setattr(lm_loss, "DW_BLOCK_ROWS", 2)
    rng = np.random.default_rng(3)
    h, w, labels = rng.standard_normal((11, 5)), rng.standard_normal((13, 5)), rng.integers(0, 13, 11)
    labels[[2, 5]] = ops.IGNORE_INDEX
    expected = _reference_head_loss(h, w, labels, 0.7, smoothing)
    got = lm_loss.lm_head_loss_and_grads(h, w, labels, 0.7, smoothing, chunk_rows)
    for a, b in zip(got, expected, strict=True):
        assert rel_error(a, b) < ROUNDING


def test_fused_lm_head_loss_against_finite_differences():
    rng = np.random.default_rng(4)
    h, w, labels = rng.standard_normal((6, 4)), rng.standard_normal((9, 4)), rng.integers(0, 9, 6)
    labels[1] = ops.IGNORE_INDEX

    def forward(h, params):
        loss, dh, dw = lm_loss.lm_head_loss_and_grads(h, params["weight"], labels, 0.5, 0.1, chunk_rows=4)
        return loss, (dh, dw)

    def backward(dloss, cache):
        dh, dw = cache
        return dh * dloss, {"weight": dw * dloss}

    assert_gradients(forward, backward, (h,), {"weight": w}, rng, 1e-6)


def test_fused_lm_head_loss_keeps_the_dtype_and_an_all_ignored_batch_is_zero():
    for dtype in DTYPES:
        h, w = np.ones((3, 4), dtype), np.ones((5, 4), dtype)
        loss, dh, dw = lm_loss.lm_head_loss_and_grads(h, w, np.full(3, ops.IGNORE_INDEX), chunk_rows=2)
        assert loss.dtype == dh.dtype == dw.dtype == dtype
        assert float(loss) == 0.0 and not dh.any() and not dw.any()
    with pytest.raises(ValueError, match="chunk_rows"):
        lm_loss.lm_head_loss_and_grads(h, w, np.zeros(3, int), chunk_rows=0)
    assert lm_loss.default_chunk_rows(32128) == 261 and lm_loss.default_chunk_rows(10**9) == 1


# ------------------------------------------------------------------ the embedding's summed gradient


def test_embedding_backward_rows_and_sum_are_the_dense_scatters_bit_for_bit():
    """Two reads of one table: (scatter_a + scatter_b) + a head's dW, as the dense arrays add."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((9, 4))
    parts = []
    for ids in (np.array([[0, 3, 3, 7]]), np.array([[3, 1], [7, 7]])):
        _, cache = ops.embedding_forward(ids, {"weight": w})
        parts.append((rng.standard_normal((*ids.shape, 4)), cache))
    dense = [ops.embedding_backward(d, c)[1]["weight"] for d, c in parts]
    rows, drows = embedding_backward_rows(*parts[0])
    assert rows.tolist() == [0, 3, 7] and np.array_equal(drows, dense[0][rows])
    assert np.array_equal(embedding_backward_sum(parts), dense[0] + dense[1])
    head = rng.standard_normal((9, 4))
    into = head.copy()
    out = embedding_backward_sum(parts, dw_into=into)
    assert out is into and np.array_equal(out, (dense[0] + dense[1]) + head)


# ------------------------------------------------------------------ attention and the FFN: to rounding


def _attn_params(rng, C, H, D):
    return {n: rng.standard_normal((H * D, C)) for n in "qkv"} | {"o": rng.standard_normal((C, H * D))}


@pytest.mark.parametrize("drop", [0.0, 0.2])
def test_lean_attention_is_the_reference(drop):
    """Fused projections, no kept input, dropout(A) remade: the reference's out and gradients."""
    rng = np.random.default_rng(6)
    B, T, S, C, H, D = 2, 5, 4, 6, 3, 2
    params, x, m = _attn_params(rng, C, H, D), rng.standard_normal((B, T, C)), rng.standard_normal((B, S, C))
    bias_s, bias_c = rng.standard_normal((1, H, T, T)), rng.standard_normal((B, 1, 1, S))
    dout = rng.standard_normal((B, T, C))

    out, cache = ops.self_attention_forward(x, params, n_heads=H, bias=bias_s, scale=1.0, dropout=drop,
                                            rng=np.random.default_rng(7))
    (dx, dbias), g = ops.self_attention_backward(dout, cache)
    out2, cache2 = lean_attention.self_attention_forward(x, params, H, bias_s, drop, np.random.default_rng(7))
    (dx2, dbias2), g2 = lean_attention.self_attention_backward(dout, cache2, x)
    assert not any(a is x for a in cache2 if isinstance(a, np.ndarray))
    for a, b in [(out2, out), (dx2, dx), (dbias2, dbias), *((g2[k], g[k]) for k in g)]:
        assert rel_error(a, b) < ROUNDING

    out, cache = ops.cross_attention_forward(x, m, params, n_heads=H, bias=bias_c, scale=1.0, dropout=drop,
                                             rng=np.random.default_rng(8))
    (dx, dm, _), g = ops.cross_attention_backward(dout, cache)
    out2, cache2 = lean_attention.cross_attention_forward(x, m, params, H, bias_c, drop,
                                                          np.random.default_rng(8))
    (dx2, dm2, _), g2 = lean_attention.cross_attention_backward(dout, cache2, x)
    for a, b in [(out2, out), (dx2, dx), (dm2, dm), *((g2[k], g[k]) for k in g)]:
        assert rel_error(a, b) < ROUNDING


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("name", sorted(ops.ACTIVATIONS))
def test_lean_ffn_is_the_reference(gated, name):
    """The plain and gated FFN (the gated one's cache [h0|h1] alone): the reference's, to rounding."""
    rng = np.random.default_rng(9)
    B, L, C, F = 2, 3, 5, 7
    names = ("wi_0", "wi_1", "wo") if gated else ("wi", "wo")
    params = {n: rng.standard_normal((C, F) if n == "wo" else (F, C)) for n in names}
    x, dy = rng.standard_normal((B, L, C)), rng.standard_normal((B, L, C))
    forward, backward = (ops.gated_ffn_forward, ops.gated_ffn_backward) if gated else (ops.ffn_forward,
                                                                                       ops.ffn_backward)
    lean_forward, lean_backward = ((lean_ffn.gated_ffn_forward, lean_ffn.gated_ffn_backward) if gated
                                   else (lean_ffn.ffn_forward, lean_ffn.ffn_backward))
    y, cache = forward(x, params, act=name, dropout=0.3, rng=np.random.default_rng(10))
    dx, g = backward(dy, cache)
    y2, cache2 = lean_forward(x, params, name, 0.3, np.random.default_rng(10))
    dx2, g2 = lean_backward(dy, cache2, x)
    for a, b in [(y2, y), (dx2, dx), *((g2[k], g[k]) for k in g)]:
        assert rel_error(a, b) < ROUNDING
    assert rel_error(lean_ffn.ffn(x[0], params, name), forward(x[0][None], params, act=name)[0][0]) < ROUNDING


# ------------------------------------------------------------------ the whole model


VARIANTS = ["relu", "gated-gelu"]  # tied and scaled; untied


def model_and_batch(variant: str, dropout: float = 0.1, dtype="float64", seed: int = 0):
    config = tiny_config(variant, dropout_rate=dropout)
    model = minillm.T5.init(config, np.random.default_rng(seed), dtype=dtype)
    return model, random_batch(np.random.default_rng(seed + 1), config.vocab_size, B=3, S=9, T=7)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("recompute", [False, True])
def test_loss_and_grads_is_the_references(variant, recompute):
    """engine.loss_and_grads (fused head, freed caches, recomputation) against T5.loss_and_grads,
    with dropout on (the same masks, drawn in the same order), padding and label smoothing."""
    model, (input_ids, mask, labels) = model_and_batch(variant)
    loss, grads = model.loss_and_grads(input_ids, labels, mask, rng=np.random.default_rng(11),
                                       label_smoothing=0.1)
    loss2, grads2 = engine.loss_and_grads(model, input_ids, labels, mask, rng=np.random.default_rng(11),
                                          label_smoothing=0.1, recompute=recompute, chunk_rows=5)
    assert abs(loss2 - loss) < ROUNDING * abs(loss)
    assert list(grads2) == list(model.params)
    for k in grads:
        assert rel_error(grads2[k], grads[k]) < ROUNDING, k


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_and_backward_with_repeats_are_the_references(variant):
    """REINFORCE's pass: k decoder rows per prompt, a random upstream gradient on the logits."""
    model, (input_ids, mask, _) = model_and_batch(variant, dropout=0.0)
    rng = np.random.default_rng(12)
    dec = rng.integers(0, model.config.vocab_size, (6, 4))  # 2 rows for each of the 3 prompts
    logits, cache = model.forward(input_ids, dec, mask, repeats=2)
    dlogits = rng.standard_normal(logits.shape)
    grads = model.backward(dlogits, cache)
    logits2, cache2 = engine.forward(model, input_ids, dec, mask, repeats=2)
    assert rel_error(logits2, logits) < ROUNDING
    grads2 = engine.backward(model, dlogits, cache2)
    for k in grads:
        assert rel_error(grads2[k], grads[k]) < ROUNDING, k
    assert cache2.hidden.encoder.blocks == [] and cache2.hidden.decoder.blocks == []  # consumed
    with pytest.raises(ValueError, match="used by a backward already"):
        engine.backward(model, dlogits, cache2)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_inference_is_the_training_forward_bit_for_bit(variant, dtype):
    """encode / decode / logits / loss keep no cache and give the training forward's numbers."""
    model, (input_ids, mask, labels) = model_and_batch(variant, dropout=0.1, dtype=dtype)
    dec = model.shift_right(labels)
    logits, _ = engine.forward(model, input_ids, dec, mask)  # no rng: dropout off
    assert same(engine.logits(model, input_ids, dec, mask), logits)
    memory = engine.encode(model, input_ids, mask)
    assert same(engine.lm_head(model, engine.decode(model, dec, memory, mask)), logits)
    tol = 1e-5 if dtype == np.float32 else ROUNDING
    assert rel_error(logits, model.logits(input_ids, dec, mask)) < tol
    assert abs(engine.loss(model, input_ids, labels, mask) / model.loss(input_ids, labels, mask) - 1) < tol


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_engine_tracks_the_reference(variant):
    """In float32 the two differ by rounding alone (the engine's GEMMs fused), far below the gradient."""
    model, (input_ids, mask, labels) = model_and_batch(variant, dtype="float32")
    loss, grads = model.loss_and_grads(input_ids, labels, mask, rng=np.random.default_rng(15))
    loss2, grads2 = engine.loss_and_grads(model, input_ids, labels, mask, rng=np.random.default_rng(15))
    assert abs(loss2 - loss) < 1e-5 * abs(loss)
    for k in grads:
        assert grads2[k].dtype == np.float32 and rel_error(grads2[k], grads[k]) < 1e-4, k
