"""The entropy op: H = -sum_v p_v log p_v of softmax rows, and its gradient."""

from __future__ import annotations

import numpy as np
import pytest

from minillm.ops import entropy_backward, entropy_forward
from minillm.testing import assert_gradients


def test_entropy_is_the_formula_and_its_bounds():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 7)) * 2
    H, _ = entropy_forward(z)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    np.testing.assert_allclose(H, -(p * np.log(p)).sum(-1), rtol=1e-12)
    # uniform rows reach log V; a nearly one-hot row approaches 0
    H, _ = entropy_forward(np.array([[0.0] * 7, [60.0] + [0.0] * 6]))
    np.testing.assert_allclose(H, [np.log(7), 0.0], atol=1e-12)


def test_entropy_gradient_matches_finite_differences():
    """float64, a random upstream gradient dH (N,), every logit entry."""
    rng = np.random.default_rng(1)
    z = rng.standard_normal((6, 9)) * 3
    assert_gradients(entropy_forward, entropy_backward, (z,), {}, rng, max_entries=z.size)


def test_entropy_gradient_is_shift_invariant():
    """H(z + c) = H(z) for a constant c per row, so every row of dlogits sums to 0."""
    rng = np.random.default_rng(2)
    z = rng.standard_normal((4, 5))
    _, cache = entropy_forward(z)
    dz, grads = entropy_backward(rng.standard_normal(4), cache)
    assert grads == {}
    np.testing.assert_allclose(dz.sum(-1), 0, atol=1e-14)
    assert np.abs(dz).max() > 1e-3  # not vacuous


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_entropy_keeps_the_dtype(dtype):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((3, 6)).astype(dtype)
    H, cache = entropy_forward(z)
    dz, _ = entropy_backward(rng.standard_normal(3), cache)  # a float64 upstream on float32 logits
    assert H.dtype == dtype and dz.dtype == dtype and H.shape == (3,) and dz.shape == z.shape
