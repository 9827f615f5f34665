"""Hugging Face folders both ways with transformers: minillm writes, transformers loads, and back."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import minillm
from minillm.data.tokenizer import Tokenizer
from minillm.testing import rel_error
from tests.conftest import random_batch, tiny_config
from tests.reference.conftest import patch_t5_layernorm, torch_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VARIANTS = ["relu", "gated-gelu"]


def _torch_logits(tm, input_ids, mask, dec):
    with torch.no_grad():
        return tm(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(mask),
                  decoder_input_ids=torch.tensor(dec)).logits.numpy()


@pytest.mark.parametrize("variant", VARIANTS)
def test_minillm_to_transformers(variant, tmp_path, caplog):
    model = minillm.T5.init(tiny_config(variant), np.random.default_rng(0), dtype="float64")
    with caplog.at_level("WARNING"):
        tm = torch_model(model, tmp_path)
    messages = " ".join(r.getMessage() for r in caplog.records).lower()
    assert "newly initialized" not in messages and "missing" not in messages
    tied = tm.lm_head.weight.data_ptr() == tm.shared.weight.data_ptr()
    assert tied == (variant == "relu")
    input_ids, mask, labels = random_batch(np.random.default_rng(1), 64)
    dec = model.shift_right(labels)
    assert rel_error(model.logits(input_ids, dec, mask), _torch_logits(tm, input_ids, mask, dec)) < 1e-9


@pytest.mark.parametrize("variant", VARIANTS)
def test_transformers_to_minillm(variant, tmp_path):
    """A folder that transformers itself initialises and saves loads into minillm."""
    from transformers import T5Config, T5ForConditionalGeneration

    patch_t5_layernorm()
    cfg = tiny_config(variant).to_dict()
    torch.manual_seed(0)
    tm = T5ForConditionalGeneration(T5Config(**{k: v for k, v in cfg.items()
                                                if k not in ("architectures", "dtype")}))
    if variant != "relu":  # FLAN-T5 style: a separate LM head
        tm.lm_head.weight = torch.nn.Parameter(torch.randn_like(tm.shared.weight))
    tm = tm.double().eval()
    tm.save_pretrained(tmp_path)
    model = minillm.from_pretrained(tmp_path, dtype="float64")
    assert model.tied == (variant == "relu")
    input_ids, mask, labels = random_batch(np.random.default_rng(2), 64)
    dec = model.shift_right(labels)
    assert rel_error(model.logits(input_ids, dec, mask), _torch_logits(tm, input_ids, mask, dec)) < 1e-9
    # float32 load of the same folder
    model32 = minillm.from_pretrained(tmp_path)
    assert model32.dtype == np.float32
    np.testing.assert_allclose(model32.logits(input_ids, dec, mask),
                               _torch_logits(tm.float(), input_ids, mask, dec), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ stored dtypes and shards

TORCH_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}
# logits of the stored model against the float32 one it was rounded from (relative to their scale)
ROUNDING_TOLERANCE = {"float32": 1e-6, "float16": 5e-3, "bfloat16": 3e-2}


@pytest.mark.parametrize("dtype", list(TORCH_DTYPES))
@pytest.mark.parametrize("variant", VARIANTS)
def test_minillm_saves_each_dtype_for_transformers(variant, dtype, tmp_path):
    """transformers loads what minillm stored: in the stored dtype, each weight torch's own rounding of
    the float32 one; widened to float32, its logits equal minillm's on the same folder."""
    from transformers import T5ForConditionalGeneration

    model = minillm.T5.init(tiny_config(variant), np.random.default_rng(4))
    model.save_pretrained(tmp_path, dtype=dtype)
    native = T5ForConditionalGeneration.from_pretrained(tmp_path, dtype="auto")
    assert native.dtype == getattr(torch, dtype)
    state = native.state_dict()
    for k, w in model.params.items():
        assert torch.equal(state[k], torch.from_numpy(w).to(getattr(torch, dtype))), k

    tm = T5ForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32,
                                                    attn_implementation="eager").eval()
    again = minillm.from_pretrained(tmp_path)
    input_ids, mask, labels = random_batch(np.random.default_rng(5), 64)
    dec = again.shift_right(labels)
    ours = again.logits(input_ids, dec, mask)
    np.testing.assert_allclose(ours, _torch_logits(tm, input_ids, mask, dec), rtol=1e-4, atol=1e-5)
    assert rel_error(ours, model.logits(input_ids, dec, mask)) < ROUNDING_TOLERANCE[dtype]


