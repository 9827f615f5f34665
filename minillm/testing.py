"""Gradient checks and hypothesis strategies, for minillm's tests and for yours.

Check any op written as a forward/backward pair:

    from minillm.testing import check_gradients
    errors = check_gradients(my_forward, my_backward, (x,), params, rng)
    assert max(errors.values()) < 1e-6

The loss differentiated is L = sum(g * forward(...)) with a *random* upstream
gradient g: an all-ones g through a softmax or a norm has a zero input
gradient, which any wrong Jacobian also "matches". Central differences in
float64: dL/dx_i ~ (L(x + e_i h) - L(x - e_i h)) / 2h.

The strategies (``rngs``, ``t5_configs``, ...) need hypothesis, imported
when they are first called.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from minillm.backend import to_numpy


def rel_error(a, b, floor: float = 1e-12, noise: float = 0.0) -> float:
    """max|a - b| / max(max|a|, max|b|): the error relative to the tensor's scale.

    Two tensors both below ``floor`` everywhere count as equal (error 0). An
    absolute ``noise`` (a finite difference's rounding error) is forgiven:
    the numerator is max(0, max|a - b| - noise).
    """
    a, b = np.asarray(to_numpy(a), dtype=np.float64), np.asarray(to_numpy(b), dtype=np.float64)
    diff = max(0.0, float(np.max(np.abs(a - b))) - noise) if a.size else 0.0
    scale = max(float(np.max(np.abs(a))) if a.size else 0.0, float(np.max(np.abs(b))) if b.size else 0.0)
    if scale < floor:
        return 0.0 if diff < floor else float("inf")
    return diff / scale


def _fresh(kwargs: dict) -> dict:
    """Copy any Generator so every forward call draws the same dropout masks."""
    return {k: copy.deepcopy(v) if isinstance(v, np.random.Generator) else v for k, v in kwargs.items()}


def numerical_gradient(f: Callable[[], float], x: np.ndarray, index: np.ndarray, h: float = 1e-6):
    """Central differences of the scalar f() with respect to x.flat[index] (x perturbed in place)."""
    flat = x.reshape(-1)
    out = np.empty(len(index), dtype=np.float64)
    for j, i in enumerate(index):
        old = flat[i]
        flat[i] = old + h
        f_plus = f()
        flat[i] = old - h
        f_minus = f()
        flat[i] = old
        out[j] = (f_plus - f_minus) / (2 * h)
    return out


def check_gradients(
    forward: Callable,
    backward: Callable,
    inputs: tuple,
    params: dict,
    rng: np.random.Generator,
    *,
    h: float = 1e-6,
    max_entries: int = 40,
    **kwargs: Any,
) -> dict[str, float]:
    """Relative errors of ``backward`` against finite differences, per input and per parameter.

    forward(*inputs, params, **kwargs) -> (out, cache); backward(dout, cache)
    -> (dx, grads) where dx is one array or a tuple with one entry per input
    (None for integer inputs). Returns {"input0": err, ..., param_name: err};
    each checks up to ``max_entries`` random entries of that tensor. Use
    float64 inputs and params.
    """
    inputs = tuple(inputs)
    out, cache = forward(*inputs, params, **_fresh(kwargs))
    g = rng.standard_normal(np.shape(out))  # a random upstream gradient
    dxs, grads = backward(g.astype(out.dtype), cache)
    if not isinstance(dxs, tuple):
        dxs = (dxs,)

    def loss() -> float:
        o, _ = forward(*inputs, params, **_fresh(kwargs))
        return float(np.sum(g * o))

    # Each difference quotient carries rounding error of about eps_machine *
    # sum|g * out| / h; a disagreement that small is the check's own noise.
    noise = 4 * np.finfo(np.float64).eps * float(np.sum(np.abs(g * out))) / h

    errors: dict[str, float] = {}
    targets = [(f"input{i}", x, dxs[i] if i < len(dxs) else None) for i, x in enumerate(inputs)]
    targets += [(name, p, grads.get(name)) for name, p in params.items()]
    for name, x, analytic in targets:
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            continue  # integer ids, masks: no gradient
        if analytic is None:
            raise AssertionError(f"backward returned no gradient for {name}")
        if np.shape(analytic) != x.shape:
            raise AssertionError(f"gradient of {name} has shape {np.shape(analytic)}, expected {x.shape}")
        n = x.size
        index = np.arange(n) if n <= max_entries else rng.choice(n, max_entries, replace=False)
        numeric = numerical_gradient(loss, x, index, h)
        errors[name] = rel_error(numeric, np.asarray(analytic).reshape(-1)[index], noise=noise)
    return errors


def assert_gradients(forward, backward, inputs, params, rng, tol: float = 1e-6, **kwargs) -> None:
    """check_gradients, then fail naming every tensor whose error exceeds tol."""
    errors = check_gradients(forward, backward, inputs, params, rng, **kwargs)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"gradient check failed (tol {tol}): {bad}"


# ------------------------------------------------------------------ strategies


def rngs():
    """Strategy: numpy Generators seeded by hypothesis (shrinks to seed 0)."""
    from hypothesis import strategies as st

    return st.integers(0, 2**32 - 1).map(np.random.default_rng)


def dims(min_value: int = 1, max_value: int = 5):
    """Strategy: a small dimension."""
    from hypothesis import strategies as st

    return st.integers(min_value, max_value)


def padding_mask(rng: np.random.Generator, B: int, L: int) -> np.ndarray:
    """(B, L) 1/0 mask with right padding; every row keeps at least one token."""
    lengths = rng.integers(1, L + 1, size=B)
    return (np.arange(L)[None, :] < lengths[:, None]).astype(np.int64)


def t5_configs(max_d_model: int = 12, max_layers: int = 2, variants=("relu", "gated-gelu")):
    """Strategy: tiny random T5Configs (both variants; H*D need not equal C)."""
    from hypothesis import strategies as st

    from minillm.config import T5Config

    @st.composite
    def build(draw):
        variant = draw(st.sampled_from(variants))
        nb = draw(st.sampled_from([4, 8, 16]))
        return T5Config(
            vocab_size=draw(st.integers(8, 40)),
            d_model=draw(st.integers(2, max_d_model)),
            d_kv=draw(st.integers(1, 6)),
            num_heads=draw(st.integers(1, 3)),
            d_ff=draw(st.integers(2, 16)),
            num_layers=draw(st.integers(1, max_layers)),
            num_decoder_layers=draw(st.integers(1, max_layers)),
            relative_attention_num_buckets=nb,
            relative_attention_max_distance=draw(st.integers(nb, 4 * nb)),
            dropout_rate=0.0,
            feed_forward_proj=variant,
            tie_word_embeddings=draw(st.booleans()) if variant != "relu" else True,
            initializer_factor=draw(st.sampled_from([0.5, 1.0, 2.0])),
        )

    return build()
