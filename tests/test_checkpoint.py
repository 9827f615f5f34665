"""Run-folder checkpoints: round trip, Hugging Face loadability, atomic commits under interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import minillm
from minillm.optim import AdamW
from minillm.runfolder import checkpoint as ckpt
from tests.conftest import folder_digest, trainer_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tokenizer():
    from minillm.data.tokenizer import Tokenizer

    texts = ["write the number in words", "one two three", "Reverse: red owl pen", "pen owl red"]
    return Tokenizer.train(texts * 10, vocab_size=200)


def small_model(tokenizer, seed=0):
    config = minillm.T5Config(vocab_size=tokenizer.vocab_size, d_model=16, d_kv=4, num_heads=2,
                              d_ff=32, num_layers=1, dropout_rate=0.0,
                              relative_attention_num_buckets=8)
    return minillm.T5.init(config, np.random.default_rng(seed))


def stepped_optimizer(model, steps=2, seed=1):
    """An AdamW that took ``steps`` steps on random gradients (moments are non-trivial)."""
    rng = np.random.default_rng(seed)
    opt = AdamW(lr=1e-2)
    for _ in range(steps):
        grads = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.params.items()}
        opt.step(model.params, grads)
    return opt


def test_round_trip(tmp_path, tokenizer):
    model = small_model(tokenizer)
    opt = stepped_optimizer(model)
    rng = np.random.default_rng(5)
    rng.random(3)
    state = trainer_state(2, epoch=1, batch_in_epoch=3, rng_state=rng.bit_generator.state)
    ckpt.save_checkpoint(tmp_path, model, tokenizer, opt, state)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
                 "optimizer.safetensors", "trainer_state.json"):
        assert (tmp_path / name).exists(), name
        assert (tmp_path / name).stat().st_mode & 0o777 == ckpt.FILE_MODE
    assert not (tmp_path / ckpt.STAGING).exists()

    model2, tok2, opt_state, state2 = ckpt.load_checkpoint(tmp_path)
    for k, v in model.params.items():
        np.testing.assert_array_equal(model2.params[k], v)
    assert model2.config == model.config
    assert tok2.encode("one two three") == tokenizer.encode("one two three")
    opt2 = AdamW(lr=1e-2)
    opt2.load_state_dict(opt_state)
    assert opt2.t == opt.t == 2
    for k in opt.m:
        np.testing.assert_array_equal(opt2.m[k], opt.m[k])
        np.testing.assert_array_equal(opt2.v[k], opt.v[k])
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = state2["rng_state"]
    np.testing.assert_array_equal(rng2.random(4), rng.random(4))
    assert state2["step"] == 2 and state2["batch_in_epoch"] == 3
    # and as a plain Hugging Face folder
    loaded = minillm.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded.params["shared.weight"], model.params["shared.weight"])



def test_interrupted_writer_leaves_previous_checkpoint(tmp_path, tokenizer, monkeypatch):
    model = small_model(tokenizer)
    opt = stepped_optimizer(model, 1)
    ckpt.save_checkpoint(tmp_path, model, tokenizer, opt, trainer_state(1))
    ckpt.save_model(tmp_path / "best", model, tokenizer)
    before = folder_digest(tmp_path)

    model.params["shared.weight"] += 1.0  # a newer model that never gets saved
    real = ckpt.save_tensors

    def dies_midway(path, tensors, metadata=None):
        with open(path, "wb") as f:  # half a file, then the process "dies"
            f.write(b"\x00" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_tensors", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, model, tokenizer, opt, trainer_state(2))
    monkeypatch.setattr(ckpt, "save_tensors", real)
    assert folder_digest(tmp_path) == before
    assert ckpt.read_state(tmp_path)["step"] == 1
    loaded = minillm.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded.params["shared.weight"] + 1.0,
                                  model.params["shared.weight"])
    # the same for the best/ folder, interrupted while writing the tokenizer
    monkeypatch.setattr(type(tokenizer), "save", lambda self, p: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        ckpt.save_model(tmp_path / "best", model, tokenizer)
    assert folder_digest(tmp_path) == before


def test_recover_finishes_a_committed_checkpoint(tmp_path, tokenizer):
    """Killed between the commit point and the last rename: recover() rolls forward."""
    model = small_model(tokenizer)
    opt = stepped_optimizer(model, 1)
    ckpt.save_checkpoint(tmp_path, model, tokenizer, opt, trainer_state(1))
    model.params["shared.weight"] += 1.0
    opt = stepped_optimizer(model, 2)
    # stage step 2 and commit it, but move only the weights (a kill mid-way)
    staging = tmp_path / ckpt.STAGING
    staging.mkdir()
    ckpt.write_model_files(str(staging), model, tokenizer)
    ckpt.save_tensors(str(staging / ckpt.OPTIMIZER_NAME), opt.state_dict()["arrays"])
    (staging / ckpt.STATE_NAME).write_text(json.dumps(
        {"format": ckpt.STATE_FORMAT, "version": ckpt.STATE_VERSION, **trainer_state(2),
         "optimizer_t": opt.t}))
    names = sorted(os.listdir(staging))
    (staging / ckpt.COMMIT).write_text(json.dumps(names))
    os.replace(staging / "model.safetensors", tmp_path / "model.safetensors")
    assert ckpt.has_checkpoint(tmp_path)  # recovers
    assert not staging.exists()
    model2, _, opt_state, state = ckpt.load_checkpoint(tmp_path)
    assert state["step"] == 2 and opt_state["t"] == 2
    np.testing.assert_array_equal(model2.params["shared.weight"], model.params["shared.weight"])


def test_uncommitted_staging_is_discarded(tmp_path, tokenizer):
    model = small_model(tokenizer)
    ckpt.save_checkpoint(tmp_path, model, tokenizer, stepped_optimizer(model, 1), trainer_state(1))
    before = folder_digest(tmp_path)
    (tmp_path / ckpt.STAGING).mkdir()
    (tmp_path / ckpt.STAGING / "model.safetensors").write_bytes(b"partial")
    ckpt.recover(tmp_path)
    assert folder_digest(tmp_path) == before


WRITER = textwrap.dedent("""
    import sys, numpy as np, minillm
    from minillm.runfolder import checkpoint as ckpt
    from tests.conftest import trainer_state
    from minillm.optim import AdamW
    from minillm.data.tokenizer import Tokenizer
    tok = Tokenizer.train(["one two three", "red owl pen"] * 10, vocab_size=200)
    cfg = minillm.T5Config(vocab_size=tok.vocab_size, d_model=64, d_kv=16, num_heads=4,
                           d_ff=256, num_layers=2, dropout_rate=0.0)
    model = minillm.T5.init(cfg, np.random.default_rng(0))
    opt = AdamW()
    step = 0
    while True:
        step += 1
        for v in model.params.values():
            v[...] = step  # every weight equals the step: a torn checkpoint shows
        grads = {k: np.zeros_like(v) for k, v in model.params.items()}
        opt.step(model.params, grads, lr=0.0)
        ckpt.save_checkpoint(sys.argv[1], model, tok, opt, trainer_state(step))
        if step == 1:
            print("ready", flush=True)
