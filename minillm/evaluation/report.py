"""The held-out figures as small text tables, for the terminal and the logs."""

from __future__ import annotations

from typing import Any


def format_eval(result: dict[str, Any]) -> str:
    """A small table of an SFT evaluation: one line per task, then the overall figures."""
    lines = [f"{'task':<20} {'n':>5} {'exact_match':>12}"]
    for task, row in result["per_task"].items():
        extra = f"   (verified {row['score']:.3f})" if "score" in row and \
            abs(row["score"] - row["exact_match"]) > 1e-12 else ""
        lines.append(f"{task:<20} {row['n']:>5} {row['exact_match']:>12.3f}{extra}")
    lines.append(f"{'overall':<20} {result['n']:>5} {result['exact_match']:>12.3f}"
                 f"   loss {result['loss']:.4f}  perplexity {result['perplexity']:.3f}")
    return "\n".join(lines)


def format_policy_eval(result: dict[str, Any]) -> str:
    """A small table of a policy evaluation: one line per task, then the overall figures."""
    lines = [f"{'task':<20} {'reward':>8}"]
    lines += [f"{t:<20} {v:>8.3f}" for t, v in result["per_task"].items()]
    extra = ""
    if "sampled_reward" in result:
        extra = f"   sampled {result['sampled_reward']:.3f}   KL to reference {result['kl']:.3f} nats"
    lines.append(f"{'overall (greedy)':<20} {result['reward']:>8.3f}{extra}   (n={result['n']})")
    return "\n".join(lines)
