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

METRICS_NAME = "metrics.jsonl"


def read_metrics(path: str, until_step: int | None = None) -> list[dict]:
    """The records of a metrics.jsonl (a missing file gives none; a torn last line is dropped).

    ``until_step``: only the records of steps up to it (a run resumed from that step's
    checkpoint continues those; the later ones are not part of it).
    """
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    if until_step is not None:
        records = [r for r in records if r.get("step", 0) <= until_step]
    return records


def write_metrics(path: str, records: list[dict]) -> None:
    """Rewrite metrics.jsonl with ``records`` (atomically), readable by all as the folder's files are."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in records), mode=FILE_MODE)
