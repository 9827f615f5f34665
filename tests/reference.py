"""The PyTorch / transformers reference, built locally from a minillm model.

Nothing is downloaded: a random minillm T5 is saved as a Hugging Face folder
and transformers loads it.

One change to the reference, for float64 only: transformers' T5LayerNorm
computes the variance in float32 whatever the input dtype, so a float64 model
is not float64 through its norms. ``patch_t5_layernorm`` makes it compute in
the input's dtype (identical for float32) so that float64 parity can be tight.
"""

from __future__ import annotations

import numpy as np

import minillm


def patch_t5_layernorm() -> None:
    import torch
    from transformers.models.t5 import modeling_t5

    if getattr(modeling_t5.T5LayerNorm.forward, "_minillm_patched", False):
        return

    def forward(self, hidden_states):
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))

    forward._minillm_patched = True
    modeling_t5.T5LayerNorm.forward = forward


def tiny_config(variant: str = "relu", **overrides) -> minillm.T5Config:
    """A tiny T5: 'relu' (v1.0, tied) or 'gated-gelu' (v1.1 / FLAN-T5, untied).

    H*D != C and decoder layers != encoder layers on purpose.
    """
    base = dict(
        vocab_size=64, d_model=16, d_kv=6, num_heads=3, d_ff=24, num_layers=2,
        num_decoder_layers=3, relative_attention_num_buckets=8,
        relative_attention_max_distance=20, dropout_rate=0.0,
        feed_forward_proj=variant, tie_word_embeddings=(variant == "relu"),
    )
    base.update(overrides)
    return minillm.T5Config(**base)


def torch_model(model: minillm.T5, folder):
    """transformers' T5ForConditionalGeneration with model's weights, in its dtype, eager attention."""
    import torch
    from transformers import T5ForConditionalGeneration

    patch_t5_layernorm()
    model.save_pretrained(folder)
    dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    tm = T5ForConditionalGeneration.from_pretrained(folder, dtype=dtype, attn_implementation="eager")
    tm.eval()
    return tm


def random_batch(rng: np.random.Generator, vocab: int, B: int = 3, S: int = 9, T: int = 7):
    """input_ids (B, S), attention_mask (B, S) with right padding, labels (B, T) with -100 tails."""
    input_ids = rng.integers(2, vocab, (B, S))
    mask = np.ones((B, S), dtype=np.int64)
    labels = rng.integers(2, vocab, (B, T))
    for b in range(B):
        s_len = int(rng.integers(1, S + 1))
        mask[b, s_len:] = 0
        input_ids[b, s_len:] = 0
        t_len = int(rng.integers(1, T + 1))
        labels[b, t_len:] = -100
    return input_ids, mask, labels
