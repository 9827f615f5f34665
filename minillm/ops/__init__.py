"""The ops: the math of T5, each a pair of pure functions side by side in its own module.

    op_forward(x, params, ...) -> (out, cache)        cache: a named tuple of what the backward needs
    op_backward(dout, cache)   -> (dx, grads)         grads keyed like params

This is the reference: each op written as its formula, plainly, to be read and
checked against finite differences (tests/test_ops.py). The lean engine the
trainers use (:mod:`minillm.engine`: fused projections, block-wise passes, caches
that keep no copies) lives beside it and is held to these functions by tests.

Shapes: B batch, S source length, T target length, C d_model, H heads,
D d_kv, F d_ff, V vocab.
"""

from minillm.ops.activations import (
    ACTIVATIONS,
    gelu_new_backward,
    gelu_new_forward,
    relu_backward,
    relu_forward,
    silu_backward,
    silu_forward,
)
from minillm.ops.attention import (
    additive_mask,
    attention_backward,
    attention_core_backward,
    attention_core_forward,
    attention_forward,
    causal_keep,
    cross_attention_backward,
    cross_attention_forward,
    padding_keep,
    self_attention_backward,
    self_attention_forward,
)
from minillm.ops.cross_entropy import (
    IGNORE_INDEX,
    cross_entropy,
    cross_entropy_backward,
    cross_entropy_forward,
    cross_entropy_mean_backward,
    log_softmax,
)
from minillm.ops.dropout import dropout_backward, dropout_forward
from minillm.ops.embedding import embedding_backward, embedding_forward
from minillm.ops.entropy import entropy_backward, entropy_forward
from minillm.ops.ffn import ffn_backward, ffn_forward, gated_ffn_backward, gated_ffn_forward
from minillm.ops.linear import linear_backward, linear_forward
from minillm.ops.norm import rms_norm_backward, rms_norm_forward
from minillm.ops.policy_loss import (
    LOSS_TYPES,
    clip_fractions,
    clipped_surrogate_backward,
    clipped_surrogate_forward,
    k3_kl_backward,
    k3_kl_forward,
    token_mean_backward,
    token_mean_forward,
    token_weights,
)
from minillm.ops.position_bias import (
    position_bias_backward,
    position_bias_forward,
    position_buckets,
    relative_position_bucket,
)
from minillm.ops.softmax import softmax_backward, softmax_forward

__all__ = [name for name in dir() if not name.startswith("_")]
