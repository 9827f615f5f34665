"""minillm eval of a run folder: the run's own held-out examples and limits, so one number per model.

The expected figures are the trainer's: the final_eval record of the run's
metrics.jsonl and the TrainResult, never a second call of minillm eval.
"""

from __future__ import annotations

import json
import random

import pytest

from minillm.cli import main
from minillm.parallel import quiet
from minillm.runfolder.metrics import read_metrics
from minillm.workflows import EvalSettings, TrainSettings, evaluate, train

QUIET = dict(no_progress=True, no_plot=True)


def easy_data(path, n: int = 800) -> None:
    """Two tasks a tiny model learns in part in 250 steps: "yes" (always "yes") and "copy"."""
    r = random.Random(0)
    words = "apple river stone cloud green tiger lemon piano".split()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            w, v = r.choice(words), r.choice(words)
            row = ({"prompt": f"Say yes. {w} {v}", "completion": "yes", "task": "yes"} if i % 2 else
                   {"prompt": f"Copy the second word. {w} {v}", "completion": v, "task": "copy"})
            f.write(json.dumps(row) + "\n")


@pytest.fixture(scope="module")
def builtin_run(tmp_path_factory):
    """A finished tiny run on the built-in suite (36 held-out prompts): (folder, TrainResult)."""
    out = tmp_path_factory.mktemp("evrun") / "sft"
    return out, train(TrainSettings(preset="tiny", out=str(out), **QUIET), log=quiet)


@pytest.fixture(scope="module")
def data_run(tmp_path_factory):
    """A finished tiny run on a --data file (its 5% held out), with exact match strictly in (0, 1)."""
    root = tmp_path_factory.mktemp("evdata")
    easy_data(root / "easy.jsonl")
    out = root / "sft"
    result = train(TrainSettings(preset="tiny", data=str(root / "easy.jsonl"), steps=250,
                                 out=str(out), **QUIET), log=quiet)
    return out, result


def final_record(out) -> dict:
    (rec,) = [r for r in read_metrics(str(out / "metrics.jsonl")) if r["kind"] == "final_eval"]
    return rec


def assert_is_the_final_eval(got: dict, out, result) -> None:
    rec = final_record(out)
    assert got["data"] == "run:heldout"
    assert got["n"] == rec["n"] == result.final_eval["n"]
    assert got["exact_match"] == rec["exact_match"] == result.final_eval["exact_match"]
    assert {t: r["exact_match"] for t, r in got["per_task"].items()} == rec["per_task"]
    assert {t: r["n"] for t, r in got["per_task"].items()} == \
        {t: r["n"] for t, r in result.final_eval["per_task"].items()}
    assert got["loss"] == pytest.approx(rec["loss"], rel=1e-6)
    assert got["run"] == {"folder": str(out), "kind": "sft", "step": result.step}


def test_eval_of_a_builtin_run_is_its_final_eval(builtin_run, tmp_path):
    out, result = builtin_run
    preds = tmp_path / "p.jsonl"
    got = evaluate(EvalSettings(dir=str(out), predictions=str(preds), no_progress=True))
    assert_is_the_final_eval(got, out, result)
    assert got["n"] == 36  # the tiny preset's n_eval, not eval's plain 500
    # the same prompts, decoded to the same outputs (a tiny model's outputs are far from unique)
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [{k: r[k] for k in ("prompt", "target", "output")} for r in rows[:3]] == \
        result.final_eval["samples"]
    # the run's limits: 64 prompt tokens, targets at 32, decoding 32 tokens, not eval's 256 / 64
    assert (got["max_source_len"], got["max_target_len"]) == (64, 32)
    assert got["decoding"]["max_new_tokens"] == 32


def test_eval_of_a_data_run_is_its_final_eval(data_run):
    out, result = data_run
    got = evaluate(EvalSettings(dir=str(out), no_progress=True))
    assert 0 < final_record(out)["exact_match"] < 1  # a figure that can disagree
    assert_is_the_final_eval(got, out, result)
    assert got["n"] == 40  # 5% of the 800 lines


