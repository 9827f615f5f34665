"""A panic of the Rust ``tokenizers`` library as one line naming the tokenizer's file.

A tokenizer.json is data, and ``tokenizers`` can panic on what it describes: a regex of
its normalizer or pre-tokenizer that backtracks without end stops with "retry-limit-in-match
over". The panic reaches Python as pyo3's ``PanicException``, a BaseException (it passes
``except Exception``), after Rust's panic hook has written its own lines on stderr.

    with panics_as_errors("DIR/tokenizer.json"):
        ids = backend.encode(text).ids        # a panic: ValueError("DIR/tokenizer.json: ...")
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def panics_as_errors(source: str, doing: str = "on a text") -> Iterator[None]:
    """A panic of the Rust ``tokenizers`` library in the block (a regex of tokenizer.json that runs
    away, say) as one ValueError naming ``source``.

    A panic is a BaseException, and Rust's panic hook writes its own lines on the process's
    stderr: the block's stderr (file descriptor 2) is held aside, dropped after a panic and
    written out as it was otherwise.
    """
    sys.stderr.flush()
    held, saved = tempfile.TemporaryFile(), os.dup(2)
    os.dup2(held.fileno(), 2)
    panicked = None
    try:
        yield
    except BaseException as e:  # noqa: BLE001 - a panic is a BaseException
        if not is_panic(e):
            raise
        panicked = reason(e)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if panicked is None:  # what the block wrote, written out as it was
            held.seek(0)
            data = held.read()
            while data:
                data = data[os.write(2, data):]
        held.close()
    if panicked is not None:
        raise ValueError(f"{source}: the tokenizers library failed {doing} ({panicked})")


def is_panic(error: BaseException) -> bool:
    """Whether ``error`` is a panic of the Rust ``tokenizers`` library (pyo3's PanicException,
    a BaseException)."""
    return type(error).__name__ == "PanicException"


def reason(error: BaseException) -> str:
    """The first line of an error's message (its class when it has none), cut to 120 characters."""
    text = str(error)
    return text.splitlines()[0][:120] if text.strip() else type(error).__name__
