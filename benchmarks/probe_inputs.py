"""Probe minillm as a hostile user would: crafted folders, files, flags, signals, rewards, launchers.

    python benchmarks/probe_inputs.py                   # every probe (a few minutes)
    python benchmarks/probe_inputs.py -k fifo -k zero   # the probes whose name holds a word
    python benchmarks/probe_inputs.py --category settings --verbose

Each probe (benchmarks/probes.py) prepares a workspace (copies of a tiny model folder
and of a finished run folder, a folder "outside" that nothing may touch), then runs
one ``python -m minillm ...`` in a subprocess of its own session under a time limit
(30 s; killed after) and a memory limit (``RLIMIT_AS``, 4 GiB), and reads its exit
status and peak memory from ``os.wait4``. A probe holds when:

- its exit status is the one expected (2: bad input refused; 1: a run that stopped;
  130: interrupted; 0: it worked),
- it ended within its time limit, with no traceback and no panic on stderr,
- a refusal or a stop is one line (``minillm CMD: error: ...``, the last line of stderr)
  holding what the probe says it must name (the file, the line, the field or the flag),
- the folder outside is byte-identical afterwards, and whatever else the probe checks,
- its peak memory is at most the baseline's (a plain ``generate``) plus 500 MB.

Prints a table (probe, outcome, seconds, peak MB, exit status, one line) and the count
of probes held per category; exits 1 when any did not. Probes that need root (to mount
a read-only or a full file system) or the mpi extra say "skipped" where they cannot run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TIME_LIMIT, MEMORY_LIMIT, MEMORY_MARGIN = 30.0, 4 << 30, 500 << 20
ENV = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1", RUST_BACKTRACE="0",
           RAYON_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


class Skip(Exception):
    """The probe cannot run here (no root to mount, no mpiexec): said as "skipped"."""


@dataclass
class Workspace:
    """One probe's folder: ``model()`` and ``run()`` copy the base folders into it; ``outside``
    must be byte-identical afterwards; ``stdin``: a file fed as standard input."""

    dir: str
    base: str
    stdin: str | None = None
    mounts: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.outside = os.path.join(self.dir, "outside")
        os.makedirs(self.outside)
        with open(os.path.join(self.outside, "keep.txt"), "w") as f:
            f.write("someone else's file\n")
        shutil.copytree(os.path.join(self.base, "model"), os.path.join(self.outside, "model"))

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def model(self, name: str = "m") -> str:
        return shutil.copytree(os.path.join(self.base, "model"), self.path(name))

    def run(self, name: str = "run") -> str:
        return shutil.copytree(os.path.join(self.base, "run"), self.path(name), symlinks=True)

    def mount(self, name: str, options: str) -> str:
        """A tmpfs mounted at ``name`` (needs root; else the probe is skipped)."""
        where = self.path(name)
        os.makedirs(where)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "none", where],
                              capture_output=True)
        if done.returncode != 0:
            raise Skip("needs root to mount a tmpfs")
        self.mounts.append(where)
        return where


def digest(folder: str) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    out[os.path.relpath(p, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


@dataclass
class Result:
    category: str
    name: str
    outcome: str
    seconds: float = 0.0
    peak_mb: float = 0.0
    code: int | None = None
    one_line: str = "-"
    stderr: str = ""


def limits() -> None:
    """In the probe's process: the memory limit, and Ctrl-C as a terminal sends it (a shell's
    background job inherits SIGINT ignored, and Python then installs no handler for it)."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def peak_sampler(pid: int, peak: list[int], stop: threading.Event) -> None:
    """The process's peak resident memory (VmHWM, kB) as it runs, read every 20 ms: its own,
    unlike ru_maxrss, which a child inherits from the process that forked it."""
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
        except (OSError, ValueError):
            pass
        stop.wait(0.02)


def launch(argv, ws: Workspace, timeout: float = TIME_LIMIT, signals=(), wait_for=None):
    """Run ``python -m minillm *argv`` in ``ws`` (its own session); ``signals``: (delay s, signal)
    sent to it; ``wait_for``: a file whose appearance starts the delays. Returns
    (exit status, seconds, peak RSS in MB, stdout, stderr, timed out)."""
    out, err = open(ws.path(".stdout"), "w+b"), open(ws.path(".stderr"), "w+b")
    stdin = open(ws.stdin, "rb") if ws.stdin else subprocess.DEVNULL
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "minillm", *map(str, argv)], cwd=ws.dir, env=ENV,
                            stdin=stdin, stdout=out, stderr=err, preexec_fn=limits,
                            start_new_session=True)
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    if signals:
        threading.Thread(target=_send, args=(proc.pid, signals, wait_for), daemon=True).start()
    peak, stop = [0], threading.Event()
    sampler = threading.Thread(target=peak_sampler, args=(proc.pid, peak, stop), daemon=True)
    sampler.start()
    _, status, _ = os.wait4(proc.pid, 0)
    stop.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    timer.cancel()
    seconds = time.perf_counter() - t0
    for f in (out, err):
        f.seek(0)
    texts = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    out.close(), err.close()
    if stdin is not subprocess.DEVNULL:
        stdin.close()
    return proc.returncode, seconds, peak[0] / 1024, *texts, timed_out.is_set()


def _send(pid: int, signals, wait_for) -> None:
    start = time.monotonic()
    while wait_for and not os.path.exists(wait_for) and time.monotonic() - start < 60:
        time.sleep(0.02)
    for delay, sig in signals:
        time.sleep(delay)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return