def test_cli_prints_the_trainers_exact_match(data_run, capsys):
    out, _ = data_run
    assert main(["eval", str(out), "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    rec = final_record(out)
    assert printed["exact_match"] == rec["exact_match"] and printed["n"] == rec["n"]
    assert {t: r["exact_match"] for t, r in printed["per_task"].items()} == rec["per_task"]


def test_tasks_keeps_those_of_the_runs_held_out_examples(data_run, capsys):
    out, result = data_run
    got = evaluate(EvalSettings(dir=str(out), tasks=("copy",), no_progress=True))
    assert got["data"] == "run:heldout" and list(got["per_task"]) == ["copy"]
    assert got["n"] == result.final_eval["per_task"]["copy"]["n"]
    assert got["exact_match"] == final_record(out)["per_task"]["copy"]
    assert main(["eval", str(out), "--tasks", "qa", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "qa" in err[0] and "copy, yes" in err[0], err


def test_given_flags_override_the_runs(data_run, builtin_run):
    out, _ = data_run
    data = str(out.parent / "easy.jsonl")
    other = evaluate(EvalSettings(dir=str(out), data=data, no_progress=True))
    assert other["data"] == data and other["n"] == 800
    drawn = evaluate(EvalSettings(dir=str(builtin_run[0]), n=12, no_progress=True))
    assert drawn["data"] == "builtin:eval" and drawn["n"] == 12
    short = evaluate(EvalSettings(dir=str(out), max_source_len=4, max_new_tokens=2,
                                  no_progress=True))
    assert short["data"] == "run:heldout" and short["n"] == 40
    assert (short["max_source_len"], short["max_target_len"]) == (4, 2)
    assert short["truncated"]["sources"] == 40 and short["decoding"]["max_new_tokens"] == 2


def test_best_is_evaluated_on_the_runs_held_out_examples(data_run):
    out, result = data_run
    state = json.loads((out / "trainer_state.json").read_text())
    got = evaluate(EvalSettings(dir=str(out / "best"), no_progress=True))
    assert got["data"] == "run:heldout" and got["n"] == result.final_eval["n"]
    assert got["run"] == {"folder": str(out), "kind": "sft", "step": state["best"]["step"]}
    if state["best"]["step"] == result.step:  # best/ is the final model: the same figures
        assert got["exact_match"] == result.final_eval["exact_match"]


def test_a_changed_data_file_is_one_line_and_data_still_works(tmp_path, capsys):
    easy_data(tmp_path / "easy.jsonl", n=100)
    out = tmp_path / "sft"
    train(TrainSettings(preset="tiny", data=str(tmp_path / "easy.jsonl"), steps=2, out=str(out),
                        **QUIET), log=quiet)
    with open(tmp_path / "easy.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "Say yes.", "completion": "yes"}) + "\n")
    assert main(["eval", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "easy.jsonl") in err[0] and "--data" in err[0], err
    assert "changed" in err[0]
    assert main(["eval", str(out), "--data", str(tmp_path / "easy.jsonl"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 101


def test_a_plain_folder_keeps_the_plain_defaults(builtin_run, tmp_path):
    import shutil

    plain = tmp_path / "model"
    shutil.copytree(builtin_run[0] / "best", plain)  # a HF folder: no trainer state beside it
    got = evaluate(EvalSettings(dir=str(plain), max_new_tokens=2, no_progress=True))
    assert got["data"] == "builtin:eval" and got["n"] == 500 and "run" not in got
    assert (got["max_source_len"], got["max_target_len"]) == (256, 2)


def test_eval_of_an_rl_run_is_its_final_greedy_reward(data_run, tmp_path):
    """An rl run's held-out prompts and limits too; with the exact_match reward, the same figure."""
    from minillm.workflows import RLSettings, rl

    out, _ = data_run
    tuned = rl(RLSettings(dir=str(out), out=str(tmp_path / "rl"), data=str(out.parent / "easy.jsonl"),
                          reward="exact_match", steps=2, n_eval=30, no_progress=True),
               log=quiet)
    got = evaluate(EvalSettings(dir=str(tmp_path / "rl"), no_progress=True))
    assert got["data"] == "run:heldout" and got["n"] == tuned.final_eval["n"] == 30
    assert got["run"] == {"folder": str(tmp_path / "rl"), "kind": "rl", "step": 2}
    assert got["exact_match"] == tuned.final_eval["reward"]
    assert {t: r["exact_match"] for t, r in got["per_task"].items()} == tuned.final_eval["per_task"]
