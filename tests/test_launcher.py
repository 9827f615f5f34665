"""A rank of ``mpiexec -n N`` ends itself when its launcher dies (issue 28: kill -9 of mpiexec left a
rank running and holding the run folder).

The fast test builds the launcher's process tree by hand: a process named ``mpiexec`` (a
link to Python), a proxy below it that never ends its children, and a "rank" that runs the
watchdog; kill -9 of the launcher alone must end the rank within a second or two. The slow
ones kill the real launchers of the mpi extra (``mpiexec.gforker``, and hydra's proxy) during a
training run, then take the folder's lock and read its last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER_FILE = os.path.join(ROOT, "minillm", "launcher.py")
BIN = os.path.dirname(sys.executable)


def gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie counts: it holds no lock and runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_for(test, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if test():
            return True
        time.sleep(0.05)
    return test()


RANK = f"""
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("launcher", {LAUNCHER_FILE!r})
launcher = importlib.util.module_from_spec(spec); spec.loader.exec_module(launcher)
chain = launcher.ancestors(os.getppid())
launcher.watch_launcher(0, interval=0.05)
open(sys.argv[1], "w").write(f"{{os.getpid()}} {{len(chain)}}")
time.sleep(60)
"""
# the proxy: runs the rank and never ends it; the launcher: runs the proxy (each waits a minute)
PROXY = ("import subprocess, sys, time; "
         f"subprocess.Popen([{sys.executable!r}, '-c', sys.argv[1], sys.argv[2]]); time.sleep(60)")
LAUNCHER = ("import subprocess, sys, time; "
            f"subprocess.Popen([{sys.executable!r}, '-c', {PROXY!r}, sys.argv[1], sys.argv[2]]); "
            "time.sleep(60)")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the launcher is found through /proc")
def test_a_rank_ends_itself_when_the_launcher_above_its_proxy_dies(tmp_path):
    fake = tmp_path / "mpiexec"
    fake.symlink_to(sys.executable)  # a process named mpiexec
    note = tmp_path / "rank"
    launcher = subprocess.Popen([str(fake), "-c", LAUNCHER, RANK, str(note)], start_new_session=True)
    try:
        assert wait_for(lambda: note.exists() and note.read_text(), 20)
        rank, chain = map(int, note.read_text().split())
        assert chain == 2  # the proxy, then the launcher: both watched
        assert not gone(rank)
        os.kill(launcher.pid, signal.SIGKILL)  # the launcher alone: the proxy lives on
        launcher.wait()
        assert wait_for(lambda: gone(rank), 5), "the rank outlived its launcher"
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)


def test_without_a_launcher_the_parent_alone_is_watched(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("launcher_under_test", LAUNCHER_FILE)
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    chain = launcher.ancestors(os.getppid())
    assert len(chain) <= 1 or launcher.process(chain[-1][0])[0].startswith(launcher.LAUNCHERS)
    child = subprocess.Popen(["sleep", "30"])
    try:
        start = launcher.process(child.pid)[2]
        assert launcher.alive(child.pid, start) and not launcher.alive(child.pid, "0")
    finally:
        child.kill()
        child.wait()
    assert not launcher.alive(child.pid, start)


# --------------------------------------------------------------------------- the real launchers

GFORKER = os.path.join(BIN, "mpiexec.gforker")
HYDRA = os.path.join(BIN, "mpiexec")


def ranks_of(out: str, launcher: int) -> list[int]:
    """The processes whose command line trains into ``out``, the launcher's own aside: the ranks."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if (b"minillm" in b" ".join(args) and out.encode() in args and int(name) != launcher
                    and not gone(int(name))):
                pids.append(int(name))
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["gforker", "hydra proxy"])
def test_killing_the_launcher_ends_every_rank_and_frees_the_folder(tmp_path, kill):
    pytest.importorskip("mpi4py")
    launcher_bin = GFORKER if kill == "gforker" else HYDRA
    if not os.path.exists(launcher_bin):
        pytest.skip("needs the mpi extra's mpiexec (pip install -e '.[mpi]')")
    from minillm.runfolder import checkpoint as ckpt
    from minillm.runfolder.lock import folder_lock

    out = str(tmp_path / "run")
    cmd = [launcher_bin, "-n", "2", sys.executable, "-m", "minillm", "train", "--preset", "tiny",
           "--steps", "5000", "--eval-every", "20", "--no-progress", "--no-plot", "--out", out]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: os.path.exists(os.path.join(out, ckpt.STATE_NAME)), 120)
        ranks = ranks_of(out, proc.pid)
        assert len(ranks) == 2
        if kill == "gforker":
            victim = proc.pid
        else:  # hydra's proxy: the ranks' parent
            with open(f"/proc/{ranks[0]}/stat") as f:
                victim = int(f.read().rsplit(")", 1)[1].split()[1])
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: all(gone(r) for r in ranks), 10), "a rank outlived its launcher"
        with folder_lock(out):  # free: no rank holds it
            assert ckpt.has_checkpoint(out)
            ckpt.read_state(out)
    finally:  # (the ranks may sit in sessions of their own: each is ended by its pid)
        for pid in [proc.pid, *ranks_of(out, proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(out, ignore_errors=True)
