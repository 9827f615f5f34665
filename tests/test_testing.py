"""The gradient checker itself: it must fail on wrong gradients, including the
ones an all-ones upstream gradient would let through."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from minillm import ops
from minillm.testing import assert_gradients, check_gradients


def test_checker_passes_a_right_gradient_and_fails_a_wrong_one():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 5)), rng.uniform(0.5, 1.5, 5)
    assert_gradients(ops.rms_norm_forward, ops.rms_norm_backward, (x,), {"weight": w}, rng)

    def wrong_backward(dy, cache):  # forgets the mean term of the RMS norm's Jacobian
        xhat, r, w = cache
        return r * dy * w, {"weight": (dy * xhat).sum(0)}

    errors = check_gradients(ops.rms_norm_forward, wrong_backward, (x,), {"weight": w}, rng)
    assert errors["input0"] > 1e-2 and errors["weight"] < 1e-6


def test_random_upstream_gradient_catches_what_all_ones_would_miss():
    """softmax's backward with the projection dropped: y * dy. With dy = 1 the true
    input gradient is 0 and this one is y, but y*(1 - 1) style bugs hide; here
    a bug that is exact for constant dy must still be caught."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6))

    def wrong_backward(dy, cache):  # right only when dy is constant along the row
        return np.zeros_like(dy), {}

    ones_grad = ops.softmax_backward(np.ones_like(x), ops.softmax_forward(x)[1])[0]
    assert np.abs(ones_grad).max() < 1e-15  # what an all-ones check would compare against
    errors = check_gradients(lambda x, p: ops.softmax_forward(x), wrong_backward, (x,), {}, rng)
    assert errors["input0"] > 0.5


def test_missing_or_misshaped_gradient_is_reported():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 3)), rng.standard_normal((4, 3))
    with pytest.raises(AssertionError, match="no gradient for weight"):
        check_gradients(ops.linear_forward, lambda d, c: (ops.linear_backward(d, c)[0], {}), (x,),
                        {"weight": w}, rng)
    with pytest.raises(AssertionError, match="shape"):
        check_gradients(ops.linear_forward, lambda d, c: (ops.linear_backward(d, c)[0][:1], {"weight": w}),
                        (x,), {"weight": w}, rng)


def test_import_minillm_needs_only_numpy():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'torch', 'transformers', 'tokenizers', 'safetensors',"
        " 'tqdm', 'hypothesis', 'cupy', 'matplotlib'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import minillm, numpy as np\n"
        "m = minillm.T5.init(minillm.T5Config(vocab_size=10, d_model=4, d_kv=2, num_heads=2,"
        " d_ff=8, num_layers=1), np.random.default_rng(0))\n"
        "print(m.logits(np.array([[1, 2]]), np.array([[0]])).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1, 1, 10)"
