"""minillm.metrics against sacrebleu and rouge-score (hand-checked cases: tests/test_metrics.py).

The property tests draw small corpora from a shared word pool (so n-grams overlap) mixed
with random "words" over an alphabet of ASCII letters, digits, punctuation (including
what 13a treats specially: . , - & ;) and Unicode letters, joined by assorted
whitespace, newlines included. Texts are often empty or very short; half the hypotheses
are near copies of a reference, so that long n-grams match too.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minillm import metrics

sacrebleu = pytest.importorskip("sacrebleu")
sacrebleu_13a = pytest.importorskip("sacrebleu.tokenizers.tokenizer_13a")
rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

TOL = 1e-9  # absolute, on the 0-100 (BLEU, chrF) or 0-1 (ROUGE) scale
PROPERTY = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# ---------------------------------------------------------------------------------------
# Random texts
# ---------------------------------------------------------------------------------------

ALPHABET = "abcAB019" + ".,-'&;:!?\"()/<>" + "éÉßøжΩİ中ǅ"
SPECIAL_WORDS = [
    "the", "cat", "The", "3.5", "1,000", "9-5", "a-b", "end.", "U.S.", "don't", "...",
    "&quot;", "&amp;lt;", "<skipped>", "naïve", "CAFÉ", "İstanbul", "日本", "x_y", "e.g.,",
]
ENGLISH_WORDS = [
    "running", "runs", "ran", "dogs", "dog", "flies", "flying", "happily", "happiness",
    "generalization", "generalize", "connected", "connection", "caresses", "ponies",
    "the", "a", "is", "was", "sat", "mat", "cats", "Cats.", "agreed", "feed",
    "its", "it", "has", "ha", "yes", "ye",  # 3 letters are not stemmed: "its" != "it"
]
SEPARATORS = [" ", " ", " ", " ", "  ", "\t", "\n", "-\n", " \n ", "\u00a0"]

random_words = st.text(alphabet=ALPHABET, min_size=1, max_size=5)
words = st.one_of(random_words, st.sampled_from(SPECIAL_WORDS))
separators = st.sampled_from(SEPARATORS)
edges = st.sampled_from(["", "", "", " ", "\n", "\t ", "-\n"])  # padding
lengths = st.sampled_from([0, 1, 2, 3, 4, 6, 10, 20])  # words per text; often very short
edits = st.sampled_from(["keep", "keep", "keep", "drop", "replace"])


def pool_words(pool, vocabulary=words):
    """Mostly words of ``pool`` (3 of the 4 branches), so n-grams up to 4 often match."""
    from_pool = st.sampled_from(pool)
    return st.one_of(from_pool, from_pool, from_pool, vocabulary)


@st.composite
def texts(draw, word):
    """Words drawn from ``word``, joined by random whitespace, maybe padded by some."""
    n = draw(lengths)
    pairs = draw(st.lists(st.tuples(separators, word), min_size=n, max_size=n))
    body = "".join(sep + token for sep, token in pairs)
    body = body.removeprefix(pairs[0][0]) if pairs else body  # no separator before word 1
    return draw(edges) + body + draw(edges)


@st.composite
def near_copies(draw, text):
    """``text`` with some space-separated pieces dropped or replaced by other words."""
    pieces = text.split(" ")
    actions = draw(st.lists(edits, min_size=len(pieces), max_size=len(pieces)))
    kept = [piece if action == "keep" else draw(words)
            for piece, action in zip(pieces, actions, strict=True) if action != "drop"]
    return " ".join(kept)


@st.composite
def hypotheses_for(draw, word, references):
    """Half the time a near copy of one reference (long n-gram matches), else random."""
    if draw(st.booleans()):
        return draw(near_copies(draw(st.sampled_from(references))))
    return draw(texts(word))


@st.composite
def corpora(draw, max_segments=4, max_refs=4):
    """(hypotheses, references) with references[i] a list of 1..max_refs strings."""
    word = pool_words(draw(st.lists(words, min_size=1, max_size=6)))
    n = draw(st.integers(1, max_segments))
    references = [
        [draw(texts(word)) for _ in range(draw(st.integers(1, max_refs)))] for _ in range(n)
    ]
    hypotheses = [draw(hypotheses_for(word, refs)) for refs in references]
    return hypotheses, references


def to_streams(references):
    """Our references[i] -> sacrebleu's reference streams, padded with None."""
    k = max(len(refs) for refs in references)
    return [[refs[j] if j < len(refs) else None for refs in references] for j in range(k)]


# ---------------------------------------------------------------------------------------
# Property tests against the reference libraries
# ---------------------------------------------------------------------------------------


