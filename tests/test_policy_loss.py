"""The policy-loss ops: PPO's clipped surrogate, the k3 KL, the loss types' token weights.

Values against the formulas written out here (TRL's definitions), gradients against
finite differences in float64 with random upstream gradients."""

from __future__ import annotations

import numpy as np
import pytest

from minillm.ops import (
    clip_fractions,
    clipped_surrogate_backward,
    clipped_surrogate_forward,
    k3_kl_backward,
    k3_kl_forward,
    token_mean_backward,
    token_mean_forward,
    token_weights,
)
from minillm.testing import assert_gradients


def _mask(rng, N, L):
    lengths = rng.integers(1, L + 1, size=N)
    lengths[0] = L
    return np.arange(L)[None, :] < lengths[:, None]  # (N, L)


def test_clipped_surrogate_is_ppos_and_clips_where_trl_does():
    logp = np.log(np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5]))
    old = np.log(np.array([0.5, 0.25, 1.0, 0.25, 1.0, 0.5]))  # rho = 1, 2, 0.5, 2, 0.5, 1
    A = np.array([1.0, 1.0, 1.0, -1.0, -1.0, 0.0])
    l, cache = clipped_surrogate_forward(logp, logp_old=old, advantages=A, eps_low=0.2, eps_high=0.3)
    rho = np.exp(logp - old)
    want = -np.minimum(rho * A, np.clip(rho, 0.8, 1.3) * A)
    np.testing.assert_allclose(l, want, rtol=1e-12)
    np.testing.assert_allclose(l, [-1.0, -1.3, -0.5, 2.0, 0.8, 0.0], rtol=1e-12)
    # clipped (no gradient): rho = 2 with A > 0 (high) and rho = 0.5 with A < 0 (low)
    dlogp, grads = clipped_surrogate_backward(np.ones(6), cache)
    assert grads == {}
    np.testing.assert_allclose(dlogp, [-1.0, 0.0, -0.5, 2.0, 0.0, 0.0], rtol=1e-12)
    fr = clip_fractions(cache)
    assert fr == pytest.approx({"clip_frac_low": 1 / 6, "clip_frac_high": 1 / 6, "clip_frac": 2 / 6})
    fr = clip_fractions(cache, mask=np.array([1, 1, 1, 1, 0, 0]))
    assert fr == pytest.approx({"clip_frac_low": 0.0, "clip_frac_high": 0.25, "clip_frac": 0.25})


def test_clipped_surrogate_at_the_sampling_policy_is_reinforce():
    """logp = logp_old: rho = 1, nothing clipped, dl/dlogp = -A exactly."""
    rng = np.random.default_rng(0)
    logp = rng.standard_normal((3, 4))
    A = rng.standard_normal((3, 1))
    l, cache = clipped_surrogate_forward(logp, logp_old=logp.copy(), advantages=A)
    np.testing.assert_array_equal(l, -np.broadcast_to(A, (3, 4)))
    dlogp, _ = clipped_surrogate_backward(np.ones((3, 4)), cache)
    np.testing.assert_array_equal(dlogp, -np.broadcast_to(A, (3, 4)))
    assert clip_fractions(cache)["clip_frac"] == 0.0


@pytest.mark.parametrize("eps_high", [None, 0.28])
def test_clipped_surrogate_gradient_matches_finite_differences(eps_high):
    """Per token, advantages per sequence (N, 1); ratios spread over both sides of the clip range."""
    rng = np.random.default_rng(1)
    logp = rng.standard_normal((5, 6))
    old = logp + rng.uniform(-0.6, 0.6, size=logp.shape)  # rho in [0.55, 1.8]: some clipped
    A = rng.standard_normal((5, 1))
    _, cache = clipped_surrogate_forward(logp, logp_old=old, advantages=A, eps_high=eps_high)
    assert 0 < clip_fractions(cache)["clip_frac"] < 1  # both kinds of entries are checked
    assert_gradients(clipped_surrogate_forward, clipped_surrogate_backward, (logp,), {}, rng,
                     max_entries=logp.size, logp_old=old, advantages=A, eps_low=0.2,
                     eps_high=eps_high)


