"""The loss curve of a run as a PNG (matplotlib is an optional extra: ``pip install minillm-t5[plot]``).

    plot_loss(read_metrics("runs/sft/metrics.jsonl"), "runs/sft/loss.png")

Left axis: training loss (mean over each logging interval) and held-out loss
against the optimizer step; right axis: held-out exact match (0-1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def plot_loss(records: Sequence[dict], path: str | os.PathLike) -> bool:
    """Write the loss curve of metrics.jsonl ``records`` to ``path`` (atomically).

    Returns False, writing nothing, when matplotlib is not installed or there is
    nothing to plot.
    """
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") in ("eval", "final_eval")]
    if not train and not evals:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from minillm.storage.fileio import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        if train:
            ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue", lw=1)
        if evals:
            ax.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-",
                    label="held-out loss", color="tab:orange")
            ax2 = ax.twinx()
            ax2.plot([r["step"] for r in evals], [r["exact_match"] for r in evals], "s--",
                     label="held-out exact match", color="tab:green")
            ax2.set_ylim(0, 1)
            ax2.set_ylabel("exact match")
            ax2.legend(loc="center right")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats / target token)")
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return True
