"""Evaluation metrics: BLEU, chrF, ROUGE, perplexity and exact match.

Each metric is a readable re-derivation of the reference library that the field reports
numbers with, and agrees with it to floating-point rounding:

    corpus_bleu, sentence_bleu   sacrebleu 2.x defaults (13a tokenizer, 'exp' smoothing,
                                 mixed case; effective order for sentence_bleu only)
    chrf                         sacrebleu.corpus_chrf defaults (chrF2, 6 character orders)
    rouge                        rouge_score.rouge_scorer.RougeScorer(types, use_stemmer)

BLEU and chrF are on the 0-100 scale, ROUGE on 0-1. Only the standard library is used;
``use_stemmer=True`` imports nltk's Porter stemmer when called.

Reference format: ``references[i]`` is the list of reference strings for
``hypotheses[i]`` (it may hold a different number of references for each hypothesis).
sacrebleu takes the transpose, one stream per reference "system":
``sacrebleu.corpus_bleu(hyps, [[refs[0] for refs in references], ...])``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import NamedTuple

__all__ = [
    "RougeScore",
    "chrf",
    "corpus_bleu",
    "exact_match",
    "perplexity",
    "rouge",
    "sentence_bleu",
    "tokenize_13a",
    "tokenize_rouge",
]

# ---------------------------------------------------------------------------------------
# BLEU (Papineni et al., 2002) as computed by sacrebleu
# ---------------------------------------------------------------------------------------

BLEU_MAX_ORDER = 4

# The mteval-v13a rules, copied verbatim from sacrebleu/tokenizers/tokenizer_re.py and
# applied in this order. Their interplay (e.g. "a..b", "3.5", "1,000.") is what defines
# the tokenizer, so they are not paraphrased.
_13A_RULES = (
    # split off ASCII punctuation except the apostrophe, comma, hyphen and period
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    # split off a period or comma unless it follows a digit ...
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    # ... or unless it is followed by a digit ("3.5" and "1,000" stay whole)
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    # split off a hyphen that follows a digit ("9-5" -> "9 - 5")
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
)

# HTML entities undone by 13a, in sacrebleu's order ("&amp;lt;" becomes "<").
_13A_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))


def tokenize_13a(line: str) -> list[str]:
    """Tokenize one segment like sacrebleu's default '13a' tokenizer (mteval-v13a.pl).

    Steps, as sacrebleu applies them: strip trailing whitespace; delete "<skipped>" and
    "-\\n"; turn the remaining newlines into spaces; unescape &quot; &amp; &lt; &gt;;
    apply the four regex rules above; split on (Unicode) whitespace. Case is kept.

    tokenize_13a("Hello, world! 3.5 9-5 a-b") == ["Hello", ",", "world", "!", "3.5",
                                                  "9", "-", "5", "a-b"]
    """
    line = line.rstrip()
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in _13A_ENTITIES:
        line = line.replace(entity, char)
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def _word_ngrams(tokens: Sequence[str], max_order: int) -> Counter[tuple[str, ...]]:
    """Counts of every n-gram of ``tokens`` with 1 <= n <= max_order."""
    return Counter(
        tuple(tokens[i : i + n])
        for n in range(1, max_order + 1)
        for i in range(len(tokens) - n + 1)
    )


class _BleuStats(NamedTuple):
    """Sufficient statistics of BLEU; a corpus adds them up segment by segment."""

    hyp_len: int  # c: hypothesis tokens
    ref_len: int  # r: closest reference length
    correct: tuple[int, ...]  # clipped n-gram matches, n = 1..4
    total: tuple[int, ...]  # hypothesis n-grams, n = 1..4


def _bleu_segment_stats(hypothesis: str, references: Sequence[str]) -> _BleuStats:
    """Clipped n-gram matches and lengths of one hypothesis against its references.

    Clipping: a hypothesis n-gram g counts at most as often as it appears in any single
    reference,  correct_n = sum_{g of order n} min(count_hyp(g), max_ref count_ref(g)).
    Closest reference length: r = argmin_{ref} |len(ref) - c|, ties broken towards the
    shorter reference.
    """
    hyp = tokenize_13a(hypothesis)
    refs = [tokenize_13a(ref) for ref in references]

    max_ref_counts: Counter[tuple[str, ...]] = Counter()
    for ref in refs:
        max_ref_counts |= _word_ngrams(ref, BLEU_MAX_ORDER)  # Counter "|" = elementwise max

    correct = [0] * BLEU_MAX_ORDER
    total = [0] * BLEU_MAX_ORDER
    for ngram, count in _word_ngrams(hyp, BLEU_MAX_ORDER).items():
        total[len(ngram) - 1] += count
        correct[len(ngram) - 1] += min(count, max_ref_counts[ngram])

    c = len(hyp)
    r = min((len(ref) for ref in refs), key=lambda length: (abs(length - c), length))
    return _BleuStats(c, r, tuple(correct), tuple(total))


def _bleu_from_stats(stats: _BleuStats, effective_order: bool) -> float:
    """BLEU on the 0-100 scale from (corpus-summed) statistics, with 'exp' smoothing.

        BLEU = BP * exp( (1/N) * sum_{n=1}^{N} log p_n )
        BP   = 1 if c >= r else exp(1 - r/c)                (0 if c == 0)
        p_n  = 100 * correct_n / total_n                    if correct_n > 0
        p_n  = 100 / (2^k * total_n)                        if correct_n == 0, where k
               counts the orders <= n with no match ('exp' smoothing, NIST mteval-v13a)

    N = 4, except with ``effective_order``, where N is the highest order the hypothesis
    has any n-gram of. Without it, an order with no hypothesis n-grams at all (total_n
    = 0, e.g. every hypothesis shorter than 4 tokens) makes BLEU = 0; sacrebleu gets
    the same 0.0 as exp(-9999999999 / 4). BLEU = 0 too when nothing matches.
    """
    if sum(stats.correct) == 0:
        return 0.0
    c, r = stats.hyp_len, stats.ref_len  # c > 0: a match needs a hypothesis token
    brevity_penalty = 1.0 if c >= r else math.exp(1 - r / c)

    log_precisions = []
    zero_match_orders = 0  # k in the docstring
    for correct_n, total_n in zip(stats.correct, stats.total, strict=True):
        if total_n == 0:
            if not effective_order:
                return 0.0
            break
        if correct_n == 0:
            zero_match_orders += 1
            precision = 100.0 / (2**zero_match_orders * total_n)
        else:
            precision = 100.0 * correct_n / total_n
        log_precisions.append(math.log(precision))
    return brevity_penalty * math.exp(sum(log_precisions) / len(log_precisions))


def _check_corpus(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
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
        _check_references(refs, f"references[{i}]")


def _check_references(refs: Sequence[str], name: str) -> None:
    if isinstance(refs, str):
        raise TypeError(f"{name} must be a list of reference strings; got a str (wrap it)")
    if len(refs) == 0:
        raise ValueError(f"{name} holds no reference")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0-100), equal to ``sacrebleu.corpus_bleu`` with its defaults.

    Statistics are summed over the corpus before the formula is applied (not averaged
    per sentence): c = sum_i c_i, r = sum_i r_i, correct_n = sum_i correct_{i,n}, ...;
    see ``_bleu_from_stats`` for the formula (N = 4, 'exp' smoothing).

    hypotheses: (B,) strings; references: (B,) lists of reference strings, references[i]
    for hypotheses[i]. Tokenized by 13a, case-sensitive.
    """
    _check_corpus(hypotheses, references)
    segments = [
        _bleu_segment_stats(hypothesis, refs)
        for hypothesis, refs in zip(hypotheses, references, strict=True)
    ]
    stats = _BleuStats(
        hyp_len=sum(s.hyp_len for s in segments),
        ref_len=sum(s.ref_len for s in segments),
        correct=tuple(map(sum, zip(*(s.correct for s in segments), strict=True))),
        total=tuple(map(sum, zip(*(s.total for s in segments), strict=True))),
    )
    return _bleu_from_stats(stats, effective_order=False)


def sentence_bleu(hypothesis: str, references: Sequence[str]) -> float:
    """Sentence BLEU (0-100), equal to ``sacrebleu.sentence_bleu`` with its defaults.

    The corpus formula on one segment, with effective order: the geometric mean runs
    over the orders the hypothesis has n-grams of, so a 2-token hypothesis is scored on
    unigrams and bigrams rather than zeroed.
    """
    _check_references(references, "references")
    return _bleu_from_stats(_bleu_segment_stats(hypothesis, references), effective_order=True)


# ---------------------------------------------------------------------------------------
# chrF (Popović, 2015) as computed by sacrebleu
# ---------------------------------------------------------------------------------------

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
    _check_corpus(hypotheses, references)
    totals = [(0, 0, 0)] * CHRF_CHAR_ORDER
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        segment = _chrf_segment_stats(hypothesis, refs)
        totals = [
            (h0 + h1, r0 + r1, m0 + m1)
            for (h0, r0, m0), (h1, r1, m1) in zip(totals, segment, strict=True)
        ]
    return _chrf_from_stats(totals)


# ---------------------------------------------------------------------------------------
# ROUGE (Lin, 2004) as computed by rouge-score
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Perplexity and exact match
# ---------------------------------------------------------------------------------------


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