def _transformers_model(variant, seed=0):
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = tiny_config(variant).to_dict()
    torch.manual_seed(seed)
    tm = T5ForConditionalGeneration(T5Config(**{k: v for k, v in cfg.items()
                                                if k not in ("architectures", "dtype")}))
    if variant != "relu":
        tm.lm_head.weight = torch.nn.Parameter(torch.randn_like(tm.shared.weight))
    return tm.eval()


@pytest.mark.parametrize("dtype, shard", [("bfloat16", None), ("float16", None), ("bfloat16", "8KB"),
                                          ("float32", "6KB")])
@pytest.mark.parametrize("variant", VARIANTS)
def test_transformers_saved_dtypes_and_shards_load(variant, dtype, shard, tmp_path):
    """Folders that transformers writes in bfloat16 / float16, whole or sharded, load into minillm with
    the logits transformers computes from the same folder (both widened to float64)."""
    from transformers import T5ForConditionalGeneration

    patch_t5_layernorm()
    tm = _transformers_model(variant).to(getattr(torch, dtype))
    tm.save_pretrained(tmp_path, **({"max_shard_size": shard} if shard else {}))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert ("model.safetensors.index.json" in files) == (shard is not None), files
    if shard:
        assert len([f for f in files if f.startswith("model-0")]) >= 2, files
    model = minillm.from_pretrained(tmp_path, dtype="float64")
    theirs = T5ForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float64,
                                                        attn_implementation="eager").eval()
    state = {k: v.to(getattr(torch, dtype)).to(torch.float64) for k, v in tm.state_dict().items()}
    for k, w in model.params.items():
        assert np.array_equal(w, state[k].numpy()), k  # widened exactly
    input_ids, mask, labels = random_batch(np.random.default_rng(6), 64)
    dec = model.shift_right(labels)
    assert rel_error(model.logits(input_ids, dec, mask), _torch_logits(theirs, input_ids, mask, dec)) < 1e-9


# ------------------------------------------------------------------ examples/finetune_flan_t5.py

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "finetune_flan_t5.py"


def _run_example(args):
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_flan_t5", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(args)


def _check_random_folder(folder, layers, d_model, vocab):
    """The folder transformers wrote: FLAN-T5's layout, loaded by minillm with transformers' logits."""
    from transformers import T5ForConditionalGeneration

    model = minillm.from_pretrained(folder)
    c = model.config
    assert (c.num_layers, c.num_decoder_layers, c.d_model, c.vocab_size) == (layers, layers, d_model, vocab)
    assert c.is_gated_act and not model.tied
    tm = T5ForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()
    assert model.num_parameters() == sum(p.numel() for p in tm.parameters())
    x = np.array([[5, 6, 7, 1]])
    np.testing.assert_allclose(model.logits(x, x[:, :3]), _torch_logits(tm, x, np.ones_like(x), x[:, :3]),
                               rtol=1e-4, atol=1e-4)
    return model


def test_finetune_example_on_a_random_folder_of_transformers(tmp_path, capsys):
    folder = tmp_path / "flan-tiny"
    assert _run_example(["--make-random-folder", str(folder), "--size", "tiny", "--out", str(tmp_path / "ft"),
                         "--steps", "2", "--batch-size", "4", "--max-new-tokens", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "fine-tuned 2 steps" in printed and "held-out: exact_match" in printed
    n = Tokenizer.from_file(folder / "tokenizer.json").vocab_size
    _check_random_folder(folder, 2, 32, (n // 128 + 1) * 128)


@pytest.mark.slow
def test_finetune_example_at_the_real_flan_t5_small_shape(tmp_path, capsys):
    """77M parameters (8+8 layers, d_model 512, 32128 rows): a few steps, evaluated, asked."""
    folder = tmp_path / "flan-t5-small"
    assert _run_example(["--make-random-folder", str(folder), "--out", str(tmp_path / "ft"), "--steps", "2",
                         "--batch-size", "4", "--max-source-len", "48", "--max-target-len", "16",
                         "--max-new-tokens", "8", "--save-dtype", "bfloat16", "--no-progress"]) == 0
    assert "fine-tuned 2 steps" in capsys.readouterr().out
    model = _check_random_folder(folder, 8, 512, 32128)
    assert model.num_parameters() == 76_961_152  # google/flan-t5-small's count
    assert minillm.from_pretrained(tmp_path / "ft" / "best").num_parameters() == 76_961_152
