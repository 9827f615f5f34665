"""A rank of ``mpiexec -n N`` ends itself when its launcher is gone (kill -9 of mpiexec or its proxy).

    watch_launcher(rank)      # a daemon thread; MPIWorld starts it on every rank

A rank is a child of its launcher's process: MPICH's ``hydra_pmi_proxy`` under
``mpiexec``, or ``mpiexec.gforker`` itself. When the launcher dies without ending its
children (kill -9 of gforker, or of the proxy), a rank would run on alone, holding
its run folder's lock, or wait forever in a collective for a rank that is gone. The
watchdog looks every :data:`INTERVAL` seconds whether the rank's parent is still the
one it started with, and whether the processes above it up to the launcher itself (a
process whose name starts with one of :data:`LAUNCHERS`, found through ``/proc`` on
Linux) still live. When one is gone it says so in one line on stderr and ends the
process (``os._exit``): the OS lets go of the folder's lock, as after kill -9, and the
run folder's journal keeps the last committed checkpoint.
"""

from __future__ import annotations

import os
import threading
import time

LAUNCHERS = ("mpiexec", "mpirun", "orterun", "prterun", "srun")  # names a launcher's process starts with
INTERVAL = 0.5  # seconds between looks
EXIT_CODE = 1


def process(pid: int) -> tuple[str, int, str] | None:
    """(name, parent pid, start time) of ``pid`` from /proc (None: gone, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    name = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()  # state, ppid, ..., starttime (field 22)
    return name, int(fields[1]), fields[19]


def ancestors(pid: int, limit: int = 16) -> list[tuple[int, str]]:
    """(pid, start time) of each process from ``pid`` up to the first launcher (:data:`LAUNCHERS`);
    only ``pid`` when no launcher is found below init (or there is no /proc)."""
    chain = []
    while pid > 1 and len(chain) < limit:
        info = process(pid)
        if info is None:
            break
        name, parent, start = info
        chain.append((pid, start))
        if name.startswith(LAUNCHERS):
            return chain
        pid = parent
    return chain[:1]


def alive(pid: int, start: str) -> bool:
    """Whether ``pid`` still runs and is the process that started at ``start`` (not a reused pid;
    without /proc, whether some process ``pid`` runs)."""
    info = process(pid)
    if info is not None:
        return info[2] == start
    if os.path.isdir("/proc"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it runs
        pass
    return True


def watch_launcher(rank: int, interval: float = INTERVAL) -> threading.Thread:
    """Start the watchdog of this rank (see the module docstring); returns its daemon thread."""
    parent = os.getppid()
    watched = ancestors(parent) or [(parent, "")]

    def look() -> None:
        while True:
            time.sleep(interval)
            gone = os.getppid() != parent or not all(alive(p, s) for p, s in watched)
            if gone:
                msg = (f"minillm: rank {rank}: its launcher (pid {watched[-1][0]}) is gone; this rank "
                       "stops, its run folder keeps the last checkpoint\n")
                try:
                    os.write(2, msg.encode())
                finally:
                    os._exit(EXIT_CODE)

    thread = threading.Thread(target=look, name="minillm-launcher-watchdog", daemon=True)
    thread.start()
    return thread

