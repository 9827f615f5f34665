"""chrF as ``sacrebleu.corpus_chrf`` computes it by default (chrF2: 6 character orders, beta 2),
on the 0-100 scale.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from minillm.metrics.corpus import check_corpus

CHRF_CHAR_ORDER = 6
CHRF_BETA = 2


def _char_ngrams(text: str, max_order: int) -> list[Counter[str]]:
    """Character n-gram counts for n = 1..max_order, after deleting all whitespace."""
    chars = "".join(text.split())
    return [
        Counter(chars[i : i + n] for i in range(len(chars) - n + 1))
        for n in range(1, max_order + 1)
    ]


def _chrf_from_stats(stats: Sequence[tuple[int, int, int]]) -> float:
    """chrF_beta (0-100) from per-order (hyp n-grams, ref n-grams, matches) counts.

        P = mean_n (matches_n / hyp_n),   R = mean_n (matches_n / ref_n)
        chrF = 100 * (1 + beta^2) * P * R / (beta^2 * P + R)

    The means run over the "effective" orders, those with hyp_n > 0 and ref_n > 0
    (sacrebleu's default, eps_smoothing=False). No effective order, or P + R = 0: 0.
    """
    precisions = [m / h for h, r, m in stats if h > 0 and r > 0]
    recalls = [m / r for h, r, m in stats if h > 0 and r > 0]
    if not precisions:
        return 0.0
    precision = sum(precisions) / len(precisions)
    recall = sum(recalls) / len(recalls)
    if precision + recall == 0:
        return 0.0
    factor = CHRF_BETA**2
    return 100 * ((1 + factor) * precision * recall / (factor * precision + recall))


def _chrf_segment_stats(hypothesis: str, references: Sequence[str]) -> list[tuple[int, int, int]]:
    """Per-order (hyp, ref, match) counts against the reference with the best chrF.

    match_n = sum_g min(count_hyp(g), count_ref(g)); hyp_n is counted as 0 when the
    reference has no n-gram of order n (sacrebleu's convention). Among several
    references the first one with the highest segment chrF wins.
    """
    hyp_ngrams = _char_ngrams(hypothesis, CHRF_CHAR_ORDER)
    best_stats: list[tuple[int, int, int]] = []
    best_score = -1.0
    for reference in references:
        stats = []
        for hyp, ref in zip(hyp_ngrams, _char_ngrams(reference, CHRF_CHAR_ORDER), strict=True):
            matches = sum(min(count, ref[g]) for g, count in hyp.items())
            stats.append((hyp.total() if ref else 0, ref.total(), matches))
        score = _chrf_from_stats(stats)
        if score > best_score:
            best_score, best_stats = score, stats
    return best_stats


def chrf(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus chrF2 (0-100), equal to ``sacrebleu.corpus_chrf`` with its defaults.

    Character 1..6-grams with whitespace removed, case-sensitive, beta = 2, no word
    n-grams. Per-order counts are summed over the corpus (each segment against its best
    reference), then ``_chrf_from_stats`` applies the F-beta formula once.
    """
    check_corpus(hypotheses, references)
    totals = [(0, 0, 0)] * CHRF_CHAR_ORDER
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        segment = _chrf_segment_stats(hypothesis, refs)
        totals = [
            (h0 + h1, r0 + r1, m0 + m1)
            for (h0, r0, m0), (h1, r1, m1) in zip(totals, segment, strict=True)
        ]
    return _chrf_from_stats(totals)
