"""The probes of benchmarks/probe_inputs.py on run folders (writes, resumes), signals, rewards and
MPI launchers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from probe_inputs import Skip, digest
from probes import RL, TINY, edit_json, json_file, probe, replace

# ------------------------------------------------------------------ writes


def _unchanged(ws, out, err):
    """The run folder is as it was before the probe (nothing deleted, nothing written)."""
    return None if digest(ws.path("run")) == ws.before else "changed the run folder"


def _spoilt_run(ws, entry: str, target: str) -> str:
    run = ws.run()
    path = os.path.join(run, entry)
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
    os.symlink(target, path)
    ws.before = digest(run)
    return run


for _entry in ("best", "reference", ".staging"):
    def _prepare(ws, entry=_entry):
        out = ws.path("fresh")
        os.mkdir(out)
        os.symlink(ws.outside, os.path.join(out, entry))
        return ["train", *TINY, "--out", out]
    _issue = " (issue)" if _entry == "best" else ""
    probe("run folder writes", f"a new run where {_entry} links outside{_issue}", names=(_entry,))(_prepare)

for _entry in ("best", "reference", ".staging", "metrics.jsonl", "loss.svg", ".lock", "config.json",
               "trainer_state.json", "optimizer.safetensors", "best/config.json", "best/best_step.json"):
    def _prepare(ws, entry=_entry):
        folder = entry in ("best", "reference", ".staging")
        return ["train", *TINY, "--overwrite", "--out",
                _spoilt_run(ws, entry, ws.outside if folder else os.path.join(ws.outside, "keep.txt"))]
    _issue = " (issue)" if _entry == "best" else ""
    probe("run folder writes", f"--overwrite where {_entry} links outside{_issue}", names=(_entry,),
          check=_unchanged)(_prepare)


@probe("run folder writes", "--resume where metrics.jsonl is a FIFO", names=("metrics.jsonl",),
       check=_unchanged)
def _(ws):
    run = ws.run()
    replace(os.path.join(run, "metrics.jsonl"), "fifo", ws)
    ws.before = digest(run)
    return ["train", "--resume", "--steps", "6", "--no-progress", "--out", run]


@probe("run folder writes", "--out on a read-only file system (issue)", names=("Read-only",))
def _(ws):
    return ["train", *TINY, "--out", os.path.join(ws.mount("ro", "ro,size=64k"), "run")]


@probe("run folder writes", "--resume on a read-only file system", names=("cannot be written",))
def _(ws):
    where = ws.mount("ro", "size=2m")
    import shutil
    shutil.copytree(ws.run("copy"), os.path.join(where, "run"))
    subprocess.run(["mount", "-o", "remount,ro", where], check=True)
    return ["train", "--resume", "--steps", "8", "--no-progress", "--out", os.path.join(where, "run")]


def _previous_kept(ws, out, err):
    """The folder's last checkpoint reads (the one before the full disk)."""
    from minillm.runfolder import checkpoint as ckpt

    try:
        step = ckpt.read_state(ws.full_run)["step"]
    except Exception as e:  # noqa: BLE001
        return f"no readable checkpoint left ({e})"
    return None if f"step {step})" in err else f"the message does not name step {step}"


@probe("run folder writes", "a full disk at a checkpoint (issue)", expect=1,
       names=("No space left on device",), check=_previous_kept)
def _(ws):
    ws.full_run = os.path.join(ws.mount("full", "size=300k"), "run")
    return ["train", "--preset", "tiny", "--no-progress", "--no-plot", "--steps", "40", "--eval-every", "2",
            "--out", ws.full_run]


@probe("run folder writes", "--out is a file", names=("is a file",))
def _(ws):
    json_file(ws.path("f"), "x")
    return ["train", *TINY, "--out", ws.path("f")]


@probe("run folder writes", "--overwrite --out the --init folder itself", names=("--init",))
def _(ws):
    m = ws.model()
    return ["train", *TINY, "--init", m, "--out", m, "--overwrite"]


@probe("run folder writes", "eval --predictions through a link: the link replaced", expect=0)
def _(ws):
    os.symlink(os.path.join(ws.outside, "keep.txt"), ws.path("p.jsonl"))
    return ["eval", ws.model(), "--n", "4", "--predictions", ws.path("p.jsonl"), "--no-progress"]


@probe("run folder writes", "eval --predictions into a folder", names=("--predictions",))
def _(ws):
    os.mkdir(ws.path("p"))
    return ["eval", ws.model(), "--n", "4", "--predictions", ws.path("p"), "--no-progress"]


