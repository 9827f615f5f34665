"""minillm.metrics on hand-checked cases: expected numbers derived on paper from the formulas.

Property tests against sacrebleu and rouge-score: tests/reference/test_metrics.py.
"""

from __future__ import annotations

import math
import sys

import pytest

from minillm import metrics

# ---------------------------------------------------------------------------------------
# Hand-checked cases (expected numbers derived on paper from the formulas)
# ---------------------------------------------------------------------------------------


def test_tokenize_13a_by_hand():
    # "," "!" split off; "3.5" keeps its digit-flanked period; "9-5": a hyphen after a
    # digit splits; "a-b" does not; a sentence-final period splits.
    assert metrics.tokenize_13a("Hello, world! 3.5 9-5 a-b end.") == [
        "Hello", ",", "world", "!", "3.5", "9", "-", "5", "a-b", "end", "."
    ]
    # Trailing whitespace is stripped before "-\n" is deleted: "a-\n" keeps its hyphen.
    assert metrics.tokenize_13a("a-\n") == ["a-"]
    assert metrics.tokenize_13a("a-\nb") == ["ab"]
    # &quot; -> '"' (split off), "&amp;lt;" -> "&lt;" -> "<"; "<skipped>" deleted.
    assert metrics.tokenize_13a("&quot;x&quot; &amp;lt; <skipped>y") == ['"', "x", '"', "<", "y"]


def test_bleu_identical_is_100():
    # Every n-gram matches, c = r: BP = 1 and p_n = 100 -> BLEU = 100.
    hyp = "the cat sat on the mat"
    assert metrics.corpus_bleu([hyp], [[hyp]]) == pytest.approx(100.0, abs=1e-9)
    assert metrics.sentence_bleu(hyp, [hyp]) == pytest.approx(100.0, abs=1e-9)


def test_bleu_clipping_and_exp_smoothing():
    # hyp: 7 x "the"; ref "the cat is on the mat" has "the" twice.
    # Clipped unigrams: 2/7 -> p1 = 100 * 2/7. No bigram..4-gram matches (6, 5, 4 of
    # them), so 'exp' smoothing halves again per zero order: p2 = 100/(2*6),
    # p3 = 100/(4*5), p4 = 100/(8*4). c = 7 >= r = 6 -> BP = 1.
    # BLEU = (200/7 * 100/12 * 5 * 3.125)^(1/4) = 3720.238^(1/4) ~ 7.8098.
    expected = (200 / 7 * 100 / 12 * 100 / 20 * 100 / 32) ** 0.25
    hyp, refs = "the the the the the the the", ["the cat is on the mat"]
    assert metrics.corpus_bleu([hyp], [refs]) == pytest.approx(expected, abs=1e-9)
    assert metrics.sentence_bleu(hyp, refs) == pytest.approx(expected, abs=1e-9)
    assert 7.80 < expected < 7.82


def test_bleu_brevity_penalty_and_effective_order():
    # hyp "the cat" (c = 2) vs a 6-token reference: p1 = p2 = 100, no trigrams.
    # Corpus BLEU uses N = 4 and total_3 = 0 -> 0. Sentence BLEU uses effective order
    # N = 2: BLEU = BP * 100 with BP = exp(1 - 6/2) = e^-2 ~ 13.53.
    hyp, refs = "the cat", ["the cat sat on the mat"]
    assert metrics.corpus_bleu([hyp], [refs]) == 0.0
    assert metrics.sentence_bleu(hyp, refs) == pytest.approx(100 * math.exp(-2), abs=1e-9)


def test_bleu_closest_reference_length_ties_go_shorter():
    # c = 4; references of length 3 and 5 are both 1 away -> r = 3 (shorter), BP = 1.
    # Every hyp n-gram occurs in one reference ("c d" only in the second), so
    # p_n = 100 for all n and BLEU = 100. Were r = 5: BP = exp(1 - 5/4) ~ 0.7788.
    assert metrics.sentence_bleu("a b c d", ["a b c", "a b c d e"]) == pytest.approx(100.0)
    assert metrics.sentence_bleu("a b c d", ["a b c d e"]) == pytest.approx(
        100 * math.exp(1 - 5 / 4)
    )


