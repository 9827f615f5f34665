"""The array backend: the same math on every available device, and the rules that keep it so.

Every device is checked against float64 on the host: the op (or training step)
runs in float32 on the device and in float64 on NumPy, and the two agree to
float32 rounding. (Against float32 on the host, the CPU case would compare a
computation with itself.) On a GPU the training steps are also checked against
the same float32 steps on the CPU.

Two guards read the source: modules that compute on arrays ask the array for
its module (``xp = get_xp(x)``) instead of calling ``np.`` on it, and no module
draws from NumPy's global random stream (a Generator is passed in).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minillm
from minillm import ops
from minillm.backend import get_xp, keep_freed_memory, to_device, to_numpy, xp_for
from minillm.optim import AdamW
from tests.conftest import cuda_available, random_batch, tiny_config

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a GPU")])]

ROOT = pathlib.Path(minillm.__file__).parent
# Modules whose functions compute on arrays that may live on a GPU.
# (model/params.py builds and checks host arrays, from an init or a file; T5.to moves them.)
MATH_MODULES = sorted([*ROOT.glob("ops/*.py"), *ROOT.glob("generation/*.py"), ROOT / "optim.py",
                       *(p for p in ROOT.glob("model/*.py") if p.name != "params.py")])
# np.<name> that are not array computations: dtypes, constants, type checks.
ALLOWED = {"float16", "float32", "float64", "int8", "int32", "int64", "bool_", "uint8", "dtype",
           "finfo", "iinfo", "errstate", "ndarray", "inf", "pi", "e", "newaxis", "integer",
           "floating", "full", "issubdtype", "random.Generator"}
# np.random.<name> that do not touch the global stream: the Generator API.
GENERATOR_API = {"Generator", "default_rng", "SeedSequence", "BitGenerator", "PCG64", "PCG64DXSM",
                 "Philox", "SFC64", "MT19937"}


def np_names(path: pathlib.Path):
    """(line, name) for every ``np.<name>`` in a module's code, ``random.<name>`` for np.random's.

    Read from the syntax tree: comments and strings do not count, annotations do.
    """
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Attribute):
            continue
        inner = node.value
        if isinstance(inner, ast.Name) and inner.id in ("np", "numpy") and node.attr != "random":
            yield node.lineno, node.attr
        elif (isinstance(inner, ast.Attribute) and inner.attr == "random"
              and isinstance(inner.value, ast.Name) and inner.value.id in ("np", "numpy")):
            yield node.lineno, f"random.{node.attr}"


def from_numpy_random(path: pathlib.Path):
    """(line, names) for every ``from numpy.random import ...`` in a module."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("numpy.random"):
            yield node.lineno, [a.name for a in node.names]


def test_math_modules_take_their_array_module_from_the_input():
    offenders = [f"{path.relative_to(ROOT.parent)}:{line}: np.{name}"
                 for path in MATH_MODULES for line, name in np_names(path) if name not in ALLOWED]
    assert not offenders, "use xp = get_xp(x) instead of np. on arrays:\n" + "\n".join(offenders)


def test_no_module_draws_from_the_global_random_stream():
    """np.random.rand / seed / choice / ... share one hidden state; minillm passes Generators.

    No exceptions today: backend.py, seeds.py, model/params.py and the data
    generators under data/ all take or make a Generator.
    """
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        where = path.relative_to(ROOT.parent)
        offenders += [f"{where}:{line}: np.{name}" for line, name in np_names(path)
                      if name.startswith("random.") and name.removeprefix("random.") not in GENERATOR_API]
        offenders += [f"{where}:{line}: from numpy.random import {name}"
                      for line, names in from_numpy_random(path) for name in names
                      if name not in GENERATOR_API]
    assert not offenders, "pass a numpy.random.Generator instead:\n" + "\n".join(offenders)


