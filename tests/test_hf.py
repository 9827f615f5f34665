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
    import safetensors.numpy

    before = (folder / "model.safetensors").read_bytes()
    model = minillm.T5.init(tiny_config("relu"), np.random.default_rng(9))

    def boom(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(folder)
    assert (folder / "model.safetensors").read_bytes() == before
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]
    minillm.from_pretrained(folder)
