"""The lean engine: what makes training and decoding fast and lean at real size, beside the reference.

:mod:`minillm.ops` and :mod:`minillm.model` are the reference, written to be read as the
math. The trainers, evaluation and generation run this engine instead; it computes the
same functions, and tests/test_engine.py holds it to the reference:

    elementwise.py, activations.py   softmax, RMS norm, dropout, activations, the gate, row block
                                     by row block (L2-resident passes): the reference's numbers
                                     bit for bit
    attention.py, ffn.py             fused projections ([W_q; W_k; W_v], [W_i0; W_i1]: one GEMM each
                                     way), caches that keep no copies (not the fused weights,
                                     dropout's output, the layer's input): to float64 rounding
                                     (a fused GEMM's columns are not always its parts' bit for bit)
    stack.py                         caches freed as the backward goes, recomputation
                                     (``recompute=True``), an inference pass that keeps nothing
    lm_loss.py                       the LM head and the mean cross-entropy fused in row chunks: the
                                     (N, V) logits never exist whole
    model.py                         forward / backward / loss_and_grads / encode / decode / logits /
                                     loss on a :class:`minillm.model.T5`
    kv_cache.py                      decoding one token a step over a key/value cache

    from minillm import engine
    loss, grads = engine.loss_and_grads(model, input_ids, labels, attention_mask, rng=rng)
"""

from minillm.engine.kv_cache import KVCache, decode_step, init_cache, reorder_cache, step_weights
from minillm.engine.lm_loss import default_chunk_rows, lm_head_loss_and_grads
from minillm.engine.model import (
    backward,
    decode,
    encode,
    forward,
    hidden_backward,
    hidden_forward,
    lm_head,
    logits,
    loss,
    loss_and_grads,
)

__all__ = [
    "KVCache", "backward", "decode", "decode_step", "default_chunk_rows", "encode", "forward",
    "hidden_backward", "hidden_forward", "init_cache", "lm_head", "lm_head_loss_and_grads", "logits", "loss",
    "loss_and_grads", "reorder_cache", "step_weights",
]
