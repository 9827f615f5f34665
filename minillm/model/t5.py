"""T5 as an encoder-decoder of pure forward/backward functions.

    memory = encode(input_ids, attention_mask)                         (B, S, C)
    hidden = decode(decoder_input_ids, memory, attention_mask)         (B, T, C)
    logits = lm_head(hidden)                                           (B, T, V)

Each stack (encoder, decoder) is: token embedding (``shared``), dropout,
N blocks, final RMS norm, dropout. A block is

    x = x + dropout(SelfAttention(norm(x), bias = position_bias + mask))
    x = x + dropout(EncDecAttention(norm(x), memory, bias = encoder mask))   (decoder only)
    x = x + dropout(FFN(norm(x)))

with the relative position bias computed once by block 0 of the stack and
shared by all its blocks. The LM head multiplies by d_model**-0.5 when
``config.scale_decoder_outputs`` (original T5, tied embeddings) and uses
``shared.weight`` unless the params hold a separate ``lm_head.weight``.

``loss_and_grads`` (SFT) fuses the LM head with the cross-entropy, row chunk by
row chunk (:mod:`minillm.ops.lm_loss`), so the (N, V) logits, probabilities and
their gradient never exist whole; ``forward`` / ``backward`` return and take the
whole logits (REINFORCE, generation, the tests). ``recompute=True`` keeps only
each block's input and recomputes the block in the backward (:mod:`minillm.model.stack`).

Parameters live in one flat dict named exactly as in Hugging Face's
``T5ForConditionalGeneration`` state dict; gradients use the same keys.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from minillm.backend import device_of, get_xp, to_device
from minillm.config import T5Config
from minillm.model.params import add_grads, init_params, params_from_tensors
from minillm.model.stack import stack_backward, stack_forward
from minillm.ops.attention import causal_keep, padding_keep
from minillm.ops.cross_entropy import IGNORE_INDEX, cross_entropy
from minillm.ops.embedding import embedding_backward_sum
from minillm.ops.linear import linear_backward, linear_forward
from minillm.ops.lm_loss import lm_head_cross_entropy_backward, lm_head_cross_entropy_forward


class T5:
    """A T5ForConditionalGeneration: a config and a flat dict of named arrays.

    The methods are thin wrappers over the pure functions of this module; the
    object holds no state besides ``config`` and ``params``.
    """

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

    @property
    def device(self) -> str:
        return device_of(self.params["shared.weight"])

    def save_pretrained(self, path: str | os.PathLike, dtype: str | None = None) -> None:
        """Write config.json and model.safetensors that transformers loads.

        ``dtype``: "float32", "float16", "bfloat16" or "float64" stored (None: the
        params' own); bfloat16 is rounded to nearest, ties to even, from float32.
        """
        from minillm.storage.hf import save_pretrained

        save_pretrained(self.config, self.params, path, dtype=dtype)

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

    # ------------------------------------------------------------ the seams
    def _ids(self, a, name):
        xp = self.xp
        a = xp.asarray(a)
        if a.ndim != 2 or a.dtype.kind not in "iu":
            raise ValueError(f"{name} must be a 2-D integer array (B, L), got {a.dtype} {a.shape}")
        ok = (a >= 0) & (a < self.config.vocab_size)
        if name == "labels":
            ok |= a == IGNORE_INDEX
        if not bool(ok.all()):
            bad = a[~ok].ravel()[0]
            raise ValueError(f"{name} holds id {int(bad)} outside [0, vocab_size={self.config.vocab_size})")
        return a

    def _mask(self, mask, ids, name):
        if mask is None:
            return self.xp.ones(ids.shape, dtype=np.int64)
        mask = self.xp.asarray(mask)
        if mask.shape != ids.shape:
            raise ValueError(f"{name} has shape {mask.shape}, expected {ids.shape}")
        return mask

    def encode(self, input_ids, attention_mask=None, rng=None):
        """memory (B, S, C) for input_ids (B, S); attention_mask (B, S) is 1 for real tokens."""
        # only the output is wanted: recompute's cache keeps each block's input, not its activations
        return self.encode_forward(input_ids, attention_mask, rng, recompute=True)[0]

    def encode_forward(self, input_ids, attention_mask=None, rng=None, recompute: bool = False):
        input_ids = self._ids(input_ids, "input_ids")
        attention_mask = self._mask(attention_mask, input_ids, "attention_mask")
        return stack_forward(self.params, self.config, "encoder", input_ids,
                             padding_keep(attention_mask), rng=rng, recompute=recompute)

    def decode(self, decoder_input_ids, memory, attention_mask=None, decoder_attention_mask=None,
               rng=None):
        """hidden (B, T, C): the decoder's final-normed output, before the LM head."""
        return self.decode_forward(decoder_input_ids, memory, attention_mask,
                                   decoder_attention_mask, rng, recompute=True)[0]  # no block caches kept

    def decode_forward(self, decoder_input_ids, memory, attention_mask=None,
                       decoder_attention_mask=None, rng=None, recompute: bool = False):
        xp = self.xp
        ids = self._ids(decoder_input_ids, "decoder_input_ids")
        B, S = memory.shape[:2]
        enc_mask = xp.ones((B, S), dtype=np.int64) if attention_mask is None else xp.asarray(attention_mask)
        keep = causal_keep(ids.shape[1], xp=xp)  # (1, 1, T, T)
        if decoder_attention_mask is not None:
            keep = keep & padding_keep(self._mask(decoder_attention_mask, ids, "decoder_attention_mask"))
        return stack_forward(self.params, self.config, "decoder", ids, keep, memory=memory,
                             memory_keep=padding_keep(enc_mask), rng=rng, recompute=recompute)

    def lm_head(self, hidden):
        """logits (B, T, V) = (hidden * s) W^T, s = d_model**-0.5 if scale_decoder_outputs else 1."""
        return self.lm_head_forward(hidden)[0]

    def head(self) -> tuple[str, Any, float]:
        """(key, W (V, C), s): the LM head's parameter name, its weight, and the scale of hidden."""
        key = "shared.weight" if self.tied else "lm_head.weight"
        s = self.config.d_model**-0.5 if self.config.scale_decoder_outputs else 1.0
        return key, self.params[key], s

    def lm_head_forward(self, hidden):
        _, w, s = self.head()
        logits, c = linear_forward(hidden * s if s != 1.0 else hidden, {"weight": w})
        return logits, (c, s)

    def lm_head_backward(self, dlogits, cache):
        c, s = cache
        dhs, g = linear_backward(dlogits, c)
        key = self.head()[0]
        # logits = (hidden * s) W^T
        return (dhs * s if s != 1.0 else dhs), {key: g["weight"]}

    # --------------------------------------------------------- whole model
    def hidden_forward(self, input_ids, decoder_input_ids, attention_mask=None,
                       decoder_attention_mask=None, rng=None, repeats: int = 1,
                       recompute: bool = False):
        """hidden (N, T, C), the decoder's output before the LM head, and the cache of ``hidden_backward``.

        input_ids (B, S), decoder_input_ids (N, T) with N = B * repeats: with
        repeats > 1 each prompt is encoded once and its memory serves the
        ``repeats`` adjacent decoder rows that follow it (k samples per prompt).
        rng: dropout Generator (None = eval). recompute: keep only each block's
        input, recompute the block in the backward (:mod:`minillm.model.stack`).
        """
        memory, c_enc = self.encode_forward(input_ids, attention_mask, rng, recompute)  # (B, S, C)
        B, N = len(memory), len(self._ids(decoder_input_ids, "decoder_input_ids"))
        if not (isinstance(repeats, int) and repeats >= 1) or N != B * repeats:
            raise ValueError(f"decoder_input_ids has {N} rows; expected input_ids' {B} rows "
                             f"x repeats ({repeats!r})")
        if repeats > 1:
            xp = self.xp
            memory = xp.repeat(memory, repeats, axis=0)  # (N, S, C)
            attention_mask = None if attention_mask is None else xp.repeat(
                xp.asarray(attention_mask), repeats, axis=0)  # (N, S)
        h, c_dec = self.decode_forward(decoder_input_ids, memory, attention_mask,
                                       decoder_attention_mask, rng, recompute)  # (N, T, C)
        return h, (c_enc, c_dec, repeats)

    def hidden_backward(self, dhidden, cache, spend: bool = False, embedding_into=None) -> dict:
        """dhidden (N, T, C) -> grads of both stacks (every param but the LM head's own use).

        spend: free each block's activations as soon as its backward is done (the
        cache is then used up; ``loss_and_grads`` owns its cache and does this).
        The embedding's gradient is the encoder's scatter plus the decoder's
        (``embedding_backward_sum``: on the rows the ids touch, no (V, C) array per stack).
        ``embedding_into`` (V, C): add it into that array (a tied head's dW) and return
        that array as grads["shared.weight"]; the numbers are those of
        (encoder's scatter + decoder's scatter) + embedding_into.
        """
        c_enc, c_dec, repeats = cache
        dmemory, g_dec, (d_dec, c_emb_dec) = stack_backward(dhidden, c_dec, spend, embedding=False)
        if repeats > 1:
            # memory_rep = repeat(memory, repeats)  =>  dmemory = the sum over each prompt's rows
            N, S, C = dmemory.shape
            dmemory = dmemory.reshape(N // repeats, repeats, S, C).sum(axis=1)  # (B, S, C)
        _, g_enc, (d_enc, c_emb_enc) = stack_backward(dmemory, c_enc, spend, embedding=False)
        # shared[ids] is read by both stacks  =>  dshared = scatter_enc + scatter_dec (+ a tied head's dW)
        shared = embedding_backward_sum([(d_enc, c_emb_enc), (d_dec, c_emb_dec)], dw_into=embedding_into)
        g_dec["shared.weight"] = shared
        return add_grads(add_grads({}, g_enc), g_dec)

    def forward(self, input_ids, decoder_input_ids, attention_mask=None,
                decoder_attention_mask=None, rng=None, repeats: int = 1, recompute: bool = False):
        """logits (N, T, V) and the cache ``backward`` needs; the arguments as ``hidden_forward``'s."""
        h, c_hidden = self.hidden_forward(input_ids, decoder_input_ids, attention_mask,
                                          decoder_attention_mask, rng, repeats, recompute)
        logits, c_head = self.lm_head_forward(h)  # (N, T, V)
        return logits, (c_hidden, c_head)

    def backward(self, dlogits, cache) -> dict:
        """dlogits (N, T, V) -> grads keyed like params."""
        c_hidden, c_head = cache
        dh, g_head = self.lm_head_backward(dlogits, c_head)  # (N, T, C)
        grads = add_grads(self.hidden_backward(dh, c_hidden), g_head)
        return {k: grads[k] for k in self.params}

    def logits(self, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None):
        """logits (B, T, V) in evaluation mode."""
        # no backward follows: recompute's cache keeps each block's input, not its activations
        return self.forward(input_ids, decoder_input_ids, attention_mask, decoder_attention_mask,
                            recompute=True)[0]

    def shift_right(self, labels):
        """decoder_input_ids: labels shifted right, decoder_start_token_id first, -100 -> pad."""
        return shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)

    def loss(self, input_ids, labels, attention_mask=None, label_smoothing: float = 0.0):
        """Mean cross-entropy over the non-ignored labels, in evaluation mode."""
        labels = self._ids(labels, "labels")
        logits = self.logits(input_ids, self.shift_right(labels), attention_mask)
        return float(cross_entropy(logits, labels, label_smoothing)[0])

    def loss_and_grads(self, input_ids, labels, attention_mask=None, rng=None,
                       label_smoothing: float = 0.0, decoder_attention_mask=None,
                       recompute: bool = False, chunk_rows: int | None = None):
        """transformers' loss and its gradient.

        decoder_input_ids = shift_right(labels); loss = mean cross-entropy over
        labels != -100. rng: a Generator turns dropout on (training); None is
        evaluation mode. The LM head and the loss run fused, ``chunk_rows`` rows
        of the (B*T, V) logits at a time (None: :func:`minillm.ops.lm_loss.default_chunk_rows`).
        recompute: keep only each block's input, recompute it in the backward.
        Returns (loss: float, grads keyed like params).
        """
        labels = self._ids(labels, "labels")
        h, cache = self.hidden_forward(input_ids, self.shift_right(labels), attention_mask,
                                       decoder_attention_mask, rng, recompute=recompute)  # (B, T, C)
        B, T, C = h.shape
        key, w, s = self.head()
        loss, c_loss = lm_head_cross_entropy_forward(h.reshape(B * T, C), {"weight": w}, labels.reshape(-1),
                                                     scale=s, label_smoothing=label_smoothing,
                                                     chunk_rows=chunk_rows)  # h: (B*T, C)
        dh, g_head = lm_head_cross_entropy_backward(1.0, c_loss)  # (B*T, C)
        del h, c_loss
        # the cache is this call's own: each block's activations are freed once its backward is done;
        # a tied head's dW receives the embedding's gradient (one (V, C) array for shared.weight)
        tied = key == "shared.weight"
        grads = self.hidden_backward(dh.reshape(B, T, C), cache, spend=True,
                                     embedding_into=g_head["weight"] if tied else None)
        if not tied:
            grads = add_grads(grads, {key: g_head["weight"]})
        return float(loss), {k: grads[k] for k in self.params}

    def num_parameters(self) -> int:
        return int(sum(math.prod(v.shape) for v in self.params.values()))

    def astype(self, dtype) -> T5:
        """A copy with every parameter cast to dtype."""
        return T5(self.config, {k: v.astype(dtype) for k, v in self.params.items()})


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
