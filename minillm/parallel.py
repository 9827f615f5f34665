"""Data parallelism over MPI: which process of how many this is, and the few collectives minillm uses.

    world = parallel.get_world()        # Single() without mpiexec; MPIWorld() under mpiexec -n N > 1
    world.rank, world.size, world.local_rank
    grads = allreduce_grads(world, grads, names)   # one in-place Allreduce of one flat buffer
    with world.together():              # an error raised in the block on any rank is raised on every rank
        ...
    world.on_root(fn, *args)            # fn on rank 0 alone; every rank raises if it failed
    world.check(fn, *args)              # fn on every rank, one agreement point
    world.sum(values)                   # a few float64 sums over the ranks
    log = world.root_log(log)           # log on rank 0, quiet (says nothing) on the others

The only module that imports mpi4py, and only under a launcher of N > 1 processes (else
:class:`Single`, a no-op world). A launch is read from the launchers' variables, in order:

    OMPI_COMM_WORLD_SIZE    Open MPI's mpiexec / mpirun
    PMI_SIZE                MPICH's and Intel MPI's mpiexec (Hydra), srun --mpi=pmi2
    SLURM_STEP_NUM_TASKS    srun (set in each task of a job step; a batch script's own shell is
                            not a step, so ``sbatch`` alone stays one process)
    PMIX_RANK               PMIx launchers (srun --mpi=pmix, prterun): no size variable; MPI is asked

How the trainers use it (:mod:`minillm.training.sft`, :mod:`.rl`): every rank builds the
same model, tokenizer and data order from the seed; rank r computes the gradients of its
contiguous share of the step's micro-batches (:func:`shard`), micro-batch k weighted by
n_k / N (N: the step's target tokens); one ``Allreduce`` (MPI_SUM, in the gradient's dtype)
of one flat host buffer (:func:`flatten`; a GPU's gradients too, no CUDA-aware MPI assumed)
gives every rank the step's gradient. A sum of two numbers is the same in either order, so
2 ranks of one micro-batch each are bit-identical to one process with ``--grad-accum 2``;
with more, MPI's reduction tree re-associates the sum (equal to rounding: 1e-7 relative in float32).
No pickle crosses ranks: text (error messages, outputs as JSON) travels as UTF-8 bytes in NumPy
buffers (:meth:`Single.gather_texts`). A rank whose launcher dies ends itself (:mod:`minillm.launcher`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from minillm.backend import get_xp, to_numpy
from minillm.launcher import watch_launcher

SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS")
PMIX_VARIABLE = "PMIX_RANK"


def launched_size(environ: Mapping[str, str] | None = None) -> int | None:
    """The number of processes a launcher started (1: none), from ``environ``; None: ask MPI (PMIx).
    A size variable that is not a positive integer is a ValueError naming it."""
    env = os.environ if environ is None else environ
    for name in SIZE_VARIABLES:
        if name in env:
            try:
                n = int(env[name])
            except ValueError:
                n = 0
            if n < 1:
                raise ValueError(f"environment variable {name}={env[name]!r} is not a process count")
            return n
    return None if PMIX_VARIABLE in env else 1


class ParallelError(RuntimeError):
    """Another rank failed: its message, its exception's class names (``kinds``, the MRO) and rank.
    Raised on every rank but the failing one, which re-raises its own exception."""

    minillm_agreed = True

    def __init__(self, message: str, kinds: Sequence[str], rank: int):
        super().__init__(message)
        self.kinds, self.rank = tuple(kinds), rank


def mark_agreed(error: BaseException) -> None:
    """Mark ``error`` as raised on every rank (by :meth:`Single.agree`): no rank is left waiting."""
    with contextlib.suppress(AttributeError):  # exceptions with __slots__
        error.minillm_agreed = True


def is_agreed(error: BaseException) -> bool:
    """Whether every rank raised ``error`` (or its :class:`ParallelError`) at one agreement point."""
    return bool(getattr(error, "minillm_agreed", False))


def quiet(*args, **kwargs) -> None:
    """Say nothing: the log of a rank other than 0 (:meth:`Single.root_log`), or of a quiet call."""


def error_message(error: BaseException) -> str:
    """The one line an error says (a KeyError's argument, not its repr)."""
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error)


