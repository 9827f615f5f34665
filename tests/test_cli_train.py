"""``minillm train``: the tiny preset end to end, resume, and bad input that leaves a run folder intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import minillm
from minillm.cli import main
from tests.conftest import cuda_available, folder_digest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--preset", "tiny", "--no-progress", "--steps", "4", "--eval-every", "2", "--n-train", "64",
         "--n-eval", "9", "--no-plot"]




@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny run (built once; tests that damage nothing share it)."""
    out = tmp_path_factory.mktemp("run") / "sft"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    return out


def test_tiny_run_folder(run_dir, capsys):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
                 "optimizer.safetensors", "trainer_state.json", "metrics.jsonl"):
        assert (run_dir / name).exists(), name
    model = minillm.from_pretrained(run_dir)
    assert model.config.d_model == 32
    assert minillm.from_pretrained(run_dir / "best").config == model.config
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["run"]["preset"] == "tiny"
    final = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["kind"] == "final_eval" and len(final["per_task"]) == 9


def test_prints_per_task_exact_match(tmp_path, capsys):
    assert main(["train", *QUICK, "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "number_to_french" in out and "overall" in out
    last = [line for line in out.splitlines() if line.startswith("exact_match ")]
    assert len(last) == 1 and 0.0 <= float(last[0].split()[1]) <= 1.0


def test_resume_via_cli_is_bit_for_bit(tmp_path):
    args = ["train", "--preset", "tiny", "--no-progress", "--steps", "6", "--eval-every", "0",
            "--n-train", "48", "--n-eval", "9", "--grad-accum", "2", "--dropout", "0.2",
            "--no-plot"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--stop-after", "3"]) == 0
    assert json.loads((tmp_path / "b" / "trainer_state.json").read_text())["step"] == 3
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--no-progress",
                 "--no-plot"]) == 0
    a, b = minillm.from_pretrained(tmp_path / "a"), minillm.from_pretrained(tmp_path / "b")
    for k, v in a.params.items():
        np.testing.assert_array_equal(b.params[k], v, err_msg=k)


def test_device_cpu_is_the_default_run(run_dir, tmp_path):
    out = tmp_path / "cpu"
    assert main(["train", *QUICK, "--out", str(out), "--device", "cpu"]) == 0
    a, b = minillm.from_pretrained(run_dir), minillm.from_pretrained(out)
    for k, v in a.params.items():
        np.testing.assert_array_equal(b.params[k], v, err_msg=k)
    assert (out / "optimizer.safetensors").read_bytes() == (run_dir / "optimizer.safetensors").read_bytes()
    # the device is a setting of the invocation, not of the run
    assert "device" not in json.loads((out / "trainer_state.json").read_text())["train_config"]


@pytest.mark.skipif(cuda_available(), reason="CuPy and a GPU are available here")
def test_device_cuda_without_cupy_is_one_line_and_touches_nothing(run_dir, tmp_path, capsys):
    before = folder_digest(run_dir)
    new = tmp_path / "new"
    for args in (["--out", str(new)], ["--out", str(run_dir), "--overwrite"],
                 ["--out", str(run_dir), "--resume"]):
        assert main(["train", *QUICK, "--device", "cuda", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("minillm train: error: "), err
        assert "CuPy" in err[0] and "gpu extra" in err[0], err[0]
    assert not new.exists()
    assert folder_digest(run_dir) == before


def _records(folder):
    from minillm.runfolder.metrics import read_metrics

    return read_metrics(os.path.join(folder, "metrics.jsonl"))


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a GPU")
def test_train_on_cuda_matches_cpu_and_resumes_across_devices(tmp_path):
    """Steps 1-2 on one device, 3-4 resumed on the other: the losses agree to float32 rounding."""
    args = ["train", *QUICK, "--eval-every", "0"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*args, "--out", str(a), "--device", "cpu", "--stop-after", "2"]) == 0
    assert main(["train", "--out", str(a), "--resume", "--device", "cuda", "--no-progress",
                 "--no-plot"]) == 0
    assert main([*args, "--out", str(b), "--device", "cuda", "--stop-after", "2"]) == 0
    assert main(["train", "--out", str(b), "--resume", "--device", "cpu", "--no-progress",
                 "--no-plot"]) == 0
    ra, rb = _records(a), _records(b)
    assert [(r["step"], r["kind"]) for r in ra] == [(2, "train"), (4, "train"), (4, "final_eval")]
    assert [(r["step"], r["kind"]) for r in rb] == [(r["step"], r["kind"]) for r in ra]
    for x, y in zip(ra, rb, strict=True):
        assert np.isfinite(x["loss"]) and y["loss"] == pytest.approx(x["loss"], rel=1e-4), (x, y)
    # b's step-2 checkpoint, written from the GPU, was resumed on the CPU above
    state = json.loads((b / "trainer_state.json").read_text())
    assert state["step"] == 4 and minillm.from_pretrained(b).params["shared.weight"].dtype == np.float32


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = json.dumps({"instruction": "Say hi.", "input": "", "output": "hi"})


@pytest.mark.parametrize("lines, expect", [
    ([GOOD, '{"instruction": "x", "output": '], r"bad\.jsonl, line 2: malformed JSON"),
    ([GOOD, GOOD, json.dumps({"instruction": "x"})], r"bad\.jsonl, line 3: missing 'output'"),
    ([json.dumps({"instruction": "x", "output": 3})], r"line 1: 'output' must be a string"),
    ([json.dumps({"prompt": ["a"], "completion": "b"})], r"line 1: 'prompt' must be a string"),
    ([], r"bad\.jsonl: no examples"),
])
def test_bad_data_is_one_clear_line_and_the_run_folder_survives(run_dir, tmp_path, capsys,
                                                                lines, expect):
    import re

    bad = write(tmp_path / "bad.jsonl", lines)
    before = folder_digest(run_dir)
    for flag in ("--data", "--eval-data"):
        extra = [] if flag == "--data" else ["--data", str(write(tmp_path / "ok.jsonl", [GOOD] * 4))]
        rc = main(["train", *QUICK, "--out", str(run_dir), "--overwrite", flag, str(bad), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc != 0
        assert len(err) == 1 and err[0].startswith("minillm train: error: "), err
        assert re.search(expect, err[0]), err[0]
    assert folder_digest(run_dir) == before


def test_unknown_preset_lists_the_presets(run_dir, capsys):
    before = folder_digest(run_dir)
    assert main(["train", "--preset", "huge", "--out", str(run_dir), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'huge'" in err and "small" in err and "tiny" in err
    assert folder_digest(run_dir) == before


def test_vocab_too_small(run_dir, tmp_path, capsys):
    """--init a model whose embedding is smaller than its tokenizer."""
    from minillm.data.tokenizer import Tokenizer
    from minillm.runfolder import checkpoint as ckpt

    tok = Tokenizer.from_file(run_dir / "tokenizer.json")
    config = minillm.T5Config(vocab_size=10, d_model=8, d_kv=4, num_heads=2, d_ff=16, num_layers=1)
    ckpt.save_model(tmp_path / "init", minillm.T5.init(config, np.random.default_rng(0)), tok)
    before = folder_digest(run_dir)
    rc = main(["train", *QUICK, "--init", str(tmp_path / "init"), "--out", str(run_dir),
               "--overwrite"])
    err = capsys.readouterr().err
    assert rc != 0 and "vocab_size 10 does not cover the tokenizer" in err
    assert folder_digest(run_dir) == before


def test_existing_run_needs_resume_or_overwrite(run_dir, capsys):
    before = folder_digest(run_dir)
    assert main(["train", *QUICK, "--out", str(run_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert folder_digest(run_dir) == before


def test_init_fine_tunes_an_existing_folder(run_dir, tmp_path):
    out = tmp_path / "ft"
    assert main(["train", *QUICK, "--init", str(run_dir), "--out", str(out), "--steps", "2",
                 "--lr", "1e-4"]) == 0
    a, b = minillm.from_pretrained(run_dir), minillm.from_pretrained(out)
    assert a.config.d_model == b.config.d_model
    assert not np.array_equal(a.params["shared.weight"], b.params["shared.weight"])
    assert (out / "tokenizer.json").read_bytes() == (run_dir / "tokenizer.json").read_bytes()


def test_nan_stops_with_a_clear_message(tmp_path, capsys):
    out = tmp_path / "nan"
    rc = main(["train", *QUICK, "--out", str(out), "--lr", "1e30", "--steps", "6"])
    err = capsys.readouterr().err
    assert rc != 0 and "not finite" in err and "last good checkpoint" in err
    state = json.loads((out / "trainer_state.json").read_text())
    model = minillm.from_pretrained(out)
    assert state["step"] < 6 and all(np.isfinite(v).all() for v in model.params.values())


def test_subprocess_train_and_bad_input(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "sub"
    r = subprocess.run([sys.executable, "-m", "minillm", "train", *QUICK, "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "exact_match" in r.stdout
    before = folder_digest(out)
    bad = write(tmp_path / "bad.jsonl", [GOOD, "not json"])
    r = subprocess.run([sys.executable, "-m", "minillm", "train", "--data", str(bad),
                        "--out", str(out), "--overwrite"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("minillm train: error: ")
    assert "bad.jsonl, line 2" in r.stderr
    assert folder_digest(out) == before


def test_hf_snippet_example_runs_on_a_run_folder(run_dir):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "hf_snippet.py"), str(run_dir),
                        "Reverse the order of the words.\nred owl pen", "--max-new-tokens", "5"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("script", ["translation.py", "question_answering.py", "code_generation.py",
                                    "text_transformation.py"])
def test_application_examples_run(script, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), "--steps", "3",
                        "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "overall" in r.stdout and "->" in r.stdout
    assert minillm.from_pretrained(tmp_path / "run").config.d_model == 128


# What docs/main-job.md measured for the main job's recipe: held-out exact match overall and
# per task of the default suite, the lowest over seeds 0-2 (fresh clones at 517514a, 2026-12-06).
MAIN_JOB_OVERALL = 0.9833
MAIN_JOB_PER_TASK = {"code_expression": 1.00, "count_words": 1.00, "largest_number": 0.93,
                     "number_to_english": 0.99, "number_to_french": 1.00, "qa": 1.00,
                     "reverse_words": 0.98, "sort_words": 0.92, "uppercase": 1.00}


@pytest.mark.slow
def test_main_job(tmp_path):
    """THE MAIN JOB: ``minillm train`` with no arguments, as docs/main-job.md measures it.

    Seed 0 (the default) must do what the three measured seeds did at their lowest
    (MAIN_JOB_OVERALL, MAIN_JOB_PER_TASK, on the 900 held-out prompts of the default
    suite), train within the 10-minute ceiling, draw both pictures, write plain progress
    lines into a log (stderr is a pipe here: no carriage returns), and ``minillm eval
    runs/sft`` must print the same exact match.
    """
    import json
    import time

    from minillm.data.tasks import DEFAULT_SUITE

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "minillm", "train"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert "\r" not in r.stderr and len(r.stderr) < 50_000, r.stderr[-2000:]
    em = float([x for x in r.stdout.splitlines() if x.startswith("exact_match ")][0].split()[1])
    metrics = (tmp_path / "runs" / "sft" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in metrics]
    final = [rec for rec in records if rec.get("kind") == "final_eval"][-1]
    assert final["n"] == 900 and set(final["per_task"]) == set(DEFAULT_SUITE)
    assert em >= MAIN_JOB_OVERALL, r.stdout
    low = {t: v for t, v in final["per_task"].items() if v < MAIN_JOB_PER_TASK[t]}
    assert not low, (low, r.stdout)
    assert wall < 600, f"{wall:.0f} s"
    assert (tmp_path / "runs" / "sft" / "loss.svg").is_file()
    assert (tmp_path / "runs" / "sft" / "tasks.svg").is_file()
    e = subprocess.run([sys.executable, "-m", "minillm", "eval", "runs/sft", "--no-progress"],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert e.returncode == 0, e.stderr[-2000:]
    assert round(json.loads(e.stdout)["exact_match"], 4) == round(em, 4)
