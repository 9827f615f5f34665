"""A checkpoint is finite or not written: a run whose update goes NaN or inf stops with exit 1,
one line, and its last checkpoint and best/ as they were (finite, loadable, resumable)."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

import minillm
from minillm.cli import main
from minillm.runfolder import checkpoint as ckpt
from tests.conftest import folder_digest, start_folder

TASKS = ["reverse_words", "uppercase"]


def _finite(folder) -> bool:
    return all(np.isfinite(v).all() for v in minillm.from_pretrained(folder).params.values())


def _diverges(argv, capsys) -> str:
    """Run ``minillm ARGV``: exit 1, no warning, no traceback, one error line (returned)."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 1
    assert [str(w.message) for w in caught] == []
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert "Traceback" not in err and len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize("steps", [10, 1])
def test_train_lr_1e38_exits_1_keeping_a_finite_checkpoint(tmp_path, capsys, steps):
    """The issue's commands: before, step 1's inf weights were saved as the checkpoint and best/
    (and with --steps 1 the run exited 0)."""
    out = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--steps", str(steps), "--eval-every", "1", "--lr", "1e38",
            "--warmup-steps", "0", "--out", str(out), "--no-progress"]
    line = _diverges(argv, capsys)
    assert line.startswith("minillm train: error: step 1: after the update")
    assert "not finite" in line and "checkpoint (step 0)" in line and str(out) in line
    assert ckpt.read_state(out)["step"] == 0 and _finite(out)
    assert not (out / ckpt.BEST_DIR).exists()  # SFT evaluates first at step 1, which diverged
    _, _, opt_state, _ = ckpt.load_checkpoint(out)  # the checkpoint loads, moments and all
    assert all(np.isfinite(v).all() for v in opt_state["arrays"].values())
    # --resume loads it and takes step 1 again (the same lr: it diverges the same way), and
    # leaves every file of the folder as it was
    before = folder_digest(out)
    assert _diverges(["train", "--resume", "--out", str(out), "--no-progress"], capsys) == line
    assert folder_digest(out) == before


@pytest.fixture(scope="module")
def start_dir(tmp_path_factory):
    """A small starting model folder (random weights) with a tokenizer for two built-in tasks."""
    return start_folder(tmp_path_factory.mktemp("start") / "sft", TASKS)


def test_rl_lr_1e38_exits_1_keeping_a_finite_checkpoint_and_best(start_dir, tmp_path, capsys):
    """REINFORCE evaluates at step 0, so best/ exists before the diverging step: it stays finite."""
    out = tmp_path / "rl"
    argv = ["rl", str(start_dir), "--out", str(out), "--tasks", ",".join(TASKS), "--steps", "3",
            "--batch-size", "3", "--k", "2", "--n-train", "12", "--n-eval", "4",
            "--max-new-tokens", "5", "--eval-every", "1", "--no-progress", "--lr", "1e38",
            "--warmup-steps", "0"]
    line = _diverges(argv, capsys)
    assert line.startswith("minillm rl: error: step 1: after the update")
    assert "not finite" in line and "checkpoint (step 0)" in line
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] == 0 and state["best"]["step"] == 0
    for folder in (out, out / ckpt.BEST_DIR, out / "reference"):
        assert _finite(folder), folder
    before = folder_digest(out)
    assert _diverges(["rl", "--resume", "--out", str(out), "--no-progress"], capsys) == line
    assert folder_digest(out) == before


@pytest.mark.parametrize("flag,value,words", [
    ("--weight-decay", "nan", "weight_decay must be a finite number >= 0, got nan"),
    ("--position-bias-lr-scale", "inf", "position_bias_lr_scale must be a finite number > 0, got inf"),
    ("--lr", "nan", "lr must be .*, got nan"),  # (the workflow's own check may come first)
])
def test_train_refuses_a_non_finite_setting_in_one_line_touching_nothing(tmp_path, capsys, flag,
                                                                        value, words):
    (tmp_path / "keep.txt").write_text("x")
    before = folder_digest(tmp_path)
    assert main(["train", "--preset", "tiny", flag, value, "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(f"minillm train: error: .*{words}", lines[0]), lines
    assert folder_digest(tmp_path) == before and not (tmp_path / "run").exists()
