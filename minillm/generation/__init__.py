"""Generation: transformers' ``generate`` for T5 (greedy, sampling, beam search) over the KV cache.

    search.py       generate: the options (check_options), the decoder over the KV cache, greedy / sampling
    beam.py         beam search (and beam sampling), one named step per function
    processors.py   the logits processors, the options check, sample and topk
"""

from minillm.generation.processors import (
    no_repeat_ngram,
    process_scores,
    repetition_penalty,
    sample,
    suppress,
    top_k_filter,
    top_p_filter,
    topk,
)
from minillm.generation.search import GenerateOutput, check_options, generate

__all__ = ["GenerateOutput", "check_options", "generate", "no_repeat_ngram", "process_scores",
           "repetition_penalty", "sample", "suppress", "top_k_filter", "top_p_filter", "topk"]
