"""Every bad input of issue 13's list ends in one line on stderr and exit 2, nothing changed.

Each case runs ``minillm.cli.main`` in-process on a copy of a tiny run folder (made
once), asserts the exit code, that stderr is exactly one line saying what is wrong,
and that every file inside and beside the folder is byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest

import minillm
from minillm.cli import main
from minillm.config import T5Config
from tests.conftest import folder_digest


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bad") / "run")
    assert main(["train", "--preset", "tiny", "--steps", "4", "--stop-after", "2", "--out", out,
                 "--no-progress", "--no-plot"]) == 0
    return out


@pytest.fixture
def work(run_dir, tmp_path):
    """(a copy of the run folder, the tmp folder around it)."""
    out = str(tmp_path / "run")
    shutil.copytree(run_dir, out)
    return out, str(tmp_path)


def refused(capsys, where: str, argv: list[str], *expect: str) -> str:
    """Run ``argv``: exit 2, one stderr line holding each of ``expect``, ``where`` unchanged."""
    before = folder_digest(where)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1, err
    for e in expect:
        assert e in err[0], err
    assert folder_digest(where) == before
    return err[0]


def edit_json(path: str, **changes) -> None:
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    d.update(changes)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f)


# ------------------------------------------------------------------ files of a run folder


@pytest.mark.parametrize("name", ["optimizer.safetensors", "tokenizer.json", "config.json",
                                  "model.safetensors"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_file_is_one_line_naming_it(capsys, work, name, damage):
    out, parent = work
    path = os.path.join(out, name)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3] if damage == "truncated" else b"\x00\xff garbage" * 10)
    refused(capsys, parent, ["train", "--out", out, "--resume", "--no-progress"], path)


def test_a_moment_of_the_wrong_shape_or_not_finite_is_refused(capsys, work):
    from safetensors.numpy import load_file, save_file

    out, parent = work
    path = os.path.join(out, "optimizer.safetensors")
    arrays = load_file(path)
    name = sorted(arrays)[0]
    save_file({**arrays, name: np.full_like(arrays[name], np.nan)}, path)
    refused(capsys, parent, ["train", "--out", out, "--resume"], path, name, "not finite")
    save_file({**arrays, name: arrays[name].ravel()[:3].copy()}, path)
    refused(capsys, parent, ["train", "--out", out, "--resume"], path, name, "shape")
    save_file({k: v for k, v in arrays.items() if k != name}, path)
    refused(capsys, parent, ["train", "--out", out, "--resume"], path, "missing moment")
    save_file({**arrays, "m.extra": arrays[name]}, path)
    refused(capsys, parent, ["train", "--out", out, "--resume"], path, "unknown tensor")


def test_a_config_too_large_for_the_machine_is_refused_at_once(capsys, work):
    out, parent = work
    edit_json(os.path.join(out, "config.json"), num_layers=10_000_000)
    refused(capsys, parent, ["train", "--out", out, "--resume"], "config.json", "do not fit")
    refused(capsys, parent, ["generate", out, "hi"], "config.json", "do not fit")


@pytest.mark.parametrize("field, value", [("d_model", 0), ("feed_forward_proj", "swish-x"),
                                          ("layer_norm_epsilon", "abc"), ("initializer_factor", -1),
                                          ("tie_word_embeddings", "yes"), ("num_heads", 2.5)])
def test_a_config_field_of_the_wrong_type_or_range_is_one_line(capsys, work, field, value):
    out, parent = work
    edit_json(os.path.join(out, "config.json"), **{field: value})
    refused(capsys, parent, ["generate", out, "hi"], "config.json", field)


def test_the_parameter_count_is_the_model_s():
    for kw in ({}, {"tie_word_embeddings": False}, {"feed_forward_proj": "gated-gelu",
                                                     "num_decoder_layers": 3}):
        cfg = T5Config(vocab_size=50, d_model=8, d_kv=4, num_heads=3, d_ff=16, num_layers=2, **kw)
        model = minillm.T5.init(cfg, np.random.default_rng(0))
        assert cfg.num_parameters() == sum(v.size for v in model.params.values())


@pytest.mark.parametrize("changes, field", [({"max_new_tokens": "abc"}, "max_new_tokens"),
                                            ({"do_sample": "yes"}, "do_sample"),
                                            ({"eos_token_id": [1, "x"]}, "eos_token_id")])
def test_generation_config_is_read_with_its_types(capsys, work, changes, field):
    out, parent = work
    edit_json(os.path.join(out, "generation_config.json"), **changes)
    refused(capsys, parent, ["generate", out, "hi"], "generation_config.json", field)


@pytest.mark.parametrize("text", ["[" * 100_000, '{"max_new_tokens": NaN}'])
def test_generation_config_nesting_and_nan_are_one_line(capsys, work, text):
    out, parent = work
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        f.write(text)
    refused(capsys, parent, ["generate", out, "hi"], "generation_config.json")


# ------------------------------------------------------------------ the command line


def test_max_new_tokens_beyond_the_bound_is_refused_before_any_buffer(capsys, work):
    out, parent = work
    refused(capsys, parent, ["generate", out, "hi", "--max-new-tokens", "1000000000"],
            "max_new_tokens must be at most")


def test_a_long_prompt_is_truncated_with_a_count(capsys, work):
    out, parent = work
    before = folder_digest(parent)
    capsys.readouterr()
    assert main(["generate", out, " ".join(["word"] * 20_000), "--max-new-tokens", "2"]) == 0
    captured = capsys.readouterr()
    assert "truncated 1 of 1 prompts to --max-source-len 512 tokens" in captured.err
    assert len(captured.out.splitlines()) == 1
    assert folder_digest(parent) == before


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_epochs_inf_is_one_line(capsys, tmp_path, value):
    refused(capsys, str(tmp_path), ["train", "--preset", "tiny", f"--epochs={value}",
                                    "--out", str(tmp_path / "r")], "--epochs", "finite")
    assert not (tmp_path / "r").exists()


def test_out_naming_a_file_is_one_line(capsys, tmp_path):
    f = tmp_path / "a_file"
    f.write_text("keep me")
    refused(capsys, str(tmp_path), ["train", "--preset", "tiny", "--steps", "1", "--out", str(f)],
            str(f))


def test_eval_predictions_naming_a_folder_is_one_line(capsys, work):
    out, parent = work
    refused(capsys, parent, ["eval", out, "--n", "2", "--predictions", parent], "--predictions",
            "a folder")


def test_eval_batch_size_zero_is_one_line(capsys, work):
    out, parent = work
    refused(capsys, parent, ["eval", out, "--batch-size", "0"], "--batch-size must be positive")


def test_a_reward_module_that_fails_at_import_is_one_line(capsys, work, monkeypatch):
    out, parent = work
    with open(os.path.join(parent, "badreward.py"), "w") as f:
        f.write("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(parent)
    data = os.path.join(parent, "d.jsonl")
    with open(data, "w") as f:
        f.write(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    refused(capsys, parent, ["rl", out, "--reward", "badreward:score", "--data", data, "--out",
                             os.path.join(parent, "rl")], "badreward", "boom at import")


def test_non_utf8_bytes_in_a_jsonl_name_the_file_and_line(capsys, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "a\xff", "output": "b"}\n')
    refused(capsys, str(tmp_path), ["train", "--preset", "tiny", "--data", str(data), "--out",
                                    str(tmp_path / "r")], str(data), "line 2", "UTF-8")


def test_deeply_nested_json_in_a_jsonl_is_one_line(capsys, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    refused(capsys, str(tmp_path), ["train", "--preset", "tiny", "--data", str(data), "--out",
                                    str(tmp_path / "r")], str(data), "line 1", "nested too deeply")


def test_invalid_utf8_on_the_command_line_is_one_line(capsys, tmp_path):
    bad = os.fsdecode(b"\xff")
    refused(capsys, str(tmp_path), ["train", "--preset", "tiny", "--out",
                                    str(tmp_path / bad)], "argument 5", "not valid UTF-8")


def test_metrics_jsonl_is_readable_by_all_like_the_rest(run_dir):
    for name in ("metrics.jsonl", "trainer_state.json", "model.safetensors"):
        assert stat.S_IMODE(os.stat(os.path.join(run_dir, name)).st_mode) == 0o644, name
