"""``minillm pretrain``: span corruption on tiny text end to end; its step is SFT's step on corrupted
batches; resume bit for bit; data parallel as --grad-accum; bad input in one line; the folder is a
Hugging Face folder that ``minillm train --init`` and ``minillm generate`` take."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

import minillm
from minillm import seeds
from minillm.cli import main
from minillm.data.batching import epoch_order
from minillm.data.span_corruption import corrupt_batch, expanded_length
from minillm.optim import ScaledAdamW
from minillm.training.pretrain import Noise, PretrainTrainer
from minillm.training.sft import TrainConfig, TrainState, train_step
from tests.conftest import folder_digest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the a of to in is and for with by from on this that it as be are or an at which not "
         "return value list string file object path name module class function").split()


def paragraphs(n: int, seed: int) -> str:
    r = random.Random(seed)
    return "".join(" ".join(r.choice(WORDS) for _ in range(r.randint(15, 40))) + ".\n\n" for _ in range(n))


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    (folder / "train.txt").write_text(paragraphs(200, 0))
    (folder / "eval.txt").write_text(paragraphs(30, 1))
    return folder


def quick(texts) -> list[str]:
    return ["pretrain", "--text", str(texts / "train.txt"), "--eval-text", str(texts / "eval.txt"),
            "--preset", "tiny", "--vocab-size", "300", "--input-length", "32", "--steps", "6",
            "--batch-size", "4", "--eval-every", "3", "--dropout", "0.1", "--no-progress", "--no-plot"]


@pytest.fixture(scope="module")
def run_dir(texts, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "run"
    assert main([*quick(texts), "--out", str(out)]) == 0
    return out


def test_settings_have_one_field_per_flag_with_its_default():
    import argparse
    import dataclasses

    from minillm.cli import build_parser
    from minillm.workflows import PretrainSettings

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {a.dest: tuple(a.default) if isinstance(a.default, list) else a.default
             for a in action.choices["pretrain"]._actions if a.dest != "help"}
    assert flags == {f.name: f.default for f in dataclasses.fields(PretrainSettings)}


def test_tiny_pretraining_run_folder(run_dir, capsys):
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert state["kind"] == "pretrain" and state["step"] == 6
    run = state["run"]
    assert (run["raw_length"], run["target_length"]) == expanded_length(32, 0.15, 3.0) == (34, 8)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] in ("eval", "final_eval")]
    assert [r["step"] for r in evals] == [3, 6] and evals[-1]["n"] == run["n_eval"]
    assert all(np.isfinite(r["loss"]) and r["perplexity"] > 1 for r in evals)
    model = minillm.from_pretrained(run_dir)
    tok = minillm.data.tokenizer.Tokenizer.from_file(run_dir / "tokenizer.json")
    assert model.config.vocab_size == tok.vocab_size
    assert tok.token_to_id("<extra_id_0>") == tok.vocab_size - 1


def test_a_step_is_sft_s_step_on_a_span_corrupted_batch():
    """PretrainTrainer.step: the epoch's order, the (step, micro-batch) noise stream, train_step."""
    config = minillm.T5Config(vocab_size=60, d_model=16, d_kv=4, num_heads=2, d_ff=32, num_layers=1,
                              num_decoder_layers=1, dropout_rate=0.0, relative_attention_num_buckets=8)
    raw = np.random.default_rng(3).integers(3, 50, (10, 20))
    noise = Noise(0.15, 3.0, first_sentinel=59, eos_id=1)
    cfg = TrainConfig(steps=3, batch_size=4, grad_accum=2, lr=1e-2, warmup_steps=0, seed=5)
    model = minillm.T5.init(config, np.random.default_rng(0))
    twin = minillm.T5(config, {k: v.copy() for k, v in model.params.items()})
    trainer = PretrainTrainer(model, None, raw, noise, cfg, TrainState())
    trainer.step()
    order = epoch_order(np.zeros(10), 4, 5, 0, bucket=False, drop_last=True)  # 2 batches an epoch
    micro = [corrupt_batch(raw[order[k]], 0.15, 3.0, seeds.generator(5, "span_noise", 0, k), 59, 1)
             for k in range(2)]
    train_step(twin, ScaledAdamW.from_config(cfg), micro, 0, cfg, 3)
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, twin.params[k], err_msg=k)
    assert (trainer.state.epoch, trainer.state.batch_in_epoch) == (1, 0)


def test_resume_is_bit_for_bit(texts, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*quick(texts), "--out", str(a)]) == 0
    assert main([*quick(texts), "--out", str(b), "--stop-after", "4"]) == 0
    assert main(["pretrain", "--out", str(b), "--resume", "--no-progress", "--no-plot"]) == 0
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    def evals(run):  # (a stopped run also logs a train record at its stop)
        return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if r["kind"] != "train"]

    assert evals(a) == evals(b) and len(evals(a)) == 2


