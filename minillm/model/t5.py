"""T5 as an encoder-decoder of pure forward/backward functions: the reference model.

    memory = encode(input_ids, attention_mask)                         (B, S, C)
    hidden = decode(decoder_input_ids, memory, attention_mask)         (B, T, C)
    logits = lm_head(hidden) = (hidden * s) W^T                        (B, T, V)

Each stack (encoder, decoder) is :mod:`minillm.model.stack`. The LM head multiplies
by s = d_model**-0.5 when ``config.scale_decoder_outputs`` (the original T5, tied
embeddings) and uses ``shared.weight`` unless the params hold a separate
``lm_head.weight``. In the backward the gradient of the memory is the sum over
every decoder block's cross-attention, and ``shared.weight``, read by both stacks
(and by a tied head), receives the sum of their gradients.

Parameters live in one flat dict named exactly as in Hugging Face's
``T5ForConditionalGeneration`` state dict; gradients use the same keys.

This is the reference: ``forward`` keeps every cache, ``backward`` reads them, and
``loss_and_grads`` is forward, cross-entropy and backward over the whole (B*T, V)
logits. The trainers, evaluation and generation use the lean engine
(:mod:`minillm.engine`: the fused LM-head loss, freed caches, recomputation,
inference that keeps nothing), which tests hold to these methods.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import numpy as np

from minillm.backend import device_of, get_xp, to_device
from minillm.config import T5Config
from minillm.model.params import add_grads, init_params, params_from_tensors
from minillm.model.stack import StackCache, stack_backward, stack_forward
from minillm.ops.attention import causal_keep, padding_keep
from minillm.ops.cross_entropy import IGNORE_INDEX, cross_entropy, cross_entropy_mean_backward
from minillm.ops.linear import LinearCache, linear_backward, linear_forward


class T5Cache(NamedTuple):
    """What ``T5.backward`` needs."""

    encoder: StackCache
    decoder: StackCache
    repeats: int  # decoder rows per prompt
    head: LinearCache  # logits = (hidden * s) W^T
    scale: float  # s


class T5:
    """A T5ForConditionalGeneration: a config and a flat dict of named arrays, nothing else."""

    def __init__(self, config: T5Config, params: dict):
        self.config = config
        self.params = params

    # -------------------------------------------------------------- creation
    @classmethod
    def init(cls, config: T5Config, rng: np.random.Generator, dtype: Any = "float32",
             device: str = "cpu") -> T5:
        """Fresh weights drawn with T5's initialisation scheme (on the host, then moved)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError("T5.init needs a numpy.random.Generator (np.random.default_rng(seed))")
        return cls(config, init_params(config, rng, dtype)).to(device)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: Any = "float32", device: str = "cpu") -> T5:
        """Load a Hugging Face T5 folder onto a device, its params cast to ``dtype``.

        The folder holds config.json and model.safetensors (or the shards that
        model.safetensors.index.json names), stored in float32, float16, bfloat16 or
        float64; each value is cast exactly when ``dtype`` is wider.
        """
        from minillm.storage.hf import read_pretrained

        config, tensors, source = read_pretrained(path)
        return cls(config, params_from_tensors(config, tensors, source, dtype)).to(device)

    def to(self, device: str) -> T5:
        """This model with its params on 'cpu' or 'cuda' (self when already there)."""
        if device == self.device:
            return self
        return T5(self.config, to_device(self.params, device))

    def save_pretrained(self, path: str | os.PathLike, dtype: str | None = None) -> None:
        """Write config.json and model.safetensors that transformers loads.

        ``dtype``: "float32", "float16", "bfloat16" or "float64" stored (None: the
        params' own); bfloat16 is rounded to nearest, ties to even, from float32.
        """
        from minillm.storage.hf import save_pretrained

        save_pretrained(self.config, self.params, path, dtype=dtype)

    @property
    def device(self) -> str:
        return device_of(self.params["shared.weight"])

    @property
    def dtype(self):
        return self.params["shared.weight"].dtype

    @property
    def xp(self):
        return get_xp(self.params["shared.weight"])

    @property
    def tied(self) -> bool:
        """True when the LM head reuses shared.weight."""
        return "lm_head.weight" not in self.params

    def head(self) -> tuple[str, Any, float]:
        """(key, W (V, C), s): the LM head's parameter name, its weight, and the scale of hidden."""
        key = "shared.weight" if self.tied else "lm_head.weight"
        s = self.config.d_model**-0.5 if self.config.scale_decoder_outputs else 1.0
        return key, self.params[key], s

    def num_parameters(self) -> int:
        return int(sum(math.prod(v.shape) for v in self.params.values()))

    def astype(self, dtype) -> T5:
        """A copy with every parameter cast to dtype."""
        return T5(self.config, {k: v.astype(dtype) for k, v in self.params.items()})

    # ------------------------------------------------------------ the inputs
    def check_ids(self, a, name: str):
        """``a`` as a 2-D integer array (B, L) of ids in [0, vocab_size) (labels: or -100)."""
        a = self.xp.asarray(a)
        if a.ndim != 2 or a.dtype.kind not in "iu":
            raise ValueError(f"{name} must be a 2-D integer array (B, L), got {a.dtype} {a.shape}")
        ok = (a >= 0) & (a < self.config.vocab_size)
        if name == "labels":
            ok |= a == IGNORE_INDEX
        if not bool(ok.all()):
            bad = a[~ok].ravel()[0]
            raise ValueError(f"{name} holds id {int(bad)} outside [0, vocab_size={self.config.vocab_size})")
        return a

    def check_mask(self, mask, ids, name: str):
        """A (B, L) mask of 1/0 shaped like ``ids`` (None: every position real)."""
        if mask is None:
            return self.xp.ones(ids.shape, dtype=np.int64)
        mask = self.xp.asarray(mask)
        if mask.shape != ids.shape:
            raise ValueError(f"{name} has shape {mask.shape}, expected {ids.shape}")
        return mask

    def decoder_keep(self, decoder_input_ids, decoder_attention_mask=None):
        """keep (B or 1, 1, T, T): the causal mask, and the decoder's padding when given."""
        keep = causal_keep(decoder_input_ids.shape[1], xp=self.xp)  # (1, 1, T, T)
        if decoder_attention_mask is not None:
            mask = self.check_mask(decoder_attention_mask, decoder_input_ids, "decoder_attention_mask")
            keep = keep & padding_keep(mask)
        return keep

    def shift_right(self, labels):
        """decoder_input_ids: labels shifted right, decoder_start_token_id first, -100 -> pad."""
        return shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)

    # ------------------------------------------------------------ the seams
    def encode_forward(self, input_ids, attention_mask=None, rng=None):
        """(memory (B, S, C), the encoder's StackCache) for input_ids (B, S)."""
        input_ids = self.check_ids(input_ids, "input_ids")
        mask = self.check_mask(attention_mask, input_ids, "attention_mask")
        return stack_forward(self.params, self.config, "encoder", input_ids, padding_keep(mask), rng=rng)

    def decode_forward(self, decoder_input_ids, memory, attention_mask=None, decoder_attention_mask=None,
                       rng=None):
        """(hidden (B, T, C), the decoder's StackCache): the decoder's final-normed output."""
        ids = self.check_ids(decoder_input_ids, "decoder_input_ids")
        B, S = memory.shape[:2]
        enc_mask = self.xp.ones((B, S), dtype=np.int64) if attention_mask is None else attention_mask
        return stack_forward(self.params, self.config, "decoder", ids, self.decoder_keep(
            ids, decoder_attention_mask), memory=memory, memory_keep=padding_keep(self.xp.asarray(enc_mask)),
            rng=rng)

    def encode(self, input_ids, attention_mask=None):
        """memory (B, S, C); attention_mask (B, S) is 1 for real tokens."""
        return self.encode_forward(input_ids, attention_mask)[0]

    def decode(self, decoder_input_ids, memory, attention_mask=None, decoder_attention_mask=None):
        """hidden (B, T, C): the decoder's final-normed output, before the LM head."""
        return self.decode_forward(decoder_input_ids, memory, attention_mask, decoder_attention_mask)[0]

    def lm_head(self, hidden):
        """logits (B, T, V) = (hidden * s) W^T."""
        _, w, s = self.head()
        return linear_forward(hidden * s, {"weight": w})[0]

    # --------------------------------------------------------- whole model
    def forward(self, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None,
                rng=None, repeats: int = 1):
        """logits (N, T, V) and the cache ``backward`` needs.

        input_ids (B, S), decoder_input_ids (N, T) with N = B * repeats: each prompt is
        encoded once and its memory serves the ``repeats`` adjacent decoder rows after
        it (REINFORCE's k samples per prompt). rng: dropout (None: evaluation mode).
        """
        memory, c_enc = self.encode_forward(input_ids, attention_mask, rng)  # (B, S, C)
        B, N = len(memory), len(self.check_ids(decoder_input_ids, "decoder_input_ids"))
        if not (isinstance(repeats, int) and repeats >= 1) or N != B * repeats:
            raise ValueError(f"decoder_input_ids has {N} rows; expected input_ids' {B} rows "
                             f"x repeats ({repeats!r})")
        if attention_mask is not None:
            attention_mask = self.xp.repeat(self.xp.asarray(attention_mask), repeats, axis=0)  # (N, S)
        # memory_rep = repeat(memory, repeats): prompt b's memory for each of its rows
        memory = self.xp.repeat(memory, repeats, axis=0)  # (N, S, C)
        h, c_dec = self.decode_forward(decoder_input_ids, memory, attention_mask, decoder_attention_mask,
                                       rng)  # (N, T, C)
        _, w, s = self.head()
        logits, c_head = linear_forward(h * s, {"weight": w})  # (N, T, V)
        return logits, T5Cache(c_enc, c_dec, repeats, c_head, s)

    def backward(self, dlogits, cache: T5Cache) -> dict:
        """dlogits (N, T, V) -> grads keyed like params."""
        key = self.head()[0]
        # logits = (h * s) W^T
        dhs, g_head = linear_backward(dlogits, cache.head)
        dmemory, g_dec = stack_backward(dhs * cache.scale, cache.decoder)  # (N, S, C)
        # memory_rep = repeat(memory, repeats)  =>  dmemory = the sum over each prompt's rows
        N, S, C = dmemory.shape
        dmemory = dmemory.reshape(N // cache.repeats, cache.repeats, S, C).sum(axis=1)  # (B, S, C)
        _, g_enc = stack_backward(dmemory, cache.encoder)
        # shared.weight is read by both stacks (and by a tied head): its gradient is the sum
        grads = add_grads(add_grads(g_enc, g_dec), {key: g_head["weight"]})
        return {k: grads[k] for k in self.params}

    def logits(self, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None):
        """logits (B, T, V) in evaluation mode."""
        return self.forward(input_ids, decoder_input_ids, attention_mask, decoder_attention_mask)[0]

    def loss(self, input_ids, labels, attention_mask=None, label_smoothing: float = 0.0) -> float:
        """The mean cross-entropy over the labels that are not -100, in evaluation mode."""
        labels = self.check_ids(labels, "labels")
        logits = self.logits(input_ids, self.shift_right(labels), attention_mask)
        return float(cross_entropy(logits, labels, label_smoothing)[0])

    def loss_and_grads(self, input_ids, labels, attention_mask=None, rng=None, label_smoothing: float = 0.0,
                       decoder_attention_mask=None) -> tuple[float, dict]:
        """transformers' loss and its gradient: (loss, grads keyed like params).

        decoder_input_ids = shift_right(labels); loss = the mean cross-entropy over labels
        != -100. rng: a Generator turns dropout on (training); None is evaluation mode.
        """
        labels = self.check_ids(labels, "labels")
        logits, cache = self.forward(input_ids, self.shift_right(labels), attention_mask,
                                     decoder_attention_mask, rng)  # (B, T, V)
        loss, c_loss = cross_entropy(logits, labels, label_smoothing)
        dlogits, _ = cross_entropy_mean_backward(1.0, c_loss)  # (B, T, V)
        return float(loss), self.backward(dlogits, cache)


def shift_right(labels, decoder_start_token_id: int, pad_token_id: int):
    """(B, T) -> (B, T): [start, labels[:, :-1]] with -100 replaced by pad."""
    xp = get_xp(labels)
    out = xp.empty_like(labels)
    out[:, 0] = decoder_start_token_id
    out[:, 1:] = labels[:, :-1]
    out[out == IGNORE_INDEX] = pad_token_id
    return out


def from_pretrained(path: str | os.PathLike, dtype: Any = "float32", device: str = "cpu") -> T5:
    """Load a Hugging Face T5 folder: ``minillm.from_pretrained("dir", device="cuda")``."""
    return T5.from_pretrained(path, dtype=dtype, device=device)
