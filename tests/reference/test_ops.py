"""Ops against torch and transformers: relative position buckets, cross-entropy with smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from minillm import ops
from minillm.testing import rel_error

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_relative_position_buckets_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = np.arange(-300, 301)[None, :]
    for bidirectional in (True, False):
        for nb, md in ((32, 128), (8, 20), (16, 64), (6, 7)):
            ours = ops.relative_position_bucket(rel, bidirectional, nb, md)
            ref = T5Attention._relative_position_bucket(torch.tensor(rel), bidirectional, nb, md)
            assert np.array_equal(ours, ref.numpy()), (bidirectional, nb, md)


def test_cross_entropy_matches_torch():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 5, 11))
    y = rng.integers(0, 11, (4, 5))
    y[0, 2:] = -100
    for eps in (0.0, 0.2):
        loss, cache = ops.cross_entropy(z, y, eps)
        zt = torch.tensor(z, requires_grad=True)
        ref = torch.nn.functional.cross_entropy(zt.reshape(-1, 11), torch.tensor(y).reshape(-1),
                                                ignore_index=-100, label_smoothing=eps)
        ref.backward()
        assert abs(float(loss) - ref.item()) < 1e-13
        dz, _ = ops.cross_entropy_mean_backward(1.0, cache)
        assert rel_error(dz, zt.grad.numpy()) < 1e-13
