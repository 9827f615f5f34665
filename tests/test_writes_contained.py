"""Every write contained (issue 28): nothing outside the run folder, nothing lost, one line for each stop.

The failures the issue lists, each as a test: best/ as a link out of the folder (a new run
wrote its best model there; --overwrite deleted the old run, then failed), a read-only
folder, a full disk at a checkpoint (the previous one intact), Ctrl-C while the command
starts, a reward that calls sys.exit() or returns 1e308 (a message about a checkpoint
"step ?" that did not exist). Files outside the folder are compared byte for byte.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys

import pytest

import minillm.storage.safetensors_file as safetensors_file
from minillm.cli import main
from minillm.runfolder import checkpoint as ckpt
from minillm.runfolder.lock import folder_lock
from tests.conftest import folder_digest, start_folder

QUICK = ["--preset", "tiny", "--no-progress", "--no-plot", "--steps", "4", "--eval-every", "2",
         "--n-train", "32", "--n-eval", "6"]
RL = ["--tasks", "reverse_words,uppercase", "--steps", "2", "--batch-size", "2", "--k", "2",
      "--n-train", "8", "--n-eval", "2", "--max-new-tokens", "4", "--no-progress"]


def one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith(f"minillm {command}: error: ")]
    assert len(errors) == 1 and errors[0] == err[-1], err
    assert not any("Traceback" in line for line in err), err
    return errors[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny SFT run (copied by the tests that change it)."""
    out = tmp_path_factory.mktemp("sft") / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    return out


@pytest.fixture()
def outside(tmp_path):
    """A folder of someone else's, with a file in it, that no run may touch."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "keep.txt").write_text("not minillm's")
    return folder


def test_a_best_link_out_of_the_folder_is_refused_before_any_write(tmp_path, outside, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "best").symlink_to(outside)
    before = folder_digest(outside)
    assert main(["train", *QUICK, "--out", str(out)]) == 2
    assert f"{out / 'best'} is a symbolic link" in one_line(capsys, "train")
    assert folder_digest(outside) == before and sorted(os.listdir(out)) == ["best"]


@pytest.mark.parametrize("entry", ["best", "metrics.jsonl", ".staging", "reference", "best/config.json"])
def test_overwrite_through_a_link_deletes_nothing(finished, tmp_path, outside, capsys, entry):
    run = shutil.copytree(finished, tmp_path / "run", symlinks=True)
    target = run / entry
    if os.path.isdir(target):
        shutil.rmtree(target)
    elif os.path.lexists(target):
        os.remove(target)
    target.symlink_to(outside if entry in ("best", ".staging", "reference") else outside / "keep.txt")
    before, mine = folder_digest(outside), folder_digest(run)
    assert main(["train", *QUICK, "--out", str(run), "--overwrite"]) == 2
    assert f"{target} is a symbolic link" in one_line(capsys, "train")
    assert folder_digest(outside) == before and folder_digest(run) == mine


def test_a_fifo_in_place_of_a_run_file_is_refused(finished, tmp_path, capsys):
    run = shutil.copytree(finished, tmp_path / "run")
    os.remove(run / "metrics.jsonl")
    os.mkfifo(run / "metrics.jsonl")
    assert main(["train", "--resume", "--steps", "6", "--no-progress", "--out", str(run)]) == 2
    assert "metrics.jsonl is not a regular file" in one_line(capsys, "train")


def test_a_read_only_folder_is_refused_and_nothing_deleted(finished, tmp_path, capsys, monkeypatch):
    run = shutil.copytree(finished, tmp_path / "run")
    before = folder_digest(run)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: os.fspath(p) != str(run) and real(p, mode))
    assert main(["train", *QUICK, "--out", str(run), "--overwrite"]) == 2
    assert "cannot be written (a read-only folder or file system)" in one_line(capsys, "train")
    assert folder_digest(run) == before


def test_an_out_that_cannot_be_made_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", *QUICK, "--out", str(tmp_path / "file" / "run")]) == 2
    assert "Not a directory" in one_line(capsys, "train")


def test_a_full_disk_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    """The step-2 checkpoint's optimizer.safetensors (its 2nd) fails with ENOSPC: exit 1, step 0 kept."""
    out = tmp_path / "run"
    real, calls = safetensors_file.write_safetensors, []

    def full(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(safetensors_file, "write_safetensors", full)
    assert main(["train", *QUICK, "--out", str(out)]) == 1
    line = one_line(capsys, "train")
    assert "No space left on device; stopped. The last checkpoint (step 0) is kept in" in line
    assert ckpt.read_state(out)["step"] == 0 and not (out / ckpt.STAGING).exists()
    monkeypatch.setattr(safetensors_file, "write_safetensors", real)
    assert main(["train", "--resume", "--no-progress", "--no-plot", "--out", str(out)]) == 0
    assert ckpt.read_state(out)["step"] == 4


def test_ctrl_c_while_the_command_starts_is_one_line(capsys, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr("minillm.cli.build_parser", interrupted)
    assert main(["train"]) == 130
    assert capsys.readouterr().err == "minillm: interrupted\n"


def test_a_memoryerror_is_one_line(tmp_path, capsys, monkeypatch):
    import minillm.cli.generate as cli_generate

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(cli_generate, "iter_generate", no_memory)
    assert main(["generate", str(tmp_path), "x"]) == 2
    assert "out of memory" in one_line(capsys, "generate")


@pytest.fixture()
def rewards(tmp_path, monkeypatch):
    """User rewards in ./badrewards.py: one that calls sys.exit(0), one of 1e308, one that is Ctrl-C."""
    (tmp_path / "badrewards.py").write_text(
        "import sys\n"
        "def leave(prompt, output, reference):\n    sys.exit(0)\n"
        "def huge(prompt, output, reference):\n    return 1e308\n"
        "def ctrl_c(prompt, output, reference):\n    raise KeyboardInterrupt\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("badrewards", None)


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    return start_folder(tmp_path_factory.mktemp("start") / "hf", ["reverse_words", "uppercase"], 120)


def test_a_reward_that_exits_is_an_error_not_a_clean_exit(start, rewards, capsys):
    assert main(["rl", str(start), *RL, "--reward", "badrewards:leave", "--out", "r"]) == 2
    assert "reward 'badrewards:leave' raised SystemExit: 0" in one_line(capsys, "rl")


def test_a_stop_before_the_first_checkpoint_names_no_checkpoint(start, rewards, capsys):
    assert main(["rl", str(start), *RL, "--reward", "badrewards:huge", "--out", "r"]) == 1
    line = one_line(capsys, "rl")
    assert "reward is inf (not finite); stopped. No checkpoint was written in r yet" in line
    assert "step ?" not in line and not (rewards / "r" / ckpt.STATE_NAME).exists()
    assert main(["rl", str(start), *RL, "--reward", "badrewards:ctrl_c", "--out", "r2"]) == 130
    err = capsys.readouterr().err  # Ctrl-C in the reward of the step-0 evaluation, before any checkpoint
    assert err.endswith("minillm rl: interrupted\n") and "checkpoint" not in err


def test_the_lock_is_free_after_a_refusal(finished, tmp_path):
    run = shutil.copytree(finished, tmp_path / "run")
    (run / "reference").symlink_to(tmp_path)
    assert main(["train", *QUICK, "--out", str(run), "--overwrite"]) == 2
    with folder_lock(run):
        pass
