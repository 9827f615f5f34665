"""Generation: transformers' ``generate`` for T5 (greedy, sampling, beam search) over the KV cache.

    search.py     generate: the options, greedy / sampling and beam search
"""

from minillm.generation.search import (
    GenerateOutput,
    generate,
    no_repeat_ngram,
    process_scores,
    repetition_penalty,
    sample,
    suppress,
    top_k_filter,
    top_p_filter,
    topk,
)

__all__ = ["GenerateOutput", "generate", "no_repeat_ngram", "process_scores", "repetition_penalty",
           "sample", "suppress", "top_k_filter", "top_p_filter", "topk"]