def test_k3_kl_is_the_formula_nonnegative_and_zero_at_the_reference():
    rng = np.random.default_rng(2)
    logp, ref = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    kl, _ = k3_kl_forward(logp, logp_ref=ref)
    r = ref - logp
    np.testing.assert_allclose(kl, np.exp(r) - r - 1, rtol=1e-12)
    assert (kl >= 0).all()
    np.testing.assert_array_equal(k3_kl_forward(ref, logp_ref=ref)[0], 0.0)
    # its mean over tokens drawn from p estimates KL(p || q) without bias: sum_v p (log p - log q)
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.2, 0.6])
    k3 = k3_kl_forward(np.log(p), logp_ref=np.log(q))[0]
    assert (p * k3).sum() == pytest.approx((p * np.log(p / q)).sum(), rel=1e-12)


def test_k3_kl_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    logp, ref = rng.standard_normal((4, 7)), rng.standard_normal((4, 7))
    assert_gradients(k3_kl_forward, k3_kl_backward, (logp,), {}, rng, max_entries=logp.size,
                     logp_ref=ref)


def test_token_weights_are_trls_loss_types():
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
    losses = np.arange(12.0).reshape(3, 4)
    m = mask.astype(float)
    want = {  # TRL's reductions of per_token_loss * completion_mask
        "grpo": ((losses * m).sum(-1) / m.sum(-1)).mean(),
        "dr_grpo": (losses * m).sum() / (3 * 5),
        "dapo": (losses * m).sum() / m.sum(),
    }
    for loss_type, value in want.items():
        loss, _ = token_mean_forward(losses, mask=mask, loss_type=loss_type, max_completion_length=5)
        assert float(loss) == pytest.approx(value, rel=1e-12), loss_type
    w = token_weights(mask, "grpo")
    np.testing.assert_allclose(w[1], [1 / 6, 1 / 6, 0, 0])
    # a part of a larger step: the step's sequences and tokens normalise it
    np.testing.assert_allclose(token_weights(mask[1:], "dapo", n_tokens=7), m[1:] / 7)
    np.testing.assert_allclose(token_weights(mask[1:], "grpo", n_seq=3), w[1:])
    np.testing.assert_allclose(token_weights(mask[1:], "dr_grpo", 5, n_seq=3), m[1:] / 15)
    with pytest.raises(ValueError, match="loss_type must be one of grpo, dr_grpo, dapo"):
        token_weights(mask, "bnpo")
    with pytest.raises(ValueError, match="max_completion_length"):
        token_weights(mask, "dr_grpo")


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_token_mean_gradient_matches_finite_differences(loss_type):
    rng = np.random.default_rng(4)
    mask = _mask(rng, 5, 6)
    losses = rng.standard_normal((5, 6))
    assert_gradients(token_mean_forward, token_mean_backward, (losses,), {}, rng,
                     max_entries=losses.size, mask=mask, loss_type=loss_type, max_completion_length=8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_policy_loss_ops_keep_the_dtype(dtype):
    rng = np.random.default_rng(5)
    logp = rng.standard_normal((3, 4)).astype(dtype)
    old = (logp + 0.1).astype(dtype)
    l, c = clipped_surrogate_forward(logp, logp_old=old, advantages=rng.standard_normal((3, 1)))
    d, _ = clipped_surrogate_backward(rng.standard_normal((3, 4)), c)
    kl, ck = k3_kl_forward(logp, logp_ref=old)
    dk, _ = k3_kl_backward(rng.standard_normal((3, 4)), ck)
    loss, cm = token_mean_forward(l, mask=np.ones((3, 4), bool), loss_type="grpo")
    dm, _ = token_mean_backward(1.0, cm)
    assert {a.dtype for a in (l, d, kl, dk, loss, dm)} == {np.dtype(dtype)}
