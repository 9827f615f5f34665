"""The PyTorch / transformers reference, built locally from a minillm model.

Every module in tests/reference/ compares minillm with a library that minillm
does not depend on (torch, transformers, sacrebleu, rouge-score) and skips
itself with ``pytest.importorskip`` when that library is absent; the helpers
here import torch and transformers only when called.

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


def hf_generate(tm, ids, mask, **kwargs):
    """transformers' generate with scores; a fresh lazily-grown cache.

    transformers sizes its default cache by the encoder's layer count, which
    breaks when the decoder has more layers (as tiny_config's); a DynamicCache
    without a config grows one layer per decoder layer.
    """
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    with torch.no_grad():
        return tm.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                           cache=EncoderDecoderCache(DynamicCache(), DynamicCache()),
                           return_dict_in_generate=True, output_scores=True, **kwargs)
