"""NumPy's BLAS threads: a fixed count, or following the cores other processes leave idle.

    set_blas_threads(n)        OpenBLAS's pool, process-wide (``--threads N``)
    follow_idle_cores()        then ``adapt_threads()`` between steps re-sizes it (``--threads auto``)

OpenBLAS splits each GEMM evenly over its threads. When another process keeps
a core busy, the thread that shares that core runs at a fraction of its speed
and every GEMM waits for it; between GEMMs the idle threads spin, taking time
from the one core that is free. Measured on 2 cores (flan-t5-small shape, batch
8, one training step): 1.68 s quiet with 2 threads, 4.22 s with a busy core and
2 threads, 3.18 s with a busy core and 1 thread. So minillm can size OpenBLAS's
pool to the cores other processes leave idle, re-measured as it runs
(``--threads auto``). It is not the default: OpenBLAS's sums depend on its
thread count (a GEMM's last bits change), so a run whose count follows the
load is no longer reproducible bit for bit, nor a resumed run equal to an
uninterrupted one.
"""

from __future__ import annotations

import math


def _openblas_library():
    """The OpenBLAS that NumPy loaded, as (ctypes library, symbol suffix), or None.

    Found by name in /proc/self/maps (Linux): NumPy's wheels bundle
    ``libscipy_openblas64_`` (symbols ``scipy_openblas_*64_``); a system build
    exports ``openblas_*``.
    """
    import ctypes
    import os

    if not os.path.exists("/proc/self/maps"):
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:  # pragma: no cover - /proc unreadable
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:  # pragma: no cover
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                if hasattr(lib, f"{prefix}_set_num_threads{suffix}") and hasattr(
                        lib, f"{prefix}_get_num_threads{suffix}"):
                    return lib, prefix, suffix
    return None


_BLAS: list = []  # the lookup's result, made once: [None] or [(lib, prefix, suffix)]


def _blas():
    if not _BLAS:
        _BLAS.append(_openblas_library())
    return _BLAS[0]


def blas_threads() -> int | None:
    """How many threads NumPy's OpenBLAS uses now; None when NumPy is not on OpenBLAS."""
    found = _blas()
    if found is None:
        return None
    lib, prefix, suffix = found
    return int(getattr(lib, f"{prefix}_get_num_threads{suffix}")())


def set_blas_threads(n: int) -> int | None:
    """Make NumPy's OpenBLAS use ``n`` threads; returns the count before (None: no OpenBLAS).

    Process-wide, like ``OPENBLAS_NUM_THREADS``; call it between array operations
    (the training loop and decoding do, through :func:`follow_idle_cores`).
    """
    if int(n) < 1:
        raise ValueError(f"the BLAS thread count must be >= 1, got {n!r}")
    found = _blas()
    if found is None:
        return None
    before = blas_threads()
    lib, prefix, suffix = found
    if before != int(n):
        getattr(lib, f"{prefix}_set_num_threads{suffix}")(int(n))
    return before


def threads_for(cores: int, others_busy: float) -> int:
    """Threads for ``cores`` cores of which other processes keep ``others_busy`` (in cores) busy.

    The idle cores, rounded to nearest, at least 1: on 2 cores, 0.4 busy gives 2
    threads, 0.6 busy gives 1.
    """
    return max(1, min(cores, math.floor(cores - others_busy + 0.5)))


def busy_ticks(stat_text: str) -> float:
    """Busy CPU time of the whole machine, in clock ticks, from /proc/stat's text.

    The first line is ``cpu user nice system idle iowait irq softirq steal ...``;
    busy is everything but idle and iowait.
    """
    first = stat_text.split("\n", 1)[0].split()
    if not first or first[0] != "cpu":
        raise ValueError("/proc/stat: the first line is not the 'cpu' total")
    ticks = [int(v) for v in first[1:9]]
    return float(sum(ticks) - ticks[3] - ticks[4])


class IdleCores:
    """Follows the cores other processes keep busy, and sizes OpenBLAS's pool to the rest.

    ``update()`` is cheap (a clock read) until ``interval_s`` has passed since the
    last measurement; then it reads the machine's busy time (/proc/stat) and this
    process's own CPU time (``os.times``), and the difference over the wall time
    is what other processes used, in cores. Under ``mpiexec`` the other ranks
    count as other processes, so two ranks on two cores settle at a thread each.
    """

    def __init__(self, interval_s: float = 1.0, cores: int | None = None):
        import os
        import time

        self.interval_s = float(interval_s)
        self.cores = cores or len(os.sched_getaffinity(0))
        self._clock = time.perf_counter
        self._tick = os.sysconf("SC_CLK_TCK")
        self._last = self._reading()
        self.others_busy = 0.0
        self.threads = blas_threads()

    def _reading(self) -> tuple[float, float, float]:
        """(wall s, machine busy s, own CPU s) now."""
        import os

        with open("/proc/stat", encoding="ascii") as f:
            busy = busy_ticks(f.read()) / self._tick
        t = os.times()
        return self._clock(), busy, t.user + t.system

    def update(self) -> int | None:
        """Re-measure when due and set the thread count; returns it (None: no OpenBLAS)."""
        if self.threads is None or self._clock() - self._last[0] < self.interval_s:
            return self.threads
        now = self._reading()
        wall = now[0] - self._last[0]
        self.others_busy = max(0.0, (now[1] - self._last[1]) - (now[2] - self._last[2])) / wall
        self._last = now
        self.threads = threads_for(self.cores, self.others_busy)
        set_blas_threads(self.threads)
        return self.threads


_FOLLOWING: list[IdleCores] = []  # the process's one follower, once started


def follow_idle_cores(interval_s: float = 1.0, cores: int | None = None) -> bool:
    """Start sizing NumPy's BLAS pool to the idle cores; :func:`adapt_threads` applies it.

    ``cores``: the most threads to use (default: the cores this process may run on).
    Does nothing (False) where the user chose a count (``OPENBLAS_NUM_THREADS`` or
    ``OMP_NUM_THREADS`` set), off Linux, or when NumPy is not on OpenBLAS. The
    workflows call it for ``threads="auto"`` (``--threads auto``); a training script may too.
    Process-wide, as BLAS's pool is. Results then depend on the load in their last
    bits (see above).
    """
    import os

    if any(os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")):
        return False
    if not os.path.exists("/proc/stat") or _blas() is None:
        return False
    if not _FOLLOWING:
        _FOLLOWING.append(IdleCores(interval_s, cores))
    return True


def use_threads(threads: int | str | None) -> bool:
    """Set up the BLAS threads for ``threads``: a count, "auto" (:func:`follow_idle_cores`) or
    None (leave them). False when it could not be applied (no OpenBLAS, or "auto" with
    OPENBLAS_NUM_THREADS / OMP_NUM_THREADS set)."""
    if threads is None:
        return True
    if threads == "auto":
        return follow_idle_cores()
    return set_blas_threads(int(threads)) is not None


def adapt_threads() -> None:
    """Between array operations: re-size the BLAS pool if :func:`follow_idle_cores` is on."""
    if _FOLLOWING:
        _FOLLOWING[0].update()
