"""trainer_state.json has a schema: a damaged state is refused in one line, or resumes bit for bit.

A tiny run stopped at step 2 (of 4) is made once; each case copies it, changes its
trainer_state.json, and resumes it in-process. A refusal is exit 2, one line on
stderr naming the file, and every file inside and beside the folder unchanged; an
accepted state must finish exactly as the uninterrupted run did.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minillm.cli import main
from tests.conftest import folder_digest

STATE = "trainer_state.json"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(a run stopped at step 2 of 4, the same run uninterrupted to step 4)."""
    root = tmp_path_factory.mktemp("schema")
    stopped, full = str(root / "stopped"), str(root / "full")
    common = ["--preset", "tiny", "--steps", "4", "--no-progress", "--no-plot"]
    assert main(["train", *common, "--stop-after", "2", "--out", stopped]) == 0
    assert main(["train", *common, "--out", full]) == 0
    return stopped, full


def resume_with(runs, capsys, state_text: str):
    """Resume a copy of the stopped run with ``state_text`` as its state: (rc, stderr lines, ok)."""
    stopped, full = runs
    capsys.readouterr()
    with tempfile.TemporaryDirectory() as parent:
        out = os.path.join(parent, "run")
        shutil.copytree(stopped, out)
        with open(os.path.join(out, STATE), "w", encoding="utf-8") as f:
            f.write(state_text)
        before = folder_digest(parent)
        rc = main(["train", "--out", out, "--resume", "--no-progress", "--no-plot"])
        err = capsys.readouterr().err.strip().splitlines()
        if rc == 2:
            assert len(err) == 1, err
            assert os.path.join(out, STATE) in err[0], err
            assert folder_digest(parent) == before, "a refused resume changed a file"
        else:
            assert rc == 0, err
            after, want = folder_digest(out), folder_digest(full)
            for name in ("model.safetensors", "optimizer.safetensors"):
                assert after[name] == want[name], f"{name} differs from the uninterrupted run"
        return rc, err


def saved_state(runs) -> dict:
    with open(os.path.join(runs[0], STATE), encoding="utf-8") as f:
        return json.load(f)


def leaves(d, prefix=()):
    """(path, value) of every key of a nested JSON object (objects themselves included)."""
    for k, v in d.items():
        yield (*prefix, k), v
        if isinstance(v, dict):
            yield from leaves(v, (*prefix, k))


def bad_values(v):
    """Values of another type or out of range for a leaf like ``v``."""
    common = ["abc", None, [], {}, True]
    if isinstance(v, bool):
        return ["abc", None, 2]
    if isinstance(v, int):
        return [*common, 20.5, math.nan, math.inf, -1, -5, 2**200]
    if isinstance(v, float):
        return [*common, math.nan, math.inf, -math.inf]
    if isinstance(v, str):
        return [123, None, "", "object", [], {}]
    if v is None:
        return ["abc", -1, 20.5, math.nan, []]
    return [None, "abc", 5, []]


@st.composite
def mutations(draw, state: dict):
    """A copy of ``state`` with one leaf replaced, deleted, or a key added beside it."""
    paths = sorted(leaves(state), key=lambda pv: pv[0])
    path, value = draw(st.sampled_from(paths))
    op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    new = json.loads(json.dumps(state))
    parent = new
    for k in path[:-1]:
        parent = parent[k]
    if op == "replace":
        parent[path[-1]] = draw(st.sampled_from(bad_values(value)))
    elif op == "delete":
        del parent[path[-1]]
    else:
        parent["unexpected"] = 1
    return path, op, json.dumps(new, indent=2)


def test_the_run_resumes_bit_for_bit_unchanged(runs, capsys):
    rc, _ = resume_with(runs, capsys, json.dumps(saved_state(runs), indent=2))
    assert rc == 0


@pytest.mark.parametrize("path, value, field", [
    (("step",), "abc", "step: expected an integer"),
    (("step",), 20.5, "step: expected an integer"),
    (("step",), -5, "step: expected an integer"),
    (("step",), math.nan, "NaN"),
    (("optimizer_t",), -1, "optimizer_t"),
    (("dtype",), "object", "dtype"),
    (("train_config", "betas"), "ab", "train_config.betas"),
    (("train_config", "weight_decay"), "abc", "train_config.weight_decay"),
    (("rng_state",), {"bit_generator": "test", "state": {"state": 1, "inc": 1}, "has_uint32": 0,
                      "uinteger": 0}, "rng_state.bit_generator"),
    (("epoch",), 1, "epoch, batch_in_epoch"),
    (("best",), {"step": 99, "exact_match": 1.0}, "best.step"),
])
def test_the_issue_s_states_are_refused_in_one_line(runs, capsys, path, value, field):
    state = saved_state(runs)
    parent = state
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    rc, err = resume_with(runs, capsys, json.dumps(state))
    assert rc == 2 and field in err[0], err


