"""BLAS threads that follow the idle cores (minillm.blas): the arithmetic, the OpenBLAS
calls, and the measurement of another process's busy core, in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from minillm.blas import blas_threads, busy_ticks, set_blas_threads, threads_for

STAT = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1 2 3\n"


def test_threads_for_rounds_the_idle_cores_to_nearest_and_keeps_one():
    assert threads_for(2, 0.0) == 2
    assert threads_for(2, 0.4) == 2
    assert threads_for(2, 0.6) == 1
    assert threads_for(2, 1.0) == 1
    assert threads_for(2, 3.5) == 1  # a machine busier than its cores still gets a thread
    assert threads_for(16, 5.2) == 11
    assert threads_for(4, -0.3) == 4  # a measurement's noise never asks for more than the cores


def test_busy_ticks_is_everything_but_idle_and_iowait():
    # user 100 + nice 5 + system 50 + irq 3 + softirq 2 + steal 0 (idle 1000, iowait 20 left out)
    assert busy_ticks(STAT) == 160.0
    with pytest.raises(ValueError, match="/proc/stat"):
        busy_ticks("intr 1 2 3\n")


needs_openblas = pytest.mark.skipif(blas_threads() is None, reason="NumPy is not on OpenBLAS here")


@needs_openblas
def test_set_blas_threads_sets_and_returns_the_count_before():
    before = blas_threads()
    try:
        assert set_blas_threads(1) == before
        assert blas_threads() == 1
        assert set_blas_threads(2) == 1
        assert blas_threads() == 2
    finally:
        set_blas_threads(before)
    with pytest.raises(ValueError, match=">= 1"):
        set_blas_threads(0)


FOLLOW = textwrap.dedent('''
    import sys, time
    import numpy as np
    from minillm import blas as backend

    on = backend.follow_idle_cores(interval_s=0.5)
    a = np.ones((300, 300))
    t = time.perf_counter()
    while time.perf_counter() - t < 1.6:  # this process works too: its own time is not "others"
        a @ a
        backend.adapt_threads()
    f = backend._FOLLOWING[0] if on else None
    print(on, None if f is None else round(f.others_busy, 2), backend.blas_threads())
''')


def _follow(env, busy: bool):
    spin = None
    if busy:
        spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        out = subprocess.run([sys.executable, "-c", FOLLOW], capture_output=True, text=True,
                             timeout=120, check=True, env=env).stdout.split()
    finally:
        if spin is not None:
            spin.kill()
            spin.wait()
    return out


@needs_openblas
@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="measures through /proc/stat (Linux)")
def test_a_busy_core_of_another_process_is_measured_and_takes_a_thread_away():
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    on, others, threads = _follow(env, busy=True)
    assert on == "True"
    assert float(others) >= 0.6  # the spinning process: about one core (more on a shared machine)
    cores = len(os.sched_getaffinity(0))
    assert int(threads) == threads_for(cores, float(others)) < cores or cores == 1


@needs_openblas
def test_a_thread_count_the_user_set_is_left_alone():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    assert _follow(env, busy=False) == ["False", "None", "1"]


# ---------------------------------------------------------------- the --threads flag

def test_the_threads_flag_takes_a_count_or_auto_and_refuses_the_rest():
    import argparse

    from minillm.cli.flags import threads

    assert threads("auto") == "auto"
    assert threads("3") == 3
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            threads(bad)


def test_a_bad_threads_value_is_one_line_and_exit_2(capsys):
    from minillm.cli import main

    assert main(["generate", "somewhere", "--threads", "0", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads" in err[0] and "at least 1" in err[0]


APPLY = textwrap.dedent('''
    import sys
    from minillm import blas as backend
    from minillm.workflows.checks import apply_threads

    arg = sys.argv[1]
    apply_threads(None if arg == "none" else arg if arg == "auto" else int(arg))
    print(backend.blas_threads(), bool(backend._FOLLOWING))
''')


@needs_openblas
@pytest.mark.parametrize("value, expected", [("1", "1 False"), ("none", None), ("auto", None)])
def test_the_threads_setting_sets_the_count_or_follows_the_idle_cores(value, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", APPLY, value], capture_output=True, text=True,
                         timeout=120, check=True, env=env).stdout.strip()
    count, following = out.split()
    if expected is not None:
        assert out == expected
    elif value == "none":  # OpenBLAS's default: every core, not followed
        assert following == "False" and int(count) >= 1
    else:
        assert following == "True"


def test_a_bad_threads_setting_is_refused_in_one_line():
    from minillm.workflows.checks import SettingsError, apply_threads

    for bad in (0, -2, 1.5, "two", True, 10**20):
        with pytest.raises(SettingsError, match=r"--threads: expected a count in \[1, 4096\] or 'auto'"):
            apply_threads(bad)


@needs_openblas
def test_the_generate_workflow_applies_its_threads_setting(tmp_path):
    """GenerateSettings(threads=1) in one call, as `minillm generate --threads 1` does."""
    script = textwrap.dedent(f'''
        from minillm import blas as backend
        from minillm.workflows import GenerateSettings, generate
        try:
            generate(GenerateSettings(dir={str(tmp_path / "missing")!r}, prompts=("hi",), threads=1))
        except (FileNotFoundError, ValueError):
            pass  # the folder is checked after the threads are set
        print(backend.blas_threads())
    ''')
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         check=True, env=env).stdout.split()
    assert out == ["1"]
