"""The array backend: the same math on every available device.

On this CPU-only machine the CUDA cases are skipped and a guard checks the
rule that keeps the math backend-agnostic: modules that compute on arrays ask
the array for its module (``xp = get_xp(x)``) instead of calling ``np.`` on it.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import minillm
from minillm import ops
from minillm.backend import get_xp, to_device, to_numpy, xp_for
from minillm.optim import AdamW
from tests.reference import random_batch, tiny_config


def _cuda_available() -> bool:
    try:
        xp_for("cuda")
        return True
    except RuntimeError:
        return False


DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not _cuda_available(), reason="needs CuPy and a GPU")])]

ROOT = pathlib.Path(minillm.__file__).parent
# Modules whose functions compute on arrays that may live on a GPU.
# (model/params.py builds and checks host arrays, from an init or a file; T5.to moves them.)
MATH_MODULES = sorted([*ROOT.glob("ops/*.py"), *ROOT.glob("generation/*.py"), ROOT / "optim.py",
                       *(p for p in ROOT.glob("model/*.py") if p.name != "params.py")])
# np.<name> that are not array computations: dtypes, constants, type checks.
ALLOWED = {"float16", "float32", "float64", "int8", "int32", "int64", "bool_", "uint8", "dtype",
           "finfo", "iinfo", "errstate", "ndarray", "random", "inf", "pi", "e", "newaxis", "integer",
           "floating", "full", "issubdtype"}


def test_math_modules_take_their_array_module_from_the_input():
    offenders = []
    for path in MATH_MODULES:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for name in re.findall(r"\bnp\.([A-Za-z_]\w*)", code):
                if name not in ALLOWED:
                    offenders.append(f"{path.relative_to(ROOT.parent)}:{lineno}: np.{name}")
    assert not offenders, "use xp = get_xp(x) instead of np. on arrays:\n" + "\n".join(offenders)


def test_cuda_without_cupy_or_gpu_is_a_clear_error():
    if _cuda_available():
        pytest.skip("a GPU is available here")
    with pytest.raises(RuntimeError, match="cuda"):
        to_device(np.zeros(3), "cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        xp_for("tpu")


@pytest.mark.parametrize("device", DEVICES)
def test_ops_agree_with_the_cpu(device):
    rng = np.random.default_rng(0)
    B, T, S, C, H, D, F = 2, 5, 7, 8, 2, 4, 16
    x, m = rng.standard_normal((B, T, C), dtype=np.float32), rng.standard_normal((B, S, C), dtype=np.float32)
    attn = {k: rng.standard_normal((H * D, C), dtype=np.float32) for k in "qkv"}
    attn["o"] = rng.standard_normal((C, H * D), dtype=np.float32)
    ffn = {"wi_0": rng.standard_normal((F, C), dtype=np.float32),
           "wi_1": rng.standard_normal((F, C), dtype=np.float32),
           "wo": rng.standard_normal((C, F), dtype=np.float32)}
    mask = np.ones((B, S), dtype=np.int64)
    mask[0, 4:] = 0
    cases = {
        "rms_norm": (ops.rms_norm_forward, ops.rms_norm_backward, (x,),
                     {"weight": np.ones(C, np.float32)}, {}),
        "ffn": (ops.ffn_forward, ops.ffn_backward, (x,), ffn, {"act": "gelu_new"}),
        "attention": (lambda x, m, p, **k: ops.attention_forward(x, m, p, **k), ops.attention_backward,
                      (x, m), attn, {"n_heads": H, "scale": 1.0}),
    }
    for name, (fwd, bwd, inputs, params, kw) in cases.items():
        kw_dev = dict(kw)
        if name == "attention":
            kw["bias"] = ops.additive_mask(ops.padding_keep(mask), np.float32)
            kw_dev["bias"] = to_device(kw["bias"], device)
        out, cache = fwd(*inputs, params, **kw)
        out_d, cache_d = fwd(*[to_device(a, device) for a in inputs], to_device(params, device), **kw_dev)
        assert get_xp(out_d) is xp_for(device)
        np.testing.assert_allclose(to_numpy(out_d), out, rtol=1e-4, atol=1e-5, err_msg=name)
        dout = rng.standard_normal(out.shape, dtype=np.float32)
        dx, g = bwd(dout, cache)
        dx_d, g_d = bwd(to_device(dout, device), cache_d)
        for k in g:
            np.testing.assert_allclose(to_numpy(g_d[k]), g[k], rtol=1e-4, atol=1e-4, err_msg=f"{name} {k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["relu", "gated-gelu"])
def test_training_steps_agree_with_the_cpu(device, variant):
    config = tiny_config(variant, dropout_rate=0.1)
    rng = np.random.default_rng(1)
    cpu = minillm.T5.init(config, rng)
    dev = cpu.astype(np.float32).to(device) if device != "cpu" else cpu.astype(np.float32)
    assert dev.device == device
    input_ids, mask, labels = random_batch(rng, config.vocab_size)
    opt_c, opt_d = AdamW(lr=1e-2), AdamW(lr=1e-2)
    for step in range(3):
        loss_c, g_c = cpu.loss_and_grads(input_ids, labels, mask, rng=np.random.default_rng(step))
        loss_d, g_d = dev.loss_and_grads(input_ids, labels, mask, rng=np.random.default_rng(step))
        assert abs(loss_c - loss_d) <= 1e-4 * abs(loss_c)
        opt_c.step(cpu.params, g_c)
        opt_d.step(dev.params, g_d)
    for k in cpu.params:
        np.testing.assert_allclose(to_numpy(dev.params[k]), cpu.params[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert get_xp(opt_d.m["shared.weight"]) is xp_for(device)