def test_the_guards_see_what_they_guard(tmp_path):
    """Annotations count, strings and comments do not; the global draws are caught."""
    path = tmp_path / "m.py"
    path.write_text(textwrap.dedent('''
        import numpy as np
        from numpy.random import shuffle
        def f(x: np.ndarray, rng: np.random.Generator):  # np.exp in a comment
            "np.log in a string"
            np.random.seed(0)
            return np.exp(x) + np.random.randn(3) + numpy.random.choice(3)
    '''))
    names = sorted(name for _, name in np_names(path))
    assert names == ["exp", "ndarray", "random.Generator", "random.choice", "random.randn", "random.seed"]
    assert list(from_numpy_random(path)) == [(3, ["shuffle"])]


def test_cuda_without_cupy_or_gpu_is_a_clear_error():
    if cuda_available():
        pytest.skip("a GPU is available here")
    with pytest.raises(RuntimeError, match="cuda"):
        to_device(np.zeros(3), "cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        xp_for("tpu")


def _arrays(t):
    """The arrays in an op's input-gradient slot: one array, or a tuple with Nones."""
    return [a for a in (t if isinstance(t, tuple) else (t,)) if a is not None]


@pytest.mark.parametrize("device", DEVICES)
def test_ops_agree_with_float64_on_the_host(device):
    """Forward, input gradients and parameter gradients: float32 on the device vs float64 on NumPy."""
    rng = np.random.default_rng(0)
    B, T, S, C, H, D, F = 2, 5, 7, 8, 2, 4, 16
    x, m = rng.standard_normal((B, T, C)), rng.standard_normal((B, S, C))
    attn = {k: rng.standard_normal((H * D, C)) for k in "qkv"}
    attn["o"] = rng.standard_normal((C, H * D))
    ffn = {"wi_0": rng.standard_normal((F, C)), "wi_1": rng.standard_normal((F, C)),
           "wo": rng.standard_normal((C, F))}
    mask = np.ones((B, S), dtype=np.int64)
    mask[0, 4:] = 0
    cases = {
        "rms_norm": (ops.rms_norm_forward, ops.rms_norm_backward, (x,),
                     {"weight": rng.uniform(0.5, 1.5, C)}, {}),
        "ffn": (ops.gated_ffn_forward, ops.gated_ffn_backward, (x,), ffn, {"act": "gelu_new"}),
        "attention": (ops.cross_attention_forward, ops.cross_attention_backward, (x, m), attn,
                      {"n_heads": H, "scale": 1.0}),
    }
    f32 = lambda a: to_device(a.astype(np.float32), device)  # noqa: E731
    for name, (fwd, bwd, inputs, params, kw) in cases.items():
        kw_dev = dict(kw)
        if name == "attention":
            keep = ops.padding_keep(mask)
            kw["bias"] = ops.additive_mask(keep, np.float64)
            kw_dev["bias"] = to_device(ops.additive_mask(keep, np.float32), device)
        out, cache = fwd(*inputs, params, **kw)
        out_d, cache_d = fwd(*map(f32, inputs), {k: f32(v) for k, v in params.items()}, **kw_dev)
        assert get_xp(out_d) is xp_for(device) and out_d.dtype == np.float32
        np.testing.assert_allclose(to_numpy(out_d), out, rtol=1e-4, atol=1e-5, err_msg=name)
        dout = rng.standard_normal(out.shape)
        dx, g = bwd(dout, cache)
        dx_d, g_d = bwd(f32(dout), cache_d)
        dx, dx_d = _arrays(dx), _arrays(dx_d)
        assert len(dx) == len(dx_d) >= len(inputs), name  # (attention: and dbias)
        for i, (a, a_d) in enumerate(zip(dx, dx_d, strict=True)):
            np.testing.assert_allclose(to_numpy(a_d), a, rtol=1e-4, atol=1e-4, err_msg=f"{name} d input{i}")
        assert set(g) == set(g_d) == set(params), name
        for k in g:
            np.testing.assert_allclose(to_numpy(g_d[k]), g[k], rtol=1e-4, atol=1e-4, err_msg=f"{name} {k}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["relu", "gated-gelu"])
def test_training_steps_agree_with_float64_and_the_cpu(device, variant):
    """Three AdamW steps on the device with dropout on.

    At every step the float32 loss and gradients on the device equal float64 on
    the host at the same parameters (AdamW's first steps are near sign(g), so
    float32 and float64 runs would part where a gradient is near 0: the
    reference is evaluated at the device's own parameters). On a GPU, the
    parameters after the steps equal the same float32 steps on the CPU.
    """
    config = tiny_config(variant, dropout_rate=0.1)
    rng = np.random.default_rng(1)
    cpu = minillm.T5.init(config, rng)
    dev = cpu.astype(np.float32).to(device)
    assert dev.device == device
    input_ids, mask, labels = random_batch(rng, config.vocab_size)
    opt_c, opt_d = AdamW(lr=1e-2), AdamW(lr=1e-2)
    for step in range(3):
        loss_d, g_d = dev.loss_and_grads(input_ids, labels, mask, rng=np.random.default_rng(step))
        ref = minillm.T5(config, {k: to_numpy(v).astype(np.float64) for k, v in dev.params.items()})
        loss_r, g_r = ref.loss_and_grads(input_ids, labels, mask, rng=np.random.default_rng(step))
        assert abs(loss_d - loss_r) <= 1e-4 * abs(loss_r), step
        assert set(g_d) == set(g_r) == set(dev.params)
        for k in g_r:
            np.testing.assert_allclose(to_numpy(g_d[k]), g_r[k], rtol=1e-4, atol=1e-5, err_msg=f"{step} {k}")
        if device != "cpu":
            _, g_c = cpu.loss_and_grads(input_ids, labels, mask, rng=np.random.default_rng(step))
            opt_c.step(cpu.params, g_c)
        opt_d.step(dev.params, g_d)
    assert get_xp(opt_d.m["shared.weight"]) is xp_for(device) and opt_d.t == 3
    if device != "cpu":
        for k in cpu.params:
            np.testing.assert_allclose(to_numpy(dev.params[k]), cpu.params[k], rtol=1e-4, atol=1e-5,
                                       err_msg=k)


# ---------------------------------------------------------------- keep_freed_memory

MALLINFO = textwrap.dedent('''
    import ctypes, sys
    from minillm.backend import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                   "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    applied = keep_freed_memory() if sys.argv[1] == "on" else None
    n = 64 << 20  # above glibc's largest dynamic mmap threshold (32 MiB)
    before = libc.mallinfo2()
    p = libc.malloc(n)
    mmapped = libc.mallinfo2().hblkhd - before.hblkhd >= n
    libc.free(p)
    kept = libc.mallinfo2().fordblks >= n
    print(applied, mmapped, kept, keep_freed_memory() if applied else None)
''')


def test_keep_freed_memory_keeps_a_freed_64_mib_block_in_the_heap():
    """Observable through glibc's own counters, in fresh processes (the setting is process-wide).

    Without it a 64 MiB block is mmapped and handed back on free; with it the
    block comes from the heap and stays there, free, after free.
    """
    import platform

    if platform.libc_ver()[0] != "glibc":
        assert keep_freed_memory() is False
        pytest.skip("keep_freed_memory applies to glibc only")
    import ctypes

    if not hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2"):
        pytest.skip("glibc older than 2.33 has no mallinfo2")
    run = lambda arg: subprocess.run([sys.executable, "-c", MALLINFO, arg], capture_output=True,  # noqa: E731
                                     text=True, timeout=120, check=True).stdout.split()
    assert run("off") == ["None", "True", "False", "None"]
    assert run("on") == ["True", "False", "True", "True"]  # applied, not mmapped, kept; again True
