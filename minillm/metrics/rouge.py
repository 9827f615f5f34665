"""ROUGE-N, ROUGE-L and ROUGE-Lsum as ``rouge_score.rouge_scorer.RougeScorer(types, use_stemmer)``
computes them, on the 0-1 scale. ``use_stemmer=True`` imports nltk's Porter stemmer when called.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import NamedTuple


class RougeScore(NamedTuple):
    """One ROUGE score; a plain (precision, recall, fmeasure) tuple, each in [0, 1]."""

    precision: float
    recall: float
    fmeasure: float


_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")
_VALID_TOKEN = re.compile(r"[a-z0-9]+")


def _load_porter_stemmer() -> Callable[[str], str]:
    """nltk's PorterStemmer (default NLTK_EXTENSIONS mode), as rouge-score uses it."""
    try:
        from nltk.stem.porter import PorterStemmer
    except ImportError as err:
        raise ImportError(
            "rouge(..., use_stemmer=True) needs nltk's PorterStemmer; "
            "install nltk (pip install nltk) or pass use_stemmer=False"
        ) from err
    return PorterStemmer().stem


def tokenize_rouge(text: str, stemmer: Callable[[str], str] | None = None) -> list[str]:
    """Tokenize like rouge-score's DefaultTokenizer.

    Lowercase (Python's Unicode ``str.lower``), replace every run of characters outside
    [a-z0-9] by a space, split on spaces. So accented and non-Latin letters and all
    punctuation are separators: "Café, 3.14!" -> ["caf", "3", "14"]. With a stemmer,
    tokens longer than 3 characters are stemmed, and tokens no longer matching
    [a-z0-9]+ are dropped.
    """
    tokens = _NON_ALPHANUMERIC.sub(" ", text.lower()).split()
    if stemmer is not None:
        tokens = [stemmer(token) if len(token) > 3 else token for token in tokens]
        tokens = [token for token in tokens if _VALID_TOKEN.fullmatch(token)]
    return tokens


def _fmeasure(precision: float, recall: float) -> float:
    """F1 = 2 P R / (P + R), and 0 when P + R = 0."""
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _rouge_n(hyp: Sequence[str], ref: Sequence[str], n: int) -> RougeScore:
    """ROUGE-N: clipped n-gram overlap.

        overlap = sum_g min(count_hyp(g), count_ref(g))
        P = overlap / max(#hyp n-grams, 1),   R = overlap / max(#ref n-grams, 1)
    """
    hyp_ngrams = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
    ref_ngrams = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
    overlap = sum(min(count, hyp_ngrams[g]) for g, count in ref_ngrams.items())
    precision = overlap / max(hyp_ngrams.total(), 1)
    recall = overlap / max(ref_ngrams.total(), 1)
    return RougeScore(precision, recall, _fmeasure(precision, recall))


