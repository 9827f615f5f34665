"""The run's progress display: a tqdm bar on a terminal, a few plain lines anywhere else."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from minillm.training.progress import PlainProgress, clock_text, progress_bar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_a_line_every_interval_and_no_carriage_return():
    out, clock = io.StringIO(), Clock()
    bar = progress_bar(800, desc="sft", file=out, interval=10.0, clock=clock)
    assert isinstance(bar, PlainProgress)
    for step in range(800):  # 1/8 s a step: 100 s in all, a line every 10 s
        clock.now += 0.125
        bar.update(1)
        if step % 10 == 9:
            bar.set_postfix({"loss": f"{1 / (step + 1):.4f}"})
    bar.write("step 500: eval loss 0.1000, exact match 0.500")
    bar.close()
    bar.close()  # the loop closes twice after Ctrl-C: still one last line
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    progress_lines = [line for line in lines if line.startswith("sft ")]
    assert len(progress_lines) == 10, lines
    assert "step 500: eval loss 0.1000, exact match 0.500" in lines
    assert progress_lines[0] == "sft 80/800 steps (10%), 0:10 elapsed, 8.0 steps/s, 1:30 left, loss=0.0143"
    assert progress_lines[-1] == "sft 800/800 steps (100%), 1:40 elapsed, 8.0 steps/s, 0:00 left, loss=0.0013"


def test_a_resumed_run_counts_its_rate_from_where_it_started():
    out, clock = io.StringIO(), Clock()
    bar = progress_bar(500, initial=300, desc="rl", file=out, interval=5.0, clock=clock)
    clock.now += 5.0
    bar.update(20)
    assert out.getvalue() == "rl 320/500 steps (64%), 0:05 elapsed, 4.0 steps/s, 0:45 left\n"
    bar.close()  # nothing new since the last line
    assert out.getvalue().count("\n") == 1


def test_on_a_terminal_the_tqdm_bar():
    from tqdm import tqdm

    out = Terminal()
    bar = progress_bar(50, desc="sft", file=out)
    assert isinstance(bar, tqdm)
    for _ in range(50):
        bar.update(1)
    bar.close()
    assert "\r" in out.getvalue() and "50/50" in out.getvalue()


def test_disabled_shows_nothing():
    out = io.StringIO()
    bar = progress_bar(10, desc="sft", file=out, enabled=False)
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""


def test_clock_text():
    assert [clock_text(s) for s in (0, 59.6, 61, 3599, 3600, 7384)] == [
        "0:00", "1:00", "1:01", "59:59", "1:00:00", "2:03:04"]


def test_minillm_train_into_a_log_writes_plain_lines(tmp_path):
    """stderr a pipe (a log file, CI): the run's progress is a plain line, no bar redraws."""
    import time

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "minillm", "train", "--preset", "tiny", "--steps", "20",
                        "--out", str(tmp_path / "run"), "--no-plot"], capture_output=True, text=True,
                       env=env, timeout=600)
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert "\r" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("sft ")]
    assert 1 <= len(lines) <= wall / 10 + 1, r.stderr  # a line at most every 10 s, and the last one
    assert lines[-1].startswith("sft 20/20 steps (100%)"), r.stderr