class Single:
    """The world of one process: rank 0 of 1; every collective returns its input."""

    rank, size, local_rank = 0, 1, 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce_(self, buf: np.ndarray) -> np.ndarray:
        """Sum ``buf`` (a contiguous host array) over the ranks, in place; returns it."""
        return buf

    def gather_texts(self, text: str) -> list[str]:
        """Every rank's ``text``, in rank order, on every rank."""
        return [text]

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Every rank's float64 ``rows`` (n_r, C) stacked in rank order (sum n_r, C), on every rank."""
        return np.asarray(rows, dtype=np.float64)

    def agree(self, error: BaseException | None) -> None:
        """Every rank calls this at the same point: when any rank passes an error, all raise.

        The failing rank re-raises its own exception; the others raise :class:`ParallelError`
        with the lowest failing rank's message. Nothing happens when every rank passes None.
        """
        if error is not None:
            mark_agreed(error)
            raise error

    def sum(self, values: Sequence[float]) -> np.ndarray:
        """The sums over the ranks of a few float64 ``values`` (one small Allreduce), on every rank."""
        return self.allreduce_(np.array(values, dtype=np.float64))

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """A block every rank runs to its end, then agrees on: ``with world.together(): ...``.

        An exception (not a KeyboardInterrupt or SystemExit) raised in the block on any rank
        is raised on every rank as the block ends: the failing rank's own, a :class:`ParallelError`
        with its message on the others (:meth:`agree`). So a failure on one rank never leaves
        the others waiting in the next collective.
        """
        try:
            yield
        except Exception as error:  # noqa: BLE001 - handed to every rank by agree
            self.agree(error)
            raise
        self.agree(None)

    def same(self, text: str, what: str) -> None:
        """Every rank holds the same ``text`` (a fingerprint of ``what``), else all raise ValueError."""
        texts = self.gather_texts(text)
        odd = [r for r, t in enumerate(texts) if t != texts[0]]
        if odd:
            error = ValueError(f"the {self.size} ranks disagree on {what} (rank {odd[0]} differs "
                               "from rank 0): give every rank the same command, data and files")
            mark_agreed(error)  # every rank saw the same texts: all raise it here
            raise error

    def check(self, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` on every rank as one agreement point: its result, or every rank raises."""
        with self.together():
            return fn(*args, **kwargs)

    def on_root(self, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` on rank 0 alone (a write to the run folder), as one agreement point:
        its result on rank 0, None on the others; when it raises, every rank raises."""
        with self.together():
            return fn(*args, **kwargs) if self.is_root else None

    def root_log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """``log`` on rank 0, :func:`quiet` on the others: a run says each line once (no agreement)."""
        return log if self.is_root else quiet

    def abort(self, code: int) -> None:
        """End every rank (an error that escaped the agreement points); one process: nothing."""


class MPIWorld(Single):
    """MPI_COMM_WORLD through mpi4py (imported here, on first use)."""

    def __init__(self):
        from mpi4py import MPI

        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        # the rank among the processes of this node (which GPU to take)
        self.local_rank = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        watch_launcher(self.rank)  # a rank ends itself when its launcher dies (kill -9 of mpiexec)

    def allreduce_(self, buf: np.ndarray) -> np.ndarray:
        if not (isinstance(buf, np.ndarray) and buf.flags.c_contiguous):
            raise TypeError("allreduce_ needs a contiguous NumPy buffer")
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def _allgatherv(self, flat: np.ndarray, mpi_type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every rank's 1-D ``flat`` joined in rank order (sum n_r,), with the sizes n_r and offsets."""
        sizes = np.zeros(self.size, dtype=np.int64)
        self.comm.Allgather(np.array([flat.size], dtype=np.int64), sizes)
        out = np.empty(int(sizes.sum()), dtype=flat.dtype)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.comm.Allgatherv(np.ascontiguousarray(flat), [out, sizes, offsets, mpi_type])
        return out, sizes, offsets

    def gather_texts(self, text: str) -> list[str]:
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        out, sizes, offsets = self._allgatherv(data, self.MPI.BYTE)
        return [out[o:o + s].tobytes().decode("utf-8") for o, s in zip(offsets, sizes, strict=True)]

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.float64)
        out, _, _ = self._allgatherv(rows.reshape(-1), self.MPI.DOUBLE)
        return out.reshape(-1, rows.shape[1])  # (sum n_r, C)

    def agree(self, error: BaseException | None) -> None:
        mine = "" if error is None else json.dumps(
            {"kinds": [c.__name__ for c in type(error).__mro__], "message": error_message(error)})
        texts = self.gather_texts(mine)
        failed = [(r, json.loads(t)) for r, t in enumerate(texts) if t]
        if not failed:
            return
        if error is not None:
            mark_agreed(error)
            raise error
        rank, first = failed[0]
        raise ParallelError(first["message"], first["kinds"], rank)

    def abort(self, code: int) -> None:
        self.comm.Abort(code)


