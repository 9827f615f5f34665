"""metrics.jsonl: a run's log, one JSON record per line.

    DIR/metrics.jsonl   "train" every log_every steps, "eval" / "final_eval" (and REINFORCE's
                        "initial_eval") at each evaluation; each with its "step" and "kind"

The loop rewrites the whole file (atomically) with each new record, so a reader
never sees half of one; records written after the checkpoint a run resumes from
are dropped by the run that resumes.
"""

from __future__ import annotations

import json
import os

from minillm.storage.fileio import FILE_MODE, write_text
from minillm.storage.reading import open_input, read_lines

METRICS_NAME = "metrics.jsonl"


def read_metrics(path: str, until_step: int | None = None) -> list[dict]:
    """The records of a metrics.jsonl (a missing file gives none; a torn last line is dropped).

    ``until_step``: only the records of steps up to it (a run resumed from that step's
    checkpoint continues those; the later ones are not part of it). Read as a stream of
    lines of at most 1 MiB by the one rule (:mod:`minillm.storage.reading`: a regular
    file of the run folder); the records end at the first line that is not a JSON
    object with an integer step, as they do at a torn one.
    """
    if not os.path.lexists(path):
        return []
    records = []
    with open_input(path, None, os.path.dirname(path)) as f:
        for _, line in read_lines(f, path):
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                break
            step = record.get("step", 0) if isinstance(record, dict) else None
            if not isinstance(step, int) or isinstance(step, bool):
                break
            if until_step is None or step <= until_step:
                records.append(record)
    return records


def write_metrics(path: str, records: list[dict]) -> None:
    """Rewrite metrics.jsonl with ``records`` (atomically), readable by all as the folder's files are."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in records), mode=FILE_MODE)