def test_bleu_corpus_sums_statistics_before_the_formula():
    # Segment 1: "a b c d" vs itself: 4/3/2/1 n-grams, all correct.
    # Segment 2: "x" vs "y": 1 unigram, none correct; no higher orders.
    # Corpus: p1 = 100*4/5, p2 = 100*3/3, p3 = 100*2/2, p4 = 100*1/1; c = r = 5, BP = 1.
    # BLEU = (80 * 100^3)^(1/4) = 100 * 0.8^(1/4) ~ 94.57 (not the mean 50 of 100, 0).
    score = metrics.corpus_bleu(["a b c d", "x"], [["a b c d"], ["y"]])
    assert score == pytest.approx(100 * 0.8**0.25, abs=1e-9)


def test_bleu_empty_and_no_overlap_are_zero():
    assert metrics.corpus_bleu([""], [["a b"]]) == 0.0
    assert metrics.sentence_bleu("", [""]) == 0.0
    assert metrics.sentence_bleu("a b c d", ["e f g h"]) == 0.0


def test_chrf_by_hand():
    # "ab" vs "ab": 1-grams 2/2, 2-gram 1/1; orders 3..6 have no n-grams -> not
    # effective. P = R = 1 -> chrF = 100.
    assert metrics.chrf(["ab"], [["ab"]]) == pytest.approx(100.0)
    # "ab" vs "ac": 1-grams {a,b} vs {a,c}: 1 match -> P1 = R1 = 1/2; 2-grams "ab" vs
    # "ac": P2 = R2 = 0. Means P = R = 1/4; chrF2 = 100 * 5 * P * R / (4P + R) = 25.
    assert metrics.chrf(["ab"], [["ac"]]) == pytest.approx(25.0)
    # Whitespace is removed before extracting characters: "a b" == "ab".
    assert metrics.chrf(["a b"], [["ab"]]) == pytest.approx(100.0)


def test_rouge_by_hand():
    # hyp: the cat was found under the bed (7 tokens); ref: the cat was under the bed (6)
    # rouge1: overlap the:2 cat was under bed = 6 -> P = 6/7, R = 1, F = 12/13.
    # rouge2: hyp bigrams 6, ref bigrams 5, shared: "the cat" "cat was" "under the"
    #         "the bed" = 4 -> P = 4/6, R = 4/5, F = 2*(2/3)(4/5)/(2/3 + 4/5) = 8/11.
    # rougeL: LCS = "the cat was under the bed" = 6 -> same as rouge1.
    scores = metrics.rouge("the cat was found under the bed", "the cat was under the bed")
    assert scores["rouge1"] == pytest.approx((6 / 7, 1.0, 12 / 13))
    assert scores["rouge2"] == pytest.approx((4 / 6, 4 / 5, 8 / 11))
    assert scores["rougeL"] == pytest.approx((6 / 7, 1.0, 12 / 13))


def test_rouge_lsum_union_lcs_by_hand():
    # Lin (2004) sec. 3.2: ref sentence "a b c d e"; hyp sentences "a b f g h" and
    # "a c h i e". LCS with each: "a b" and "a c e"; union = {a, b, c, e} -> 4 hits.
    # m = 5 reference tokens, n = 10 hypothesis tokens: P = 4/10, R = 4/5,
    # F = 2 * 0.4 * 0.8 / 1.2 = 8/15.
    scores = metrics.rouge("a b f g h\na c h i e", "a b c d e", types=("rougeLsum",))
    assert scores["rougeLsum"] == pytest.approx((0.4, 0.8, 8 / 15))
    # Sentence order does not matter to the union: hyp "c d e" / "a b" covers all five
    # reference tokens -> P = R = F = 1; rougeL on the same text only finds the LCS
    # "c d e" of "c d e a b" -> P = R = F = 3/5.
    scores = metrics.rouge("c d e\na b", "a b c d e", types=("rougeL", "rougeLsum"))
    assert scores["rougeLsum"] == pytest.approx((1.0, 1.0, 1.0))
    assert scores["rougeL"] == pytest.approx((0.6, 0.6, 0.6))