def _lcs_table(ref: Sequence[str], hyp: Sequence[str]) -> list[list[int]]:
    """Dynamic-programming table of LCS lengths, shape (len(ref) + 1, len(hyp) + 1).

        L[i][j] = L[i-1][j-1] + 1              if ref[i-1] == hyp[j-1]
                = max(L[i-1][j], L[i][j-1])    otherwise;  L[i][0] = L[0][j] = 0
    """
    table = [[0] * (len(hyp) + 1) for _ in range(len(ref) + 1)]
    for i in range(1, len(ref) + 1):
        for j in range(1, len(hyp) + 1):
            if ref[i - 1] == hyp[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table


def _lcs_positions(ref: Sequence[str], hyp: Sequence[str]) -> list[int]:
    """Positions in ``ref`` of one longest common subsequence.

    Which LCS matters for the union in ROUGE-Lsum, so the walk back from L[-1][-1]
    breaks ties exactly as rouge-score does: take a match; else step left (j - 1) only
    if L[i][j-1] > L[i-1][j]; else step up (i - 1).
    """
    table = _lcs_table(ref, hyp)
    i, j = len(ref), len(hyp)
    positions = []
    while i > 0 and j > 0:
        if ref[i - 1] == hyp[j - 1]:
            positions.append(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return positions[::-1]


def _rouge_l(hyp: Sequence[str], ref: Sequence[str]) -> RougeScore:
    """ROUGE-L: P = LCS / len(hyp), R = LCS / len(ref); all 0 if either is empty."""
    if not hyp or not ref:
        return RougeScore(0.0, 0.0, 0.0)
    lcs = _lcs_table(ref, hyp)[-1][-1]
    precision = lcs / len(hyp)
    recall = lcs / len(ref)
    return RougeScore(precision, recall, _fmeasure(precision, recall))


def _rouge_lsum(
    hyp_sentences: Sequence[Sequence[str]], ref_sentences: Sequence[Sequence[str]]
) -> RougeScore:
    """ROUGE-Lsum: summary-level union LCS (Lin 2004, section 3.2; ROUGE-1.5.5).

    For each reference sentence r_i, the union over hypothesis sentences c_j of the
    positions of LCS(r_i, c_j) gives the tokens r_i shares with the summary. Each such
    token counts as a hit only while both summaries still have an unused copy of it
    (ROUGE-1.5.5's guard against double counting):

        P = hits / n,   R = hits / m,   n, m = tokens in hypothesis, reference summary
    """
    m = sum(len(sentence) for sentence in ref_sentences)
    n = sum(len(sentence) for sentence in hyp_sentences)
    if m == 0 or n == 0:
        return RougeScore(0.0, 0.0, 0.0)

    ref_unused = Counter(token for sentence in ref_sentences for token in sentence)
    hyp_unused = Counter(token for sentence in hyp_sentences for token in sentence)
    hits = 0
    for ref in ref_sentences:
        union = set().union(*(_lcs_positions(ref, hyp) for hyp in hyp_sentences))
        for token in (ref[i] for i in sorted(union)):
            if ref_unused[token] > 0 and hyp_unused[token] > 0:
                hits += 1
                ref_unused[token] -= 1
                hyp_unused[token] -= 1

    precision = hits / n
    recall = hits / m
    return RougeScore(precision, recall, _fmeasure(precision, recall))


def rouge(
    hypothesis: str,
    reference: str,
    types: Sequence[str] = ("rouge1", "rouge2", "rougeL", "rougeLsum"),
    use_stemmer: bool = False,
) -> dict[str, RougeScore]:
    """ROUGE scores of one hypothesis against one reference, each (P, R, F) in [0, 1].

    Equal to ``RougeScorer(types, use_stemmer=use_stemmer).score(reference, hypothesis)``
    (note rouge-score's argument order: target first). Types: "rougeN" for N = 1..9
    (n-gram overlap), "rougeL" (LCS over the whole text), "rougeLsum" (summary-level
    union LCS, sentences split on "\\n"). Tokens come from ``tokenize_rouge``; with
    ``use_stemmer`` nltk's Porter stemmer is applied to tokens longer than 3 characters.
    """
    if isinstance(types, str):
        raise TypeError(f"types must be a sequence of ROUGE types, e.g. ({types!r},)")
    stemmer = _load_porter_stemmer() if use_stemmer else None
    hyp = tokenize_rouge(hypothesis, stemmer)
    ref = tokenize_rouge(reference, stemmer)

    scores = {}
    for rouge_type in types:
        if rouge_type == "rougeL":
            scores[rouge_type] = _rouge_l(hyp, ref)
        elif rouge_type == "rougeLsum":
            # Empty lines are dropped, as rouge-score does; whitespace-only lines stay
            # (as empty sentences).
            hyp_sentences = [tokenize_rouge(s, stemmer) for s in hypothesis.split("\n") if s]
            ref_sentences = [tokenize_rouge(s, stemmer) for s in reference.split("\n") if s]
            scores[rouge_type] = _rouge_lsum(hyp_sentences, ref_sentences)
        elif re.fullmatch(r"rouge[1-9]", rouge_type):
            scores[rouge_type] = _rouge_n(hyp, ref, int(rouge_type[5:]))
        else:
            raise ValueError(
                f"unknown ROUGE type {rouge_type!r}: use rouge1..rouge9, rougeL or rougeLsum"
            )
    return scores