""")


@pytest.mark.parametrize("delay", [0.05, 0.13, 0.31])
def test_killed_writer_leaves_a_loadable_consistent_checkpoint(tmp_path, delay):
    """SIGKILL a process that writes checkpoints in a loop: the folder loads and agrees."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    loaded = minillm.from_pretrained(tmp_path)  # loadable as it stands, before any recovery
    w = loaded.params["shared.weight"]
    assert np.all(w == w.flat[0])
    model, _, opt_state, state = ckpt.load_checkpoint(tmp_path)  # recovers, then reads
    step = state["step"]
    assert step >= 1 and opt_state["t"] == step
    assert all(np.all(v == step) for v in model.params.values())


def test_a_state_of_another_version_is_refused_in_one_line(tmp_path, tokenizer):
    """Version 1 runs drew other random streams: resuming one would not continue it, so it is refused."""
    model = minillm.T5.init(minillm.T5Config(vocab_size=tokenizer.vocab_size, d_model=8, d_kv=4,
                                             num_heads=2, d_ff=16, num_layers=1), np.random.default_rng(0))
    ckpt.save_checkpoint(tmp_path, model, tokenizer, AdamW(), trainer_state(0))
    path = tmp_path / ckpt.STATE_NAME
    state = json.loads(path.read_text())
    assert state["version"] == ckpt.STATE_VERSION
    path.write_text(json.dumps({**state, "version": 1}))
    with pytest.raises(ValueError, match=r"trainer_state.json: trainer state version 1, this minillm reads"):
        ckpt.read_state(tmp_path)