def test_missing_and_unknown_keys_are_refused(runs, capsys):
    state = saved_state(runs)
    del state["best"]
    rc, err = resume_with(runs, capsys, json.dumps(state))
    assert rc == 2 and "missing key(s) best" in err[0]
    state = {**saved_state(runs), "pwn": "shutil:rmtree"}
    rc, err = resume_with(runs, capsys, json.dumps(state))
    assert rc == 2 and "unknown key(s) pwn" in err[0]


def test_garbage_state_files_are_one_line(runs, capsys):
    for text in ("{", "[" * 100_000, "\udcff", "[]", '{"format": "minillm-trainer-state"}'):
        rc, err = resume_with(runs, capsys, text.encode("utf-8", "surrogateescape")
                              .decode("utf-8", "replace"))
        assert rc == 2, (text[:10], err)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_every_mutation_is_refused_in_one_line_or_resumes_bit_for_bit(runs, capsys, data):
    path, op, text = data.draw(mutations(saved_state(runs)))
    resume_with(runs, capsys, text)


def test_a_data_file_run_s_position_is_checked_against_the_file(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"say {i}", "output": f"{i}"}) + "\n"
                            for i in range(40)))
    out = str(tmp_path / "run")
    assert main(["train", "--preset", "tiny", "--data", str(data), "--steps", "4", "--batch-size",
                 "4", "--stop-after", "2", "--out", out, "--no-progress", "--no-plot"]) == 0
    path = os.path.join(out, STATE)
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    assert (state["epoch"], state["batch_in_epoch"]) == (0, 2)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**state, "epoch": 1, "batch_in_epoch": 0}, f)  # within the bounds, not the data
    before = folder_digest(str(tmp_path))
    capsys.readouterr()
    assert main(["train", "--out", out, "--resume", "--no-progress", "--no-plot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and path in err[0] and "epoch, batch_in_epoch" in err[0], err
    assert folder_digest(str(tmp_path)) == before


def test_an_rl_state_is_checked_by_its_own_schema(runs):
    from minillm.runfolder import checkpoint as ckpt
    from minillm.runfolder.state_file import StateError, check_state
    from minillm.training import RLConfig, TrainConfig

    sft = saved_state(runs)
    run = {"start": "/tmp/start", "data": None, "eval_data": None, "tasks": ["qa"],
           "reward": "verify", "n_train": 64, "n_eval": 8, "seed": 0, "max_source_len": 64,
           "data_sha256": None, "eval_data_sha256": None}
    cfg = RLConfig(batch_size=4, steps=4).to_dict()
    state = {**{k: v for k, v in sft.items() if k != "train_config"}, "kind": "rl", "rl_config": cfg,
             "ema": None, "run": run, "epoch": 0, "batch_in_epoch": 2}
    path = os.path.join(runs[0], STATE)
    classes = {"train_config": TrainConfig, "rl_config": RLConfig}

    def check(s):
        return check_state(path, s, ckpt.STATE_FORMAT, ckpt.STATE_VERSION, classes)

    assert check(state) is state
    for bad, field in [({"ema": "abc"}, "ema"), ({"ema": math.inf}, "ema"),
                       ({"run": {**run, "tasks": [1]}}, "run.tasks"),
                       ({"run": {**run, "reward": None}}, "run.reward"),
                       ({"rl_config": {**cfg, "k": 1.5}}, "rl_config.k"),
                       ({"epoch": 1, "batch_in_epoch": 0}, "epoch, batch_in_epoch"),
                       ({"train_config": sft["train_config"]}, "unknown key(s) train_config")]:
        with pytest.raises(StateError, match=re.escape(field)):
            check({**state, **bad})


def test_the_run_s_instruction_dropout_is_checked(runs):
    from minillm.runfolder import checkpoint as ckpt
    from minillm.runfolder.state_file import StateError, check_state
    from minillm.training import RLConfig, TrainConfig

    state = saved_state(runs)
    path = os.path.join(runs[0], STATE)
    classes = {"train_config": TrainConfig, "rl_config": RLConfig}
    for ok in (None, 0.0, 0.15):
        s = {**state, "run": {**state["run"], "instruction_dropout": ok}}
        assert check_state(path, s, ckpt.STATE_FORMAT, ckpt.STATE_VERSION, classes) is s
    for bad in (1.0, -0.5, "0.1", True):
        s = {**state, "run": {**state["run"], "instruction_dropout": bad}}
        with pytest.raises(StateError, match=re.escape("run.instruction_dropout")):
            check_state(path, s, ckpt.STATE_FORMAT, ckpt.STATE_VERSION, classes)
