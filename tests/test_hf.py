"""Hugging Face folders: the exact round trip, and bad folders named clearly.

Both directions with transformers itself: tests/reference/test_hf.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import minillm
from tests.conftest import tiny_config

VARIANTS = ["relu", "gated-gelu"]


def test_save_load_roundtrip_is_exact(tmp_path):
    for variant in VARIANTS:
        model = minillm.T5.init(tiny_config(variant), np.random.default_rng(0))
        model.save_pretrained(tmp_path / variant)
        again = minillm.from_pretrained(tmp_path / variant)
        assert again.config == model.config
        assert set(again.params) == set(model.params)
        for k in model.params:
            assert np.array_equal(again.params[k], model.params[k])
        assert not [f for f in os.listdir(tmp_path / variant) if f.endswith(".tmp")]


def test_old_style_untied_config_and_known_extra_keys(tmp_path):
    """A transformers-4 FLAN-T5 folder: tie_word_embeddings false, no scale field,
    duplicate embeddings and the ignored EncDecAttention bias in the file."""
    from safetensors.numpy import load_file, save_file

    model = minillm.T5.init(tiny_config("gated-gelu"), np.random.default_rng(0))
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("scale_decoder_outputs")
    cfg["tie_word_embeddings"] = False
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    t = load_file(tmp_path / "model.safetensors")
    t["encoder.embed_tokens.weight"] = t["shared.weight"]
    t["decoder.embed_tokens.weight"] = t["shared.weight"]
    t["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = np.zeros((8, 3), np.float32)
    save_file(t, tmp_path / "model.safetensors")
    again = minillm.from_pretrained(tmp_path)
    assert not again.config.scale_decoder_outputs and not again.tied
    x = np.array([[5, 6, 7]])
    assert np.array_equal(again.logits(x, x), model.logits(x, x))


# ------------------------------------------------------------------ bad folders


@pytest.fixture
def folder(tmp_path):
    model = minillm.T5.init(tiny_config("relu"), np.random.default_rng(0))
    model.save_pretrained(tmp_path)
    return tmp_path


def _edit_tensors(folder, fn):
    from safetensors.numpy import load_file, save_file

    t = load_file(folder / "model.safetensors")
    fn(t)
    save_file(t, folder / "model.safetensors")


def test_missing_tensor_is_named(folder):
    name = "decoder.block.1.layer.2.DenseReluDense.wo.weight"
    _edit_tensors(folder, lambda t: t.pop(name))
    with pytest.raises(ValueError, match=f"missing tensor.*{name}"):
        minillm.from_pretrained(folder)


def test_extra_tensor_is_named(folder):
    _edit_tensors(folder, lambda t: t.update({"encoder.block.9.surprise.weight": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match="unexpected tensor.*encoder.block.9.surprise.weight"):
        minillm.from_pretrained(folder)


def test_wrong_shape_is_named(folder):
    name = "encoder.final_layer_norm.weight"
    _edit_tensors(folder, lambda t: t.update({name: np.ones(5, np.float32)}))
    with pytest.raises(ValueError, match=rf"{name} has shape \(5,\), config says \(16,\)"):
        minillm.from_pretrained(folder)


def test_untied_config_without_lm_head_is_missing(folder):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="missing tensor.*lm_head.weight"):
        minillm.from_pretrained(folder)


def test_truncated_weights_file(folder):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        minillm.from_pretrained(folder)


def test_nan_weight_is_named(folder):
    _edit_tensors(folder, lambda t: t["shared.weight"].__setitem__((0, 0), np.nan))
    with pytest.raises(ValueError, match="shared.weight holds NaN"):
        minillm.from_pretrained(folder)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(d_model=-4), "'d_model' must be a positive integer"),
    (lambda c: c.update(feed_forward_proj="gated-gelu-x"), "feed_forward_proj"),
    (lambda c: c.update(feed_forward_proj="swish", dense_act_fn="swish"),
     "activation 'swish' is not implemented"),
    (lambda c: c.update(is_gated_act=True), "'is_gated_act' = True disagrees"),
    (lambda c: c.update(my_new_field=3), "unknown T5Config field.*my_new_field"),
    (lambda c: c.update(model_type="bart"), "model_type is 'bart'"),
    (lambda c: c.update(relative_attention_max_distance=4),
     "'relative_attention_max_distance' = 4 must exceed"),
    (lambda c: c.update(eos_token_id=10_000), "'eos_token_id' = 10000 is not a token id"),
])
def test_bad_config_is_named(folder, edit, message):
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=message) as e:
        minillm.from_pretrained(folder)
    assert "config.json" in str(e.value)


def test_config_not_json(folder):
    (folder / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"config.json: not valid JSON \(line 1"):
        minillm.from_pretrained(folder)


def test_missing_files(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        minillm.from_pretrained(tmp_path / "nope")
    os.remove(folder / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        minillm.from_pretrained(folder)
    os.remove(folder / "config.json")
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        minillm.from_pretrained(folder)


def test_failed_save_leaves_the_previous_folder_intact(folder, monkeypatch):
    from minillm.storage import safetensors_file

    before = (folder / "model.safetensors").read_bytes()
    model = minillm.T5.init(tiny_config("relu"), np.random.default_rng(9))
    calls = []

    def boom(array, kind):
        calls.append(kind)
        if len(calls) == 3:  # a few tensors already written
            raise KeyboardInterrupt("killed while writing")
        return encode(array, kind)

    encode = safetensors_file._encode
    monkeypatch.setattr(safetensors_file, "_encode", boom)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(folder)
    assert (folder / "model.safetensors").read_bytes() == before
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]
    minillm.from_pretrained(folder)


# ------------------------------------------------------------------ stored dtypes


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_save_in_a_dtype_and_load(tmp_path, dtype):
    """Stored in ``dtype``, loaded back exactly: each weight is its float32 value rounded once."""
    from minillm.storage.safetensors_file import stored_dtypes

    model = minillm.T5.init(tiny_config("gated-gelu"), np.random.default_rng(3))
    model.save_pretrained(tmp_path, dtype=dtype)
    kind = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64"}[dtype]
    assert set(stored_dtypes(tmp_path / "model.safetensors").values()) == {kind}
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == dtype
    again = minillm.from_pretrained(tmp_path)
    assert again.dtype == np.float32
    for k, w in model.params.items():
        if dtype == "bfloat16":  # the top 16 bits of the float32, rounded to nearest even
            bits = w.view(np.uint32).astype(np.uint64)
            expected = (((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16).astype(np.uint32)
            assert np.array_equal(again.params[k].view(np.uint32), expected), k
        else:
            assert np.array_equal(again.params[k], w.astype(dtype).astype(np.float32)), k
    assert minillm.from_pretrained(tmp_path, dtype="float64").dtype == np.float64


def test_save_dtype_is_checked(tmp_path):
    model = minillm.T5.init(tiny_config("relu"), np.random.default_rng(0))
    with pytest.raises(ValueError, match="save dtype 'int8' is not one of"):
        model.save_pretrained(tmp_path, dtype="int8")
    assert not (tmp_path / "model.safetensors").exists()


# ------------------------------------------------------------------ sharded folders


def _shard(folder, shards: dict[str, list[str]], weight_map=None):
    """Rewrite model.safetensors as the shards named (file -> tensor names) and their index."""
    from safetensors.numpy import load_file, save_file

    t = load_file(folder / "model.safetensors")
    os.remove(folder / "model.safetensors")
    for name, keys in shards.items():
        save_file({k: t[k] for k in keys}, folder / name)
    if weight_map is None:
        weight_map = {k: name for name, keys in shards.items() for k in keys}
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return t


def _halves(folder):
    names = sorted(minillm.from_pretrained(folder).params)
    return {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}


def test_sharded_folder_loads(folder):
    model = minillm.from_pretrained(folder)
    _shard(folder, _halves(folder))
    again = minillm.from_pretrained(folder)
    assert all(np.array_equal(again.params[k], model.params[k]) for k in model.params)


@pytest.mark.parametrize("edit, message", [
    (lambda wm, a, b: wm.update({a[0]: "../outside.safetensors"}),
     r"weight_map\[.*\] = '../outside.safetensors' is not a .safetensors file name in the folder"),
    (lambda wm, a, b: wm.update({a[0]: "/tmp/x.safetensors"}), "is not a .safetensors file"),
    (lambda wm, a, b: wm.update({a[0]: "model.bin"}), "is not a .safetensors file"),
    (lambda wm, a, b: wm.update({a[0]: 3}), "is not a .safetensors file"),
    (lambda wm, a, b: wm.update({a[0]: "model-00002-of-00002.safetensors"}),
     "model-00001-of-00002.safetensors: holds tensor .*, but the index puts it in model-00002"),
    (lambda wm, a, b: wm.pop(a[0]), "holds tensor .*, but the index does not list it"),
    (lambda wm, a, b: wm.update({"encoder.extra.weight": "model-00001-of-00002.safetensors"}),
     "tensor encoder.extra.weight is not in model-00001-of-00002.safetensors, its shard"),
    (lambda wm, a, b: wm.update({k: "model-00003-of-00003.safetensors" for k in a}),
     "model-00003-of-00003.safetensors: missing .named by .*model.safetensors.index.json"),
    (lambda wm, a, b: wm.clear(), "weight_map is empty"),
])
def test_bad_index_is_named(folder, edit, message):
    shards = _halves(folder)
    a, b = shards.values()
    weight_map = {k: name for name, keys in shards.items() for k in keys}
    edit(weight_map, a, b)
    _shard(folder, shards, weight_map)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as e:
        minillm.from_pretrained(folder)
    assert "\n" not in str(e.value)


def test_tensor_in_two_shards_is_refused(folder):
    from safetensors.numpy import load_file, save_file

    shards = _halves(folder)
    _shard(folder, shards)
    one, two = (folder / n for n in shards)
    t = load_file(two)
    save_file({**t, **load_file(one)}, two)  # two holds one's tensors too
    with pytest.raises(ValueError, match="model-00002-of-00002.safetensors: holds tensor .*the index "
                                         "puts it in model-00001"):
        minillm.from_pretrained(folder)


def test_index_not_an_index(folder):
    _shard(folder, _halves(folder))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weights": {}}))
    with pytest.raises(ValueError, match="model.safetensors.index.json: not a safetensors index"):
        minillm.from_pretrained(folder)


def test_pickle_only_folder_says_how_to_convert(folder):
    os.remove(folder / "model.safetensors")
    (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not read")
    with pytest.raises(FileNotFoundError) as e:
        minillm.from_pretrained(folder)
    message = str(e.value)
    assert "pytorch_model.bin only" in message and "never pickle" in message and "\n" not in message
    assert (f"M.from_pretrained('{folder}').save_pretrained('{folder}', safe_serialization=True)"
            in message)


# ------------------------------------------------------------------ --save-dtype of the trainers


def test_save_dtype_stores_best_and_leaves_the_checkpoint(tmp_path):
    """best/ in the save dtype when the call returns; the last checkpoint in the training dtype."""
    from minillm.storage.safetensors_file import stored_dtypes
    from minillm.workflows import RLSettings, TrainSettings, rl, train
    from tests.conftest import start_folder

    start = start_folder(tmp_path / "start", ["sort_words"])
    notes = []
    common = dict(init=str(start), out=str(tmp_path / "sft"), steps=2, n_train=16, n_eval=4,
                  batch_size=4, eval_every=0, no_progress=True, no_plot=True, save_dtype="bfloat16")
    first = train(TrainSettings(**common, stop_after=1), log=notes.append)
    assert first.stopped_early and first.best is None
    assert any("no best/ yet" in n for n in notes)
    done = train(TrainSettings(**{**common, "init": None}, resume=True), log=notes.append)
    assert done.best is not None
    assert set(stored_dtypes(tmp_path / "sft" / "best" / "model.safetensors").values()) == {"BF16"}
    assert set(stored_dtypes(tmp_path / "sft" / "model.safetensors").values()) == {"F32"}
    best = minillm.from_pretrained(tmp_path / "sft" / "best")
    last = minillm.from_pretrained(tmp_path / "sft")
    assert done.best["step"] == done.step == 2  # so best/ holds the last model, rounded
    for k, w in last.params.items():
        assert np.array_equal(best.params[k].view(np.uint32) & 0xFFFF, np.zeros(w.shape, np.uint32))
        assert np.abs(best.params[k] - w).max() <= np.abs(w).max() * 2.0**-8

    out = rl(RLSettings(dir=str(start), out=str(tmp_path / "rl"), tasks="sort_words", steps=1,
                        n_train=8, n_eval=4, batch_size=2, k=2, max_new_tokens=3, eval_every=0,
                        no_progress=True, save_dtype="float16"), log=notes.append)
    assert out.best is not None
    assert set(stored_dtypes(tmp_path / "rl" / "best" / "model.safetensors").values()) == {"F16"}
    assert set(stored_dtypes(tmp_path / "rl" / "reference" / "model.safetensors").values()) == {"F32"}
    assert set(stored_dtypes(tmp_path / "rl" / "model.safetensors").values()) == {"F32"}


def test_save_dtype_is_refused_before_the_folder_is_touched(tmp_path):
    from minillm.workflows import RLSettings, TrainSettings, rl, train

    with pytest.raises(ValueError, match="--save-dtype must be one of float32, float16, bfloat16"):
        train(TrainSettings(out=str(tmp_path / "a"), save_dtype="float8"))
    with pytest.raises(ValueError, match="--save-dtype must be one of"):
        rl(RLSettings(dir=str(tmp_path), out=str(tmp_path / "b"), save_dtype="int4"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
