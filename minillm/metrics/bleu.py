"""BLEU (Papineni et al., 2002) as sacrebleu 2.x computes it: the 13a tokenizer, 'exp'
smoothing, mixed case; effective order for ``sentence_bleu`` only. On the 0-100 scale.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from minillm.metrics.corpus import check_corpus, check_references

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


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0-100), equal to ``sacrebleu.corpus_bleu`` with its defaults.

    Statistics are summed over the corpus before the formula is applied (not averaged
    per sentence): c = sum_i c_i, r = sum_i r_i, correct_n = sum_i correct_{i,n}, ...;
    see ``_bleu_from_stats`` for the formula (N = 4, 'exp' smoothing).

    hypotheses: (B,) strings; references: (B,) lists of reference strings, references[i]
    for hypotheses[i]. Tokenized by 13a, case-sensitive.
    """
    check_corpus(hypotheses, references)
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
    check_references(references, "references")
    return _bleu_from_stats(_bleu_segment_stats(hypothesis, references), effective_order=True)