def test_the_folder_is_a_start_for_train_pretrain_and_generate(run_dir, texts, tmp_path, capsys):
    out = tmp_path / "sft"
    assert main(["train", "--init", str(run_dir), "--preset", "tiny", "--steps", "2", "--n-train", "32",
                 "--n-eval", "9", "--out", str(out), "--no-progress", "--no-plot"]) == 0
    assert (out / "tokenizer.json").read_bytes() == (run_dir / "tokenizer.json").read_bytes()
    more = tmp_path / "more"
    args = [a for a in quick(texts) if a not in ("--vocab-size", "300")]
    assert main([*args, "--init", str(run_dir), "--out", str(more), "--steps", "2"]) == 0
    assert (more / "tokenizer.json").read_bytes() == (run_dir / "tokenizer.json").read_bytes()
    a, b = minillm.from_pretrained(run_dir), minillm.from_pretrained(more)
    assert not np.array_equal(a.params["shared.weight"], b.params["shared.weight"])
    capsys.readouterr()
    assert main(["generate", str(run_dir), "the <extra_id_0> of a list", "--max-new-tokens", "4"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # one output for the one prompt


def refused(capsys, where, argv, *expect):
    """``argv`` exits 2 with one stderr line holding each of ``expect``; ``where`` is unchanged."""
    before = folder_digest(where)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minillm "), err
    for e in expect:
        assert e in err[0], err
    assert folder_digest(where) == before


@pytest.mark.parametrize("flags, expect", [
    (["--noise-density", "1.5"], "--noise-density"), (["--mean-span-length", "0.5"], "--mean-span-length"),
    (["--input-length", "2"], "--input-length"), (["--steps", "0"], "--steps must be positive"),
    (["--text", "missing.txt"], "missing.txt: no such file (--text)"),
    (["--input-length", "4000"], "needs 222 sentinels counting down from <extra_id_0>"),
    (["--input-length", "100000000"], "--input-length must be at most 65,536"),
    (["--steps", str(10**20)], "--steps must be at most"),
    (["--seed", str(10**20)], "--seed must be at most"),
    (["--text", "/dev/null"], "(--text)"),
])
def test_bad_settings_are_one_line_and_touch_nothing(run_dir, texts, capsys, flags, expect):
    refused(capsys, str(run_dir), [*quick(texts), "--out", str(run_dir), "--overwrite", *flags], expect)


def test_text_shorter_than_one_example_is_refused(run_dir, texts, tmp_path, capsys):
    (tmp_path / "short.txt").write_text("too short.\n")
    args = [*quick(texts), "--out", str(run_dir), "--overwrite"]
    args[args.index("--eval-text") + 1] = str(tmp_path / "short.txt")
    refused(capsys, str(run_dir), args, "the held-out text has", "fewer than one raw example of 34")


def test_contradictory_flags_are_one_line(run_dir, texts, capsys):
    base = [*quick(texts), "--out", str(run_dir), "--overwrite"]
    refused(capsys, str(run_dir), [*base, "--init", str(run_dir), "--tokenizer", "t.json"],
            "give --tokenizer or --init, not both")
    refused(capsys, str(run_dir), [*base, "--tokenizer", str(run_dir / "tokenizer.json")],
            "--vocab-size sizes the tokenizer a run trains; --tokenizer brings one")
    refused(capsys, str(run_dir), ["pretrain", "--out", str(run_dir), "--resume", "--overwrite"],
            "contradict")


def test_without_eval_text_one_document_in_ten_is_held_out(texts, tmp_path, capsys):
    import hashlib

    lines = [json.dumps({"text": p}) for p in paragraphs(200, 3).split("\n\n") if p]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    args = [a for a in quick(texts) if a not in ("--eval-text", str(texts / "eval.txt"))]
    args[args.index("--text") + 1] = str(tmp_path / "t.jsonl")
    assert main([*args, "--out", str(tmp_path / "run"), "--steps", "1"]) == 0
    held = [t for t in map(lambda x: json.loads(x)["text"], lines)
            if int(hashlib.sha256(t.encode()).hexdigest(), 16) % 10 == 0]
    assert 5 < len(held) < 40
    run = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["run"]
    assert run["eval_text"] is None and run["text"] == [str(tmp_path / "t.jsonl")] and run["n_eval"] >= 1
    (tmp_path / "one.txt").write_text("a single paragraph of text.\n")
    args[args.index("--text") + 1] = str(tmp_path / "one.txt")
    refused(capsys, str(tmp_path / "run"), [*args, "--out", str(tmp_path / "run"), "--overwrite"],
            "give --eval-text for the held-out text")


def test_a_tokenizer_without_sentinels_is_refused(run_dir, texts, tmp_path, capsys):
    from minillm.data.tokenizer import Tokenizer

    Tokenizer.train([paragraphs(20, 2)], vocab_size=120).save(tmp_path / "bpe.json")
    args = [a for a in quick(texts) if a not in ("--vocab-size", "300")]
    refused(capsys, str(run_dir), [*args, "--out", str(run_dir), "--overwrite", "--tokenizer",
                                   str(tmp_path / "bpe.json")], "no <extra_id_0>")


def test_runs_of_another_kind_are_not_resumed(run_dir, capsys):
    refused(capsys, str(run_dir), ["train", "--out", str(run_dir), "--resume"],
            "holds a minillm pretrain run, not a train run")


def test_changed_text_is_not_resumed(texts, tmp_path, capsys):
    shutil.copy(texts / "train.txt", tmp_path / "t.txt")
    out = tmp_path / "run"
    args = [*quick(texts), "--out", str(out), "--stop-after", "2"]
    args[args.index("--text") + 1] = str(tmp_path / "t.txt")
    assert main(args) == 0
    (tmp_path / "t.txt").write_text(paragraphs(200, 5))
    refused(capsys, str(out), ["pretrain", "--out", str(out), "--resume"], "changed since the run started")


_beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
MPIEXEC = _beside if os.path.exists(_beside) else shutil.which("mpiexec")


@pytest.mark.skipif(MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
                    reason="needs mpi4py and mpiexec (pip install -e '.[mpi]')")
def test_two_ranks_pretrain_as_grad_accum_two(texts, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*quick(texts), "--out", str(one), "--grad-accum", "2", "--threads", "1"]) == 0
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=ROOT)
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "minillm", *quick(texts), "--out", str(two)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