@probe("run folder writes", "data --out through a link: the link replaced", expect=0)
def _(ws):
    os.symlink(os.path.join(ws.outside, "keep.txt"), ws.path("d.jsonl"))
    return ["data", "--n", "4", "--out", ws.path("d.jsonl")]


# ------------------------------------------------------------------ reads on resume

RESUME = ["train", "--resume", "--steps", "6", "--no-progress", "--no-plot", "--out"]


def _resume_with(spoil, *, then=RESUME):
    def prepare(ws):
        run = ws.run()
        spoil(ws, run)
        return [*then, run]
    return prepare


def _sparse_tensor(ws, run):
    from minillm.storage.safetensors_file import read_header

    path = os.path.join(run, "optimizer.safetensors")
    entries, metadata, start = read_header(path)
    with open(path, "rb") as f:
        data = f.read()[start:]
    import json
    header = {k: {"dtype": e["dtype"], "shape": list(e["shape"]), "data_offsets": [e["begin"], e["end"]]}
              for k, e in entries.items()}
    header["m.zz"] = {"dtype": "F32", "shape": [1 << 30], "data_offsets": [len(data), len(data) + (4 << 30)]}
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + data)
        f.truncate(8 + len(text) + len(data) + (4 << 30))


def _file(name: str, how: str):
    """A spoiler: the run's file ``name`` replaced (:func:`probes.replace`)."""
    return lambda ws, run: replace(os.path.join(run, name), how, ws)


def _text(name: str, text: str):
    """A spoiler: the run's file ``name`` written with ``text``."""
    return lambda ws, run: json_file(os.path.join(run, name), text)


def _commit_outside(ws, run):
    os.mkdir(os.path.join(run, ".staging"))
    json_file(os.path.join(run, ".staging", "COMMIT"), '["../outside/keep.txt", "/etc/passwd"]')


STATE = "trainer_state.json"
for _name, _spoil, _expect, _names in (
        ("trainer_state.json of 2 GB", _file(STATE, "2GB"), 2, (STATE,)),
        ("trainer_state.json as a FIFO", _file(STATE, "fifo"), 2, (STATE,)),
        ("trainer_state.json: step 10**30",
         lambda ws, r: edit_json(os.path.join(r, STATE), step=10**30), 2, ("step",)),
        ("optimizer.safetensors with a 4 GB tensor (sparse)", _sparse_tensor, 2, ("optimizer.safetensors",)),
        ("metrics.jsonl with a 2 MB line", _text("metrics.jsonl", "x" * (2 << 20) + "\n"), 2,
         ("metrics.jsonl",)),
        ("metrics.jsonl of lists and strings", _text("metrics.jsonl", '[1]\n"a"\n'), 0, ()),
        ("best/best_step.json of 2 GB", _file(os.path.join("best", "best_step.json"), "2GB"), 0, ()),
        (".staging/COMMIT naming ../outside", _commit_outside, 0, ()),
        ("config.json of 2 GB", _file("config.json", "2GB"), 2, ("config.json",))):
    probe("run folder reads", f"--resume with {_name}", expect=_expect, names=_names)(_resume_with(_spoil))

probe("run folder reads", "eval of a run whose trainer_state.json is 2 GB", names=("trainer_state.json",))(
    _resume_with(lambda ws, r: replace(os.path.join(r, "trainer_state.json"), "2GB", ws), then=["eval"]))


# ------------------------------------------------------------------ signals and processes

LONG = ["train", "--preset", "tiny", "--no-progress", "--no-plot", "--steps", "100000", "--eval-every", "50"]

for _delay in (0.05, 0.3, 0.8, 1.5):
    def _prepare(ws):
        return [*LONG, "--out", ws.path("r")]
    probe("signals", f"SIGINT {_delay} s after the start (issue)", expect=130, names=("interrupted",),
          signals=((_delay, signal.SIGINT),))(_prepare)


def _resumable(ws, out, err):
    from minillm.runfolder import checkpoint as ckpt

    try:
        ckpt.has_checkpoint(ws.path("r")) and ckpt.read_state(ws.path("r"))
    except Exception as e:  # noqa: BLE001
        return f"the folder does not resume ({e})"
    return None


