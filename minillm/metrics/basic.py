"""Perplexity and exact match."""

from __future__ import annotations

import math
from collections.abc import Sequence


def perplexity(total_nll: float, n_tokens: int) -> float:
    """Corpus perplexity  PPL = exp(total_nll / n_tokens).

    total_nll is the summed negative log-likelihood in nats over all n_tokens target
    tokens of the corpus (not a mean of per-sentence perplexities). Overflow gives inf.
    """
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    try:
        return math.exp(float(total_nll) / n_tokens)
    except OverflowError:
        return math.inf


def exact_match(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Fraction (0-1) of predictions equal to one of their references.

        EM = (1/B) * sum_i [ strip(pred_i) in {strip(ref) : ref in refs_i} ]

    Normalisation is ``str.strip()`` only: leading and trailing (Unicode) whitespace is
    removed; case, punctuation, inner whitespace and Unicode forms must match exactly.
    references[i] is one string or a list of acceptable strings.
    """
    if isinstance(predictions, str):
        raise TypeError("predictions must be a list of strings, not a single string")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions")
    hits = 0
    for prediction, refs in zip(predictions, references, strict=True):
        candidates = [refs] if isinstance(refs, str) else refs
        hits += prediction.strip() in {ref.strip() for ref in candidates}
    return hits / len(predictions)
