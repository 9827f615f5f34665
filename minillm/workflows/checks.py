"""The checks every workflow makes of its settings before it reads or writes anything.

    check_positive(settings, ("steps", "batch_size"))   # ValueError naming the flag: "--steps must ..."
    check_at_most("max_source_len", 10**9)                # ... "--max-source-len must be at most 65,536"
    check_run_flags(settings, world)                      # --resume/--overwrite, --save-dtype, device,
                                                          # threads

Each failure is one line naming the flag (``flag("n_train")`` is ``--n-train``):
ValueError / FileNotFoundError, or :class:`SettingsError` (a ValueError) for
settings that contradict each other; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from minillm.runfolder.checkpoint import SAVE_DTYPES, TOKENIZER_NAME
from minillm.runfolder.rules import SettingsError
from minillm.training.checks import MAX_INT
from minillm.training.checks import MAXIMA as TRAINER_MAXIMA

# The largest value of each count a workflow takes besides the trainers' settings: far beyond
# any run this code can do, yet small enough that nothing sized by it runs away.
MAXIMA = {"vocab_size": 1 << 20,  # a tokenizer trained here (the largest in use hold 256k)
          "max_source_len": 1 << 16, "max_target_len": 1 << 16, "stop_after": 1 << 30,
          "num_beams": 1 << 12, "epochs": 10**6}
MAX_THREADS = 1 << 12  # BLAS threads (OpenBLAS takes an int)
EXAMPLE_COUNTS = ("n_train", "n_eval", "n")  # examples made or read: bounded by the memory
EXAMPLE_BYTES, MAX_EXAMPLES = 2048, 10**8  # an example with its tokens and batch rows, generously

Log = Callable[[str], None]


def log_to_stderr(msg: str) -> None:
    """The default ``log`` of every workflow: one line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def flag(name: str) -> str:
    """The command-line flag of a settings field: ``n_train`` -> ``--n-train``."""
    return "--" + name.replace("_", "-")


def apply_threads(threads: Any, log: Log = None) -> None:
    """Settings' ``threads`` (a count >= 1, "auto" or None) applied to the BLAS; a note when it cannot be."""
    from minillm.blas import use_threads

    if threads is None:
        return
    count = isinstance(threads, int) and not isinstance(threads, bool) and 1 <= threads <= MAX_THREADS
    if threads != "auto" and not count:
        raise SettingsError(f"--threads: expected a count in [1, {MAX_THREADS}] or 'auto', got {threads!r}")
    if not use_threads(threads):
        (log or log_to_stderr)(f"threads {threads}: not applied (OPENBLAS_NUM_THREADS or OMP_NUM_THREADS "
                               "is set, or NumPy is not on OpenBLAS here)")


def check_device(device: str, world=None) -> None:
    """SettingsError in one line when ``device`` is unusable: 'cuda' without CuPy or a GPU.

    Workflows call this before they read or write anything, so a bad device
    never leaves a half-made run folder behind. Under data parallelism
    (``world`` of more than one rank) each rank takes the GPU of its local rank
    (:func:`minillm.backend.use_gpu`).
    """
    from minillm.backend import use_gpu, xp_for

    try:
        xp_for(device)
        if device == "cuda" and world is not None and world.size > 1:
            use_gpu(world.local_rank)
    except RuntimeError as e:
        raise SettingsError(str(e)) from None


def most(name: str) -> int:
    """The largest value the count setting ``name`` may take (:data:`MAXIMA`, the trainers' own
    :data:`minillm.training.checks.MAXIMA`, else 2**53); examples by this machine's memory."""
    if name in EXAMPLE_COUNTS:
        try:
            memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):  # pragma: no cover - no sysconf (Windows)
            memory = 1 << 40
        return min(MAX_EXAMPLES, memory // EXAMPLE_BYTES)
    return MAXIMA.get(name, TRAINER_MAXIMA.get(name, MAX_INT))


def check_at_most(name: str, v: Any) -> None:
    """ValueError naming the flag when the count ``v`` of the setting ``name`` exceeds :func:`most`."""
    if v is not None and v > most(name):
        why = (f" (an example takes about {EXAMPLE_BYTES // 1024} KiB, on this machine's memory)"
               if name in EXAMPLE_COUNTS else "")
        raise ValueError(f"{flag(name)} must be at most {most(name):,}{why}, got {v:,}")


def check_positive(settings, names: Sequence[str]) -> None:
    """ValueError naming the flag when one of the fields ``names`` is given and below 1, or above
    what it may be (:func:`check_at_most`)."""
    for name in names:
        v = getattr(settings, name)
        if v is not None and v < 1:
            raise ValueError(f"{flag(name)} must be positive, got {v}")
        check_at_most(name, v)


def check_folder(folder: str, what: str, needs: str) -> str:
    """The tokenizer.json path of a Hugging Face T5 ``folder``; FileNotFoundError if missing.

    ``what`` names the folder in the message ("DIR is a Hugging Face T5 folder");
    ``needs`` says who needs the tokenizer ("minillm eval needs the folder's tokenizer").
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not a folder{f' ({what})' if what else ''}")
    tok_path = os.path.join(folder, TOKENIZER_NAME)
    if not os.path.exists(tok_path):
        raise FileNotFoundError(f"{tok_path}: missing ({needs})")
    return tok_path


def check_save_dtype(save_dtype: str | None) -> None:
    """ValueError naming --save-dtype unless it is None or one of ``checkpoint.SAVE_DTYPES``."""
    if save_dtype is not None and save_dtype not in SAVE_DTYPES:
        raise ValueError(f"--save-dtype must be one of {', '.join(SAVE_DTYPES)}, "
                         f"got {save_dtype!r}")


def check_run_flags(s, world) -> None:
    """What a run (``train``, ``rl``) checks of its flags, in order: --resume with --overwrite,
    --save-dtype, the device, then ``threads`` applied (its note said by rank 0 alone)."""
    if s.resume and s.overwrite:
        raise SettingsError("--resume and --overwrite contradict each other")
    check_save_dtype(s.save_dtype)
    check_device(s.device, world)
    apply_threads(s.threads, world.root_log(log_to_stderr))