for _sig, _code in ((signal.SIGINT, 130), (signal.SIGTERM, -15)):
    def _prepare(ws):
        return [*LONG, "--out", ws.path("r")]
    probe("signals", f"{_sig.name} during the run: the folder resumes", expect=_code,
          names=("interrupted",) if _code == 130 else (), signals=((1.0, _sig),),
          wait_for="r/trainer_state.json", check=_resumable)(_prepare)


def _second_process(ws, argv):
    """A second train on a folder a first one holds: refused in one line naming the holder."""
    from probe_inputs import launch as run

    first = subprocess.Popen([sys.executable, "-m", "minillm", *argv], cwd=ws.dir,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        t0 = time.perf_counter()
        while not os.path.exists(ws.path("r", "trainer_state.json")) and time.perf_counter() - t0 < 60:
            time.sleep(0.05)
        code, seconds, _, _, err, _ = run(["train", "--resume", "--out", ws.path("r"), "--no-progress"], ws)
        ok = code == 2 and f"in use by another process (pid {first.pid})" in err.strip().splitlines()[-1]
        return ("held" if ok else f"FAILED: exit {code}: {err.strip()[-200:]}"), seconds
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


probe("signals", "a second process on a run folder", custom=_second_process)(
    lambda ws: [*LONG, "--out", ws.path("r")])


def _launcher_killed(which: str):
    def run(ws, argv):
        binary = os.path.join(os.path.dirname(sys.executable), "mpiexec.gforker" if which == "gforker"
                              else "mpiexec")
        if not os.path.exists(binary):
            raise Skip("needs the mpi extra")
        out = ws.path("r")
        proc = subprocess.Popen([binary, "-n", "2", sys.executable, "-m", "minillm", *argv], cwd=ws.dir,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            t0 = time.perf_counter()
            while not os.path.exists(os.path.join(out, STATE)) and time.perf_counter() - t0 < 60:
                time.sleep(0.05)
            ranks = _ranks(out, proc.pid)
            victim = proc.pid if which != "proxy" else _parent(ranks[0])
            os.kill(victim, signal.SIGKILL)
            t1 = time.perf_counter()
            while any(_alive(r) for r in ranks) and time.perf_counter() - t1 < 10:
                time.sleep(0.05)
            left = [r for r in ranks if _alive(r)]
            return ("held" if not left and len(ranks) == 2 else f"FAILED: ranks {left} of {ranks} left"), \
                time.perf_counter() - t1
        finally:
            for pid in [proc.pid, *_ranks(out, proc.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
    return run


def _ranks(out: str, launcher: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != launcher:
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if out.encode() in args and b"minillm" in args and _alive(int(name)):
                pids.append(int(name))
    return pids


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


for _which in ("gforker", "hydra", "proxy"):
    probe("signals", f"kill -9 of mpiexec ({_which}) (issue)", custom=_launcher_killed(_which))(
        lambda ws: [*LONG, "--out", ws.path("r")])


# ------------------------------------------------------------------ rewards

REWARDS = {
    "sys.exit(0) (issue)": ("import sys\ndef score(p, o, r):\n    sys.exit(0)\n", 2, ("SystemExit",)),
    "sys.exit at import": ("import sys\nsys.exit(3)\ndef score(p, o, r):\n    return 0.0\n", 2,
                           ("SystemExit",)),
    "KeyboardInterrupt": ("def score(p, o, r):\n    raise KeyboardInterrupt\n", 130, ("interrupted",)),
    "1e308 (issue)": ("def score(p, o, r):\n    return 1e308\n", 1, ("No checkpoint was written",)),
    "NaN": ("def score(p, o, r):\n    return float('nan')\n", 2, ("not a finite number",)),
    "a string": ("def score(p, o, r):\n    return '1'\n", 2, ("not a finite number",)),
    "an exception": ("def score(p, o, r):\n    raise ValueError('boom')\n", 2, ("boom",)),
    "a huge list": ("def score(p, o, r):\n    return [0] * 10**6\n", 2, ("not a finite number",)),
}
for _what, (_source, _expect, _names) in REWARDS.items():
    def _prepare(ws, source=_source):
        json_file(ws.path("myreward.py"), source)
        return ["rl", ws.model(), *RL, "--reward", "myreward:score", "--out", ws.path("r")]
    probe("rewards", f"a reward that {'returns' if _what[0] in '1Nah' else 'raises'} {_what}",
          expect=_expect, names=_names,
          check=(lambda ws, out, err: None if "step ?" not in err else "names a step ?"))(_prepare)
