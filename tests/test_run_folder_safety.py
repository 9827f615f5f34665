"""A run folder is data, never code: crafted folders, a second process, kills between commits.

Every refusal here is checked for its exit status, its one line, and that every
file inside and outside the folder is byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import minillm
from minillm.cli import main
from minillm.runfolder import checkpoint as ckpt
from minillm.runfolder.lock import LOCK_NAME, FolderInUse, folder_lock
from tests.conftest import folder_digest, start_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
QUICK = ["--preset", "tiny", "--no-progress", "--steps", "4", "--eval-every", "2", "--n-train", "32",
         "--n-eval", "6", "--no-plot"]
TASKS = "reverse_words,uppercase"
RL_QUICK = ["--tasks", TASKS, "--steps", "4", "--batch-size", "3", "--k", "2", "--n-train", "12",
            "--n-eval", "4", "--max-new-tokens", "5", "--eval-every", "2", "--no-progress",
            "--lr", "1e-3", "--warmup-steps", "0"]


def one_error_line(capsys, command: str) -> str:
    """The one line a refused command wrote on stderr (notes before it are allowed)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith(f"minillm {command}: error: ")]
    assert len(errors) == 1 and errors[0] == err[-1], err
    return errors[0]


def digest(*folders) -> list[dict[str, str]]:
    """folder_digest of each folder, without the staging (which recovery may discard)."""
    return [{k: v for k, v in folder_digest(f).items() if ckpt.STAGING not in k.split(os.sep)}
            for f in folders]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """A finished tiny SFT run (copied by the tests that change it)."""
    out = tmp_path_factory.mktemp("sft") / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def start_dir(tmp_path_factory):
    """A small starting model folder (random weights) with a tokenizer for two built-in tasks."""
    return start_folder(tmp_path_factory.mktemp("start") / "hf", TASKS.split(","), 200)


