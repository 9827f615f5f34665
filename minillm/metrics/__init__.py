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

    bleu.py     corpus_bleu, sentence_bleu, tokenize_13a
    chrf.py     chrf
    rouge.py    rouge, RougeScore, tokenize_rouge
    basic.py    perplexity, exact_match
    corpus.py   the reference layout's checks
"""

from minillm.metrics.basic import exact_match, perplexity
from minillm.metrics.bleu import corpus_bleu, sentence_bleu, tokenize_13a
from minillm.metrics.chrf import chrf
from minillm.metrics.rouge import RougeScore, rouge, tokenize_rouge

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