def judge(probe, ws: Workspace, code, seconds, peak, out, err, timed_out, baseline) -> tuple[str, str]:
    """(outcome, one-line verdict) of a finished probe against what it expects."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"minillm( \w+)?: (error|interrupted)", line)]
    one = bool(errors) and len(errors) == 1 and errors[0] == lines[-1]
    said = code in (1, 2, 130)  # a refusal, a stop, an interrupt: each says one line
    verdict = "yes" if one else ("-" if not said else "no")
    problems = []
    if timed_out:
        problems.append(f"killed after {TIME_LIMIT:.0f} s")
    if code not in probe.expect_codes:
        problems.append(f"exit {code}, expected {'/'.join(map(str, probe.expect_codes))}")
    if any("Traceback" in line or "panicked" in line for line in lines):
        problems.append("a traceback")
    if said and not one:
        problems.append("not one line")
    for word in probe.names:
        if not any(word in line for line in errors):
            problems.append(f"does not name {word!r}")
    if baseline and peak > baseline + MEMORY_MARGIN / 2**20:
        problems.append(f"peak {peak:.0f} MB > baseline + 500")
    if digest(ws.outside) != probe.outside_digest:
        problems.append("changed a file outside")
    if probe.check is not None:
        extra = probe.check(ws, out, err)
        if extra:
            problems.append(extra)
    return ("held" if not problems else "FAILED: " + "; ".join(problems)), verdict


def run_probe(probe, root: str, base: str, baseline: float | None) -> Result:
    ws = Workspace(tempfile.mkdtemp(prefix="probe-", dir=root), base)
    try:
        try:
            argv = probe.prepare(ws)
        except Skip as e:
            return Result(probe.category, probe.name, f"skipped ({e})")
        probe.outside_digest = digest(ws.outside)
        if probe.custom is not None:  # a probe that runs its own processes (launchers)
            outcome, seconds = probe.custom(ws, argv)
            return Result(probe.category, probe.name, outcome, seconds)
        code, seconds, peak, out, err, timed_out = launch(argv, ws, probe.timeout, probe.signals,
                                                          probe.wait_for and ws.path(probe.wait_for))
        outcome, verdict = judge(probe, ws, code, seconds, peak, out, err, timed_out, baseline)
        return Result(probe.category, probe.name, outcome, seconds, peak, code, verdict, err)
    finally:
        for where in ws.mounts:
            subprocess.run(["umount", "-l", where], capture_output=True)
        shutil.rmtree(ws.dir, ignore_errors=True)


def build_base(root: str) -> str:
    """The base folders every probe copies: a tiny model folder and a finished tiny SFT run."""
    from minillm.cli import main
    from tests.conftest import start_folder

    base = os.path.join(root, "base")
    start_folder(os.path.join(base, "model"), ["reverse_words", "uppercase"], 120)
    code = main(["train", "--preset", "tiny", "--steps", "4", "--eval-every", "2", "--n-train", "32",
                 "--n-eval", "6", "--no-progress", "--no-plot", "--out", os.path.join(base, "run")])
    assert code == 0, "the base run did not train"
    return base


def main() -> int:
    sys.modules.setdefault("probe_inputs", sys.modules[__name__])  # one copy of Skip and Workspace
    import probes_folders  # noqa: F401 - each module registers its probes
    import probes_runs  # noqa: F401
    from probes import PROBES, baseline_probe

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", action="append", default=[], help="only probes whose name holds this word")
    ap.add_argument("--category", action="append", default=[], help="only this category")
    ap.add_argument("--verbose", action="store_true", help="print each failing probe's stderr")
    args = ap.parse_args()
    chosen = [p for p in PROBES if (not args.k or any(k in p.name for k in args.k))
              and (not args.category or p.category in args.category)]
    with tempfile.TemporaryDirectory(prefix="minillm-probes-") as root:
        base = build_base(root)
        first = run_probe(baseline_probe(), root, base, None)
        print(f"baseline (generate with the tiny model): {first.peak_mb:.0f} MB, {first.seconds:.1f} s, "
              f"{first.outcome}")
        results = []
        print(f"{'category':<18} {'probe':<44} {'outcome':<8} {'s':>6} {'MB':>6} {'exit':>4}  one line")
        for probe in chosen:
            r = run_probe(probe, root, base, first.peak_mb)
            results.append(r)
            code = "-" if r.code is None else str(r.code)
            print(f"{r.category:<18} {r.name:<44} {r.outcome.split(':')[0]:<8} {r.seconds:6.1f} "
                  f"{r.peak_mb:6.0f} {code:>4}  {r.one_line}", flush=True)
            if r.outcome.startswith("FAILED"):
                print(f"    {r.outcome}")
                if args.verbose:
                    print("    " + r.stderr.strip().replace("\n", "\n    ")[-2000:])
    tried, held = Counter(r.category for r in results), Counter(r.category for r in results
                                                                if r.outcome == "held")
    skipped = Counter(r.category for r in results if r.outcome.startswith("skipped"))
    print(f"\n{'category':<18} {'tried':>5} {'held':>5} {'skipped':>7}")
    for cat in tried:
        print(f"{cat:<18} {tried[cat]:>5} {held[cat]:>5} {skipped[cat]:>7}")
    total, ok, skip = sum(tried.values()), sum(held.values()), sum(skipped.values())
    print(f"{'all':<18} {total:>5} {ok:>5} {skip:>7}")
    return 0 if ok + skip == total else 1


if __name__ == "__main__":
    sys.exit(main())