@pytest.fixture()
def reward_module(tmp_path, monkeypatch):
    """A user reward ``myreward:score`` in the current folder, and a ``pwn.py`` that marks its import."""
    (tmp_path / "myreward.py").write_text("def score(prompt, output, reference):\n"
                                          "    return float(output.strip() == reference.strip())\n")
    (tmp_path / "pwn.py").write_text("open('PWNED', 'w').write('ran')\n"
                                     "def score(prompt, output, reference):\n    return 0.0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("myreward", "pwn"):
        sys.modules.pop(name, None)


def edit_state(folder, **run):
    """Set fields of ``run`` in the folder's trainer_state.json."""
    path = folder / ckpt.STATE_NAME
    state = json.loads(path.read_text())
    state["run"].update(run)
    path.write_text(json.dumps(state, indent=2))


# ----------------------------------------------------------------------- 1. resume reads data only


def test_resume_imports_no_reward_its_folder_names(start_dir, reward_module, capsys):
    """A state naming pwn:score or shutil:rmtree is refused; the user's own --reward is imported."""
    out = reward_module / "rl"
    assert main(["rl", str(start_dir), "--out", str(out), *RL_QUICK, "--reward", "myreward:score",
                 "--stop-after", "2"]) == 0
    capsys.readouterr()
    # resuming a user reward needs it on the command line again, and the same name
    before = digest(out, reward_module)
    assert main(["rl", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "pass --reward 'myreward:score'" in one_error_line(capsys, "rl")
    assert main(["rl", "--out", str(out), "--resume", "--no-progress", "--reward", "pwn:score"]) == 2
    assert "not 'pwn:score'" in one_error_line(capsys, "rl")
    assert digest(out, reward_module) == before
    # a crafted state: nothing it names is imported or called
    for crafted in ("pwn:score", "shutil:rmtree", "os:system"):
        edit_state(out, reward=crafted)
        before = digest(out, reward_module)
        assert main(["rl", "--out", str(out), "--resume", "--no-progress"]) == 2
        assert f"pass --reward {crafted!r}" in one_error_line(capsys, "rl")
        assert digest(out, reward_module) == before
        assert "pwn" not in sys.modules and not (reward_module / "PWNED").exists()
    # the reward given again on the command line: resumed
    edit_state(out, reward="myreward:score")
    assert main(["rl", "--out", str(out), "--resume", "--no-progress",
                 "--reward", "myreward:score"]) == 0
    assert ckpt.read_state(out)["step"] == 4


def test_resume_resolves_a_builtin_reward_from_the_table(start_dir, tmp_path, capsys, monkeypatch):
    from minillm.evaluation import rewards

    out = tmp_path / "rl"
    assert main(["rl", str(start_dir), "--out", str(out), *RL_QUICK, "--stop-after", "2"]) == 0
    capsys.readouterr()
    before = digest(out)
    assert main(["rl", "--out", str(out), "--resume", "--no-progress", "--reward", "bleu"]) == 2
    assert "tuned with --reward 'verify'" in one_error_line(capsys, "rl")
    assert digest(out) == before
    monkeypatch.setattr(rewards, "user_reward", lambda spec: pytest.fail(f"imported {spec}"))
    assert main(["rl", "--out", str(out), "--resume", "--no-progress"]) == 0


def test_resume_rereads_only_regular_data_files_with_their_digest(sft_run, tmp_path, capsys):
    """run.data is data too: a path that is no regular file, or not the digest's, is refused."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say {w}", "completion": w}) + "\n"
                            for w in ("red owl pen cat dog sun".split() * 4)))
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--data", str(data), "--out", str(out), "--stop-after", "2"]) == 0
    capsys.readouterr()
    sha = ckpt.read_state(out)["run"]["data_sha256"]
    for path, sha256, expect in [("/dev/zero", sha, "/dev/zero: not a regular file"),
                                 (str(tmp_path), sha, "not a regular file"),
                                 ("relative.jsonl", sha, "absolute path"),
                                 (str(data), None, "data_sha256"),
                                 (str(sft_run / "config.json"), sha, "changed since the run started")]:
        edit_state(out, data=path, data_sha256=sha256)
        before = digest(out, tmp_path)
        assert main(["train", "--out", str(out), "--resume", "--no-progress", "--no-plot"]) == 2
        line = one_error_line(capsys, "train")
        assert expect in line, line
        assert digest(out, tmp_path) == before


def test_a_crafted_bit_generator_is_one_line_and_runs_nothing(sft_run, tmp_path, capsys, monkeypatch):
    """``"bit_generator": "test"`` used to run NumPy's test suite."""
    out = tmp_path / "run"
    shutil.copytree(sft_run, out)
    path = out / ckpt.STATE_NAME
    state = json.loads(path.read_text())
    # the trainers save null (their streams are keyed by the step); a crafted state names one
    state["rng_state"] = {**np.random.default_rng(0).bit_generator.state, "bit_generator": "test"}
    path.write_text(json.dumps(state))
    monkeypatch.setattr(np.random, "test", lambda *a, **k: pytest.fail("ran numpy's tests"),
                        raising=False)
    before = digest(out)
    assert main(["train", "--out", str(out), "--resume", "--steps", "6", "--no-progress",
                 "--no-plot"]) == 2
    assert "bit_generator" in one_error_line(capsys, "train")
    assert digest(out) == before


# ----------------------------------------------------------------------- 2. the journal


def crafted_staging(folder, names, files=None):
    """``folder/.staging`` with ``files`` ({name: bytes}) and a COMMIT listing ``names``."""
    staging = folder / ckpt.STAGING
    staging.mkdir()
    for name, data in (files or {}).items():
        (staging / name).write_bytes(data)
    (staging / ckpt.COMMIT).write_text(json.dumps(names))
    return staging


BAD_NAMES = ["../victim.txt", "../outside/victim.txt", "/ABS/victim.txt", "sub/x", "..", ".", "",
             ".hidden", "a\0b", 7, None, ["x"]]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_journal_naming_anything_but_a_plain_file_is_discarded(sft_run, tmp_path, capsys, name):
    run, outside = tmp_path / "run", tmp_path / "outside"
    shutil.copytree(sft_run, run)
    outside.mkdir()
    (tmp_path / "victim.txt").write_text("the victim")
    (outside / "victim.txt").write_text("the victim")
    (run / "victim.txt").write_text("overwritten")  # what "../victim.txt" would move out
    if isinstance(name, str):
        name = name.replace("/ABS", str(outside))
    staging = crafted_staging(run, [name, "config.json"], {"config.json": b"{}"})
    before = digest(run, tmp_path)
    ckpt.recover(run)
    assert not staging.exists()
    assert digest(run, tmp_path) == before
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a plain file name" in err[0] and "discarded" in err[0], err


@pytest.mark.parametrize("kind", ["symlinked file", "staged folder", "names a folder",
                                  "symlinked staging", "symlinked COMMIT", "not a list",
                                  "symlinked best"])
def test_a_journal_never_follows_a_link_or_moves_a_folder(sft_run, tmp_path, capsys, kind):
    run, outside = tmp_path / "run", tmp_path / "outside"
    shutil.copytree(sft_run, run)
    outside.mkdir()
    (outside / "victim.txt").write_text("the victim")
    if kind == "symlinked file":
        staging = crafted_staging(run, ["model.safetensors"])
        os.symlink(outside / "victim.txt", staging / "model.safetensors")
    elif kind == "staged folder":
        staging = crafted_staging(run, ["extra"])
        (staging / "extra").mkdir()
    elif kind == "names a folder":
        staging = crafted_staging(run, ["best"], {"best": b"a file over best/"})
    elif kind == "symlinked staging":
        (outside / ckpt.COMMIT).write_text(json.dumps(["victim.txt"]))
        os.symlink(outside, run / ckpt.STAGING)
        staging = run / ckpt.STAGING
    elif kind == "symlinked COMMIT":
        staging = run / ckpt.STAGING
        staging.mkdir()
        (outside / "list").write_text(json.dumps(["victim.txt"]))
        os.symlink(outside / "list", staging / ckpt.COMMIT)
    elif kind == "not a list":
        staging = crafted_staging(run, {"victim.txt": 1}, {"victim.txt": b"x"})
    else:  # best/ is a link out of the folder, holding a committed staging
        shutil.rmtree(run / ckpt.BEST_DIR)
        os.symlink(outside, run / ckpt.BEST_DIR)
        staging = crafted_staging(outside, ["victim.txt"], {"victim.txt": b"overwritten"})
    before = digest(run, tmp_path)
    ckpt.recover(run)
    after = digest(run, tmp_path)
    if kind == "symlinked best":  # never entered: its staging stays where it is, untouched
        assert after == before and (outside / ckpt.STAGING / "victim.txt").read_bytes() == b"overwritten"
        return
    assert not os.path.lexists(staging) and after == before
    assert (outside / "victim.txt").read_text() == "the victim"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("minillm: "), err


def test_the_cli_recovers_a_crafted_journal_without_touching_anything_outside(sft_run, tmp_path,
                                                                               capsys):
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    (tmp_path / "victim.txt").write_text("the victim")
    (run / "victim.txt").write_text("overwritten")
    crafted_staging(run, ["../victim.txt"], {"config.json": b"{}"})
    before, everything = digest(run, tmp_path), folder_digest(tmp_path)
    assert main(["train", *QUICK, "--out", str(run)]) == 2  # refused before any recovery
    assert "already holds a run" in one_error_line(capsys, "train")
    assert folder_digest(tmp_path) == everything
    assert main(["train", "--out", str(run), "--resume", "--no-progress", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert "not a plain file name" in err and "already reached step 4" in err
    assert not (run / ckpt.STAGING).exists()
    assert digest(run, tmp_path) == before
    assert (tmp_path / "victim.txt").read_text() == "the victim"


# ----------------------------------------------------------------------- 5. one process per folder


def test_a_held_folder_refuses_a_second_run_naming_the_holder(sft_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    new = tmp_path / "new"
    before = digest(run)
    with folder_lock(run):
        with pytest.raises(FolderInUse):
            with folder_lock(run):
                pass
        for args in (["--out", str(run), "--resume", "--steps", "6"],
                     [*QUICK, "--out", str(run), "--overwrite"]):
            assert main(["train", *args, "--no-progress", "--no-plot"]) == 2
            line = one_error_line(capsys, "train")
            assert f"{run} is in use by another process (pid {os.getpid()})" in line, line
        assert (run / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        with folder_lock(new):
            assert main(["train", *QUICK, "--out", str(new)]) == 2
            assert f"pid {os.getpid()}" in one_error_line(capsys, "train")
        assert os.listdir(new) == [LOCK_NAME]
    assert digest(run) == before  # the lock file is empty again
    assert (run / LOCK_NAME).read_bytes() == b"" and oct((run / LOCK_NAME).stat().st_mode & 0o777) == "0o644"


def _wait_for(predicate, proc, timeout=120.0):
    t0 = time.monotonic()
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.05)


def test_two_processes_one_folder(tmp_path, capsys):
    """The second is refused while the first runs; accepted once the first ends or is SIGKILLed."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "minillm", "train", "--preset", "tiny", "--steps",
                              "100000", "--eval-every", "0", "--n-train", "32", "--n-eval", "6",
                              "--no-progress", "--no-plot", "--out", str(out)],
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: (out / ckpt.STATE_NAME).exists()
                  and (out / LOCK_NAME).read_text().strip() == str(first.pid), first)
        for args in (["--resume"], [*QUICK, "--overwrite"]):
            assert main(["train", "--out", str(out), *args, "--no-progress", "--no-plot"]) == 2
            line = one_error_line(capsys, "train")
            assert f"{out} is in use by another process (pid {first.pid})" in line, line
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # killed: the OS let go of the lock (its file still holds the dead pid)
    assert main(["train", "--out", str(out), "--resume", "--steps", "2", "--no-progress",
                 "--no-plot"]) == 0
    assert ckpt.read_state(out)["step"] == 2
    # ended normally: the next one runs too
    second = subprocess.run([sys.executable, "-m", "minillm", "train", "--out", str(out), "--resume",
                             "--steps", "3", "--no-progress", "--no-plot"], env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert main(["train", "--out", str(out), "--resume", "--steps", "4", "--no-progress",
                 "--no-plot"]) == 0
    assert (out / LOCK_NAME).read_bytes() == b""


# ----------------------------------------------------------------------- 6. --out


def test_out_that_is_not_a_run_is_refused_without_overwrite(start_dir, sft_run, tmp_path, capsys):
    hf = tmp_path / "hf"
    shutil.copytree(start_dir, hf)
    (tmp_path / "file").write_text("a file")
    before = digest(hf, tmp_path)
    cases = [
        (["train", *QUICK, "--out", str(hf)], "is not a minillm run folder"),
        (["train", *QUICK, "--init", str(hf), "--out", str(hf)], "--out must differ from --init"),
        (["train", *QUICK, "--init", str(hf), "--out", str(hf), "--overwrite"],
         "--out must differ from --init"),
        (["train", *QUICK, "--init", str(sft_run / "best"), "--out", str(sft_run), "--overwrite"],
         "--out must differ from --init and not contain it"),
        (["train", *QUICK, "--out", str(tmp_path / "file")], "is a file, not a run folder"),
        (["train", *QUICK, "--out", str(tmp_path / "file"), "--overwrite"], "is a file"),
        (["train", "--out", str(hf), "--resume"], "no checkpoint to resume"),
        (["rl", str(start_dir), "--out", str(hf), *RL_QUICK], "is not a minillm run folder"),
        (["rl", str(hf), "--out", str(hf), *RL_QUICK, "--overwrite"], "--out must differ from DIR"),
        (["rl", str(start_dir), "--out", str(tmp_path / "file"), *RL_QUICK], "is a file"),
        (["rl", "--out", str(hf), "--resume"], "no checkpoint to resume"),
    ]
    sft_before = digest(sft_run)
    for args, expect in cases:
        assert main(args) == 2, args
        line = one_error_line(capsys, args[0])
        assert expect in line, (args, line)
        assert digest(hf, tmp_path) == before and digest(sft_run) == sft_before
        assert not (hf / LOCK_NAME).exists()


# ----------------------------------------------------------------------- 7. best/ and the state


KILL_AT_BEST = textwrap.dedent("""
    import os, signal, sys
    from minillm.runfolder import checkpoint as ckpt
    real = ckpt.save_model
    def save_model(folder, *args, **kw):
        if os.path.basename(os.fspath(folder)) == ckpt.BEST_DIR:
            os.kill(os.getpid(), signal.SIGKILL)  # after the checkpoint's commit, before best/'s
        return real(folder, *args, **kw)
    ckpt.save_model = save_model
    from minillm.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_kill_between_the_checkpoint_and_best_commits_is_repaired(sft_run, tmp_path, capsys):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", KILL_AT_BEST, "train", *QUICK, "--out", str(out)],
                       env=ENV, capture_output=True, timeout=300)
    assert r.returncode == -signal.SIGKILL
    state = json.loads((out / ckpt.STATE_NAME).read_text())
    assert state["best"]["step"] == state["step"] == 2 and not (out / ckpt.BEST_DIR).exists()
    ckpt.recover(out)
    assert "now holds the model of the best step, 2" in capsys.readouterr().err
    assert ckpt.best_step(out) == 2
    assert (out / "best" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    # resumed, the run is the uninterrupted one, best/ included
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "--no-plot"]) == 0
    for name in ("model.safetensors", "optimizer.safetensors", "best/model.safetensors"):
        assert (out / name).read_bytes() == (sft_run / name).read_bytes(), name
    assert ckpt.read_state(out)["best"] == ckpt.read_state(sft_run)["best"]
    assert ckpt.best_step(out) == ckpt.best_step(sft_run) == ckpt.read_state(sft_run)["best"]["step"]


WRITER = textwrap.dedent("""
    import sys, types, numpy as np, minillm
    from minillm.training import loop
    from minillm.optim import AdamW
    from minillm.data.tokenizer import Tokenizer
    tok = Tokenizer.train(["one two three", "red owl pen"] * 10, vocab_size=200)
    cfg = minillm.T5Config(vocab_size=tok.vocab_size, d_model=64, d_kv=16, num_heads=4,
                           d_ff=256, num_layers=2, dropout_rate=0.0)
    model = minillm.T5.init(cfg, np.random.default_rng(0))
    opt = AdamW()
    trainer = types.SimpleNamespace(model=model, tokenizer=tok, optimizer=opt, kind=None,
                                    state=loop.RunState(), rng=np.random.default_rng(0),
                                    config_key="train_config", run_info={},
                                    config=types.SimpleNamespace(to_dict=dict))
    step = 0
    while True:
        step += 1
        for v in model.params.values():
            v[...] = step  # every weight equals the step: a torn checkpoint shows
        opt.step(model.params, {k: np.zeros_like(v) for k, v in model.params.items()}, lr=0.0)
        trainer.state.step, trainer.state.best = step, {"step": step}
        loop.save(trainer, sys.argv[1], improved=True)  # each step a new best
        if step == 1:
            print("ready", flush=True)
""")


@pytest.mark.parametrize("delay", [0.07, 0.19, 0.41])
def test_killed_writer_leaves_best_and_the_state_in_agreement(tmp_path, delay):
    """SIGKILL a loop that commits a checkpoint and a best/ each step: after recovery they agree."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                            env=ENV)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt.recover(tmp_path)
    state = json.loads((tmp_path / ckpt.STATE_NAME).read_text())
    step = state["step"]
    assert state["best"]["step"] == step == ckpt.best_step(tmp_path)
    for folder in (tmp_path, tmp_path / ckpt.BEST_DIR):
        assert all(np.all(v == step) for v in minillm.from_pretrained(folder).params.values())
