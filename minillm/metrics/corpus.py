"""The reference layout every corpus metric takes, and its checks.

``references[i]`` is the list of reference strings for ``hypotheses[i]`` (it may
hold a different number of references for each hypothesis).
"""

from __future__ import annotations

from collections.abc import Sequence


def check_corpus(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Validate the corpus layout: one non-empty list of reference strings per hypothesis."""
    if isinstance(hypotheses, str):
        raise TypeError("hypotheses must be a list of strings, not a single string")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} reference lists; "
            "references[i] is the list of references for hypotheses[i]"
        )
    if not hypotheses:
        raise ValueError("the corpus is empty")
    for i, refs in enumerate(references):
        check_references(refs, f"references[{i}]")


def check_references(refs: Sequence[str], name: str) -> None:
    if isinstance(refs, str):
        raise TypeError(f"{name} must be a list of reference strings; got a str (wrap it)")
    if len(refs) == 0:
        raise ValueError(f"{name} holds no reference")