@PROPERTY
@given(st.data())
def test_tokenize_13a_matches_sacrebleu(data):
    line = data.draw(texts(pool_words(data.draw(st.lists(words, min_size=1, max_size=6)))))
    expected = sacrebleu_13a.Tokenizer13a()(line.rstrip()).split()
    assert metrics.tokenize_13a(line) == expected


@PROPERTY
@given(corpora())
def test_bleu_and_chrf_match_sacrebleu(corpus):
    hypotheses, references = corpus
    streams = to_streams(references)

    expected = sacrebleu.corpus_bleu(hypotheses, streams).score
    assert abs(metrics.corpus_bleu(hypotheses, references) - expected) <= TOL

    expected = sacrebleu.corpus_chrf(hypotheses, streams).score
    assert abs(metrics.chrf(hypotheses, references) - expected) <= TOL

    for hypothesis, refs in zip(hypotheses, references, strict=True):
        expected = sacrebleu.sentence_bleu(hypothesis, refs).score
        assert abs(metrics.sentence_bleu(hypothesis, refs) - expected) <= TOL, hypothesis


ROUGE_TYPES = ("rouge1", "rouge2", "rouge3", "rougeL", "rougeLsum")


def assert_rouge_matches(hypothesis, reference, use_stemmer):
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    expected = scorer.score(reference, hypothesis)  # rouge-score: (target, prediction)
    ours = metrics.rouge(hypothesis, reference, types=ROUGE_TYPES, use_stemmer=use_stemmer)
    assert ours.keys() == expected.keys()
    for rouge_type, score in ours.items():
        for got, want in zip(score, expected[rouge_type], strict=True):
            assert abs(got - want) <= TOL, (rouge_type, score, expected[rouge_type])


@PROPERTY
@given(st.data())
def test_rouge_matches_rouge_score(data):
    word = pool_words(data.draw(st.lists(words, min_size=1, max_size=6)))
    reference = data.draw(texts(word))
    hypothesis = data.draw(hypotheses_for(word, [reference]))
    assert_rouge_matches(hypothesis, reference, use_stemmer=False)


@PROPERTY
@given(st.data())
def test_rouge_lsum_on_many_short_lines_matches_rouge_score(data):
    # Three words and frequent newlines: many tied LCS choices and repeated tokens, where
    # the union and the double-counting guard of ROUGE-Lsum decide the score.
    tiny = st.sampled_from(["a", "b", "c"])
    lines = st.lists(st.lists(tiny, max_size=4).map(" ".join), max_size=4).map("\n".join)
    assert_rouge_matches(data.draw(lines), data.draw(lines), use_stemmer=False)


@PROPERTY
@given(st.data())
def test_rouge_with_stemmer_matches_rouge_score(data):
    pytest.importorskip("nltk")
    english = st.sampled_from(ENGLISH_WORDS)
    pool = data.draw(st.lists(english, min_size=1, max_size=6))
    word = pool_words(pool, vocabulary=st.one_of(english, words))
    reference = data.draw(texts(word))
    hypothesis = data.draw(hypotheses_for(word, [reference]))
    assert_rouge_matches(hypothesis, reference, use_stemmer=True)


# Edge cases named explicitly, so they run on every invocation, not only when drawn.
EDGE_CASES = [
    ("", [""]),
    ("", ["a b c"]),
    ("a b c", [""]),
    ("a", ["a"]),
    ("a", ["b"]),
    ("x y z w", ["a b c d"]),
    ("Hello, world!", ["hello , world !"]),
    ("3.5 1,000. 9-5", ["3.5 1,000 . 9 - 5"]),
    ("&quot;hi&quot; &amp;lt;", ['"hi" <']),
    ("naïve CAFÉ 中文", ["naive café 中文"]),
    ("a b c d", ["a b c", "a b c d e"]),
    ("line one\nline two", ["line one", "line\ntwo"]),
    ("   ", [" \t "]),
]


@pytest.mark.parametrize(("hypothesis", "references"), EDGE_CASES)
def test_edge_cases_match_references(hypothesis, references):
    hyps, refs = [hypothesis], [references]
    assert abs(metrics.corpus_bleu(hyps, refs) - sacrebleu.corpus_bleu(
        hyps, to_streams(refs)).score) <= TOL
    assert abs(metrics.sentence_bleu(hypothesis, references) - sacrebleu.sentence_bleu(
        hypothesis, references).score) <= TOL
    assert abs(metrics.chrf(hyps, refs) - sacrebleu.corpus_chrf(
        hyps, to_streams(refs)).score) <= TOL
    assert_rouge_matches(hypothesis, references[0], use_stemmer=False)