@functools.lru_cache(maxsize=1)
def get_world() -> Single:
    """This process's world, made once (MPI is initialised once per process): see the module docstring."""
    n = launched_size()
    if n == 1:
        return Single()
    world = MPIWorld()
    return world if world.size > 1 else Single()


SINGLE = Single()


# --------------------------------------------------------------------------- pure helpers


def shard(n: int, size: int, rank: int) -> range:
    """The items of ``rank``: a contiguous block of ``n`` items split as evenly as possible.

    The first ``n % size`` ranks take one more; every item has exactly one rank.
    """
    if not (0 <= rank < size):
        raise ValueError(f"rank {rank} is not in a world of {size}")
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def flatten(tensors: Mapping[str, object], names: Sequence[str], dtype) -> np.ndarray:
    """One contiguous host buffer (P,) of the tensors ``names``, in that order (missing: zeros)."""
    sizes = [int(np.prod(tensors[n].shape)) for n in names]
    buf = np.empty(sum(sizes), dtype=dtype)
    at = 0
    for name, size in zip(names, sizes, strict=True):
        buf[at:at + size] = to_numpy(tensors[name]).reshape(-1)
        at += size
    return buf


def unflatten(buf: np.ndarray, like: Mapping[str, object], names: Sequence[str]) -> dict:
    """Inverse of :func:`flatten`: tensors shaped as ``like[name]`` on its device (host: views)."""
    out, at = {}, 0
    for name in names:
        ref = like[name]
        size = int(np.prod(ref.shape))
        out[name] = get_xp(ref).asarray(buf[at:at + size].reshape(ref.shape))  # (ref.shape)
        at += size
    if at != buf.size:
        raise ValueError(f"a buffer of {buf.size} numbers for tensors of {at}")
    return out


def allreduce_grads(world: Single, grads: dict, params: Mapping[str, object]) -> dict:
    """Every rank's ``grads`` summed, keyed like ``params`` (sorted names), in one Allreduce.

    A parameter a rank has no gradient for contributes zeros. The result keeps the
    key order of ``grads`` (the model's backward order, the same on every rank): a
    global norm summed over it then equals one process's bit for bit. One process:
    ``grads`` itself.
    """
    if world.size == 1:
        return grads
    names = sorted(params)
    dtype = np.dtype(next(iter(params.values())).dtype)
    full = {n: grads[n] if n in grads else np.zeros(params[n].shape, dtype) for n in names}
    summed = unflatten(world.allreduce_(flatten(full, names, dtype)), params, names)
    return {n: summed[n] for n in [*grads, *(n for n in params if n not in grads)]}