def test_rouge_lsum_follows_rouge_score_lcs_tie_break():
    # ref "a b"; hyp sentences "b a" and "a". LCS("a b", "b a") has length 1 and could
    # be "a" or "b"; rouge-score's walk-back picks "a" (at a tie it steps up, i - 1).
    # LCS("a b", "a") = "a". Union = {"a"} -> 1 hit (choosing "b" would give 2).
    # n = 3, m = 2: P = 1/3, R = 1/2, F = 2 * (1/6) / (5/6) = 2/5.
    scores = metrics.rouge("b a\na", "a b", types=("rougeLsum",))
    assert scores["rougeLsum"] == pytest.approx((1 / 3, 1 / 2, 2 / 5))


def test_rouge_tokenizer_and_empty_inputs():
    # Lowercase, then every run outside [a-z0-9] is a separator: "é" splits "café".
    assert metrics.tokenize_rouge("Café, naïve 3.14!") == ["caf", "na", "ve", "3", "14"]
    for scores in (metrics.rouge("", "a b"), metrics.rouge("a b", ""), metrics.rouge("", "")):
        assert all(tuple(score) == (0.0, 0.0, 0.0) for score in scores.values())
    with pytest.raises(ValueError, match="rougeX"):
        metrics.rouge("a", "a", types=("rougeX",))


def test_rouge_stemmer_by_hand():
    pytest.importorskip("nltk")
    # Porter: running -> run, dogs -> dog, runs -> run; "dog" (3 chars) is not stemmed.
    # Stemmed: ["run", "dog"] vs ["run", "dog"] -> every score is 1.
    stemmed = metrics.rouge("running dogs", "runs dog", types=("rouge1", "rouge2"),
                            use_stemmer=True)
    assert all(score == pytest.approx((1.0, 1.0, 1.0)) for score in stemmed.values())
    # Only tokens longer than 3 characters are stemmed: "its" stays (Porter would give
    # "it"), so "its" vs "it" shares nothing.
    assert metrics.rouge("its", "it", types=("rouge1",), use_stemmer=True)["rouge1"] == (
        0.0, 0.0, 0.0)
    # Unstemmed: no shared token -> 0.
    plain = metrics.rouge("running dogs", "runs dog", types=("rouge1",))
    assert plain["rouge1"] == (0.0, 0.0, 0.0)


def test_rouge_stemmer_without_nltk_raises_clear_import_error(monkeypatch):
    # A None entry in sys.modules makes `import` raise ImportError.
    for name in ("nltk", "nltk.stem", "nltk.stem.porter"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match="nltk"):
        metrics.rouge("a", "a", use_stemmer=True)
    # Without the stemmer nltk is not needed.
    assert metrics.rouge("a", "a", types=("rouge1",))["rouge1"] == (1.0, 1.0, 1.0)


def test_perplexity_by_hand():
    # 10 tokens, each with probability 1/2: total NLL = 10 ln 2 -> PPL = 2.
    assert metrics.perplexity(10 * math.log(2), 10) == pytest.approx(2.0)
    assert metrics.perplexity(0.0, 3) == 1.0
    assert metrics.perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError):
        metrics.perplexity(1.0, 0)


def test_exact_match_by_hand():
    # "a" == "a"; " b " strips to "b"; "C" != "c" (case is kept); "d" is in its list.
    predictions = ["a", " b ", "C", "d"]
    references = [["a"], "b\n", "c", ["x", " d"]]
    assert metrics.exact_match(predictions, references) == 3 / 4
    # Inner whitespace and punctuation are not normalised.
    assert metrics.exact_match(["a  b", "a."], ["a b", "a"]) == 0.0
    with pytest.raises(ValueError):
        metrics.exact_match(["a"], [])


def test_corpus_layout_errors():
    with pytest.raises(TypeError, match="list of reference strings"):
        metrics.corpus_bleu(["a"], ["a"])  # references[0] must be ["a"]
    with pytest.raises(ValueError):
        metrics.corpus_bleu(["a", "b"], [["a"]])
    with pytest.raises(ValueError):
        metrics.sentence_bleu("a", [])
    with pytest.raises(ValueError):
        metrics.chrf([], [])
