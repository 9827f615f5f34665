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
from minillm.ops.attention import (
    additive_mask,
    attention_backward,
    attention_forward,
    causal_keep,
    padding_keep,
)
from minillm.ops.cross_entropy import IGNORE_INDEX, cross_entropy, cross_entropy_mean_backward
from minillm.ops.dropout import dropout_backward, dropout_forward
from minillm.ops.embedding import embedding_backward, embedding_forward
from minillm.ops.ffn import ffn_backward, ffn_forward
from minillm.ops.linear import linear_backward, linear_forward
from minillm.ops.norm import rms_norm_backward, rms_norm_forward
from minillm.ops.position_bias import (
    position_bias_backward,
    position_bias_forward,
    position_buckets,
)

# --------------------------------------------------------------------------- names


def ffn_names(config: T5Config) -> tuple[str, ...]:
    """The FFN's weight names inside ``DenseReluDense``."""
    return ("wi_0", "wi_1", "wo") if config.is_gated_act else ("wi", "wo")


def param_shapes(config: T5Config, lm_head: bool | None = None) -> dict[str, tuple[int, ...]]:
    """Every parameter's Hugging Face name and shape, in state-dict order.

    ``lm_head``: include a separate ``lm_head.weight`` (default: when the
    embeddings are not tied).
    """
    C, F, V, HD = config.d_model, config.d_ff, config.vocab_size, config.inner_dim
    NB, H = config.relative_attention_num_buckets, config.num_heads
    ff_shapes = {"wi": (F, C), "wi_0": (F, C), "wi_1": (F, C), "wo": (C, F)}
    attn_shapes = {"q": (HD, C), "k": (HD, C), "v": (HD, C), "o": (C, HD)}
    shapes: dict[str, tuple[int, ...]] = {"shared.weight": (V, C)}
    for stack, n_layers in (("encoder", config.num_layers), ("decoder", config.num_decoder_layers)):
        for i in range(n_layers):
            b = f"{stack}.block.{i}.layer"
            for w in "qkvo":
                shapes[f"{b}.0.SelfAttention.{w}.weight"] = attn_shapes[w]
            if i == 0:
                shapes[f"{b}.0.SelfAttention.relative_attention_bias.weight"] = (NB, H)
            shapes[f"{b}.0.layer_norm.weight"] = (C,)
            ff = 1
            if stack == "decoder":
                for w in "qkvo":
                    shapes[f"{b}.1.EncDecAttention.{w}.weight"] = attn_shapes[w]
                shapes[f"{b}.1.layer_norm.weight"] = (C,)
                ff = 2
            for w in ffn_names(config):
                shapes[f"{b}.{ff}.DenseReluDense.{w}.weight"] = ff_shapes[w]
            shapes[f"{b}.{ff}.layer_norm.weight"] = (C,)
        shapes[f"{stack}.final_layer_norm.weight"] = (C,)
    if lm_head if lm_head is not None else not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def init_std(name: str, config: T5Config) -> float | None:
    """T5's initial standard deviation for a parameter (None: a norm gain, set to the factor).

    From transformers' ``T5PreTrainedModel._init_weights``; ``f`` is
    initializer_factor: embeddings and LM head N(0, f); W_q N(0, f (C D)^-1/2);
    W_k, W_v, wi N(0, f C^-1/2); W_o N(0, f (H D)^-1/2); wo N(0, f F^-1/2);
    the relative position table N(0, f C^-1/2).
    """
    f, C, D, H, F = (config.initializer_factor, config.d_model, config.d_kv,
                     config.num_heads, config.d_ff)
    leaf = name.rsplit(".", 2)[-2]  # "q", "wi_0", "layer_norm", "shared", ...
    table = {
        "shared": f, "lm_head": f, "q": f * (C * D) ** -0.5, "k": f * C**-0.5, "v": f * C**-0.5,
        "o": f * (H * D) ** -0.5, "relative_attention_bias": f * C**-0.5,
        "wi": f * C**-0.5, "wi_0": f * C**-0.5, "wi_1": f * C**-0.5, "wo": f * F**-0.5,
    }
    return table.get(leaf)


def init_params(config: T5Config, rng: np.random.Generator, dtype: Any = "float32") -> dict:
    """Fresh parameters with T5's initialisation (see ``init_std``)."""
    params = {}
    for name, shape in param_shapes(config).items():
        std = init_std(name, config)
        if std is None:  # an RMS-norm gain
            params[name] = np.full(shape, config.initializer_factor, dtype=dtype)
        else:
            params[name] = (rng.standard_normal(shape) * std).astype(dtype)
    return params


def _w(params: dict, prefix: str, names) -> dict:
    """{name: params[f"{prefix}.{name}.weight"]} for an op's parameter dict."""
    return {n: params[f"{prefix}.{n}.weight"] for n in names}


def _add(grads: dict, prefix: str, g: dict) -> None:
    """grads[f"{prefix}.{name}.weight"] += g[name] (a parameter used twice gets both)."""
    for n, v in g.items():
        key = f"{prefix}.{n}.weight"
        if key in grads:
            grads[key] = grads[key] + v
        else:
            grads[key] = v


# ------------------------------------------------------------------------ the stack


def stack_forward(params, config, stack, ids, keep, memory=None, memory_keep=None, rng=None):
    """One T5 stack (``stack`` is "encoder" or "decoder").

    ids: (B, L) int token ids; keep: boolean, broadcastable to (B, 1, L, L),
    which keys each query may attend to (padding, and the causal mask in the
    decoder). For the decoder, memory: (B, S, C) and memory_keep: (B, 1, 1, S).
    Returns h: (B, L, C), the final-normed output, and the cache.
    """
    is_decoder = stack == "decoder"
    n_layers = config.num_decoder_layers if is_decoder else config.num_layers
    H, p, eps = config.num_heads, float(config.dropout_rate), config.layer_norm_epsilon
    act = config.dense_act_fn
    dtype = params["shared.weight"].dtype
    xp = get_xp(params["shared.weight"])
    L = ids.shape[1]

    x, c_emb = embedding_forward(ids, {"weight": params["shared.weight"]})  # (B, L, C)
    x, c_drop_in = dropout_forward(x, p=p, rng=rng)

    # Block 0's relative position bias, shared by every block: (1, H, L, L).
    buckets = position_buckets(L, L, not is_decoder, config.relative_attention_num_buckets,
                               config.relative_attention_max_distance, xp=xp)
    rel = f"{stack}.block.0.layer.0.SelfAttention"
    pos_bias, c_pos = position_bias_forward(buckets, _w(params, rel, ["relative_attention_bias"]))
    self_bias = pos_bias + additive_mask(keep, dtype)  # (B or 1, H, L, L)
    cross_bias = additive_mask(memory_keep, dtype) if is_decoder else None  # (B, 1, 1, S)

    blocks = []
    for i in range(n_layers):
        b = f"{stack}.block.{i}.layer"
        bc: dict[str, Any] = {}
        # x = x + dropout(SelfAttention(norm(x)))
        n, bc["ln0"] = rms_norm_forward(x, {"weight": params[f"{b}.0.layer_norm.weight"]}, eps)
        a, bc["sa"] = attention_forward(n, n, _w(params, f"{b}.0.SelfAttention", "qkvo"), n_heads=H,
                                        bias=self_bias, scale=1.0, dropout=p, rng=rng)
        a, bc["sa_drop"] = dropout_forward(a, p=p, rng=rng)
        x = x + a
        if is_decoder:
            # x = x + dropout(EncDecAttention(norm(x), memory))
            n, bc["ln1"] = rms_norm_forward(x, {"weight": params[f"{b}.1.layer_norm.weight"]}, eps)
            a, bc["ca"] = attention_forward(n, memory, _w(params, f"{b}.1.EncDecAttention", "qkvo"),
                                            n_heads=H, bias=cross_bias, scale=1.0, dropout=p, rng=rng)
            a, bc["ca_drop"] = dropout_forward(a, p=p, rng=rng)
            x = x + a
        # x = x + dropout(FFN(norm(x)))
        ff = 2 if is_decoder else 1
        n, bc["lnf"] = rms_norm_forward(x, {"weight": params[f"{b}.{ff}.layer_norm.weight"]}, eps)
        f, bc["ff"] = ffn_forward(n, _w(params, f"{b}.{ff}.DenseReluDense", ffn_names(config)),
                                  act=act, dropout=p, rng=rng)
        f, bc["ff_drop"] = dropout_forward(f, p=p, rng=rng)
        x = x + f
        blocks.append(bc)

    h, c_final = rms_norm_forward(x, {"weight": params[f"{stack}.final_layer_norm.weight"]}, eps)
    h, c_drop_out = dropout_forward(h, p=p, rng=rng)
    cache = (stack, is_decoder, c_emb, c_drop_in, c_pos, self_bias.shape, blocks, c_final, c_drop_out,
             ffn_names(config))
    return h, cache


def stack_backward(dh, cache):
    """dh: (B, L, C) -> (dmemory (B, S, C) or None, grads keyed like params).

    The gradient of the memory is the sum over every decoder block's
    cross-attention; that of the position table the sum over every block's
    self-attention.
    """
    stack, is_decoder, c_emb, c_drop_in, c_pos, bias_shape, blocks, c_final, c_drop_out, ffn = cache
    grads: dict = {}
    # h = dropout(final_norm(x))
    dh, _ = dropout_backward(dh, c_drop_out)
    dx, g = rms_norm_backward(dh, c_final)
    grads[f"{stack}.final_layer_norm.weight"] = g["weight"]
    dmemory = None
    dself_bias = None
    for i in reversed(range(len(blocks))):
        b, bc = f"{stack}.block.{i}.layer", blocks[i]
        ff = 2 if is_decoder else 1
        # x = x + dropout(FFN(norm(x)))
        df, _ = dropout_backward(dx, bc["ff_drop"])
        dn, g = ffn_backward(df, bc["ff"])
        _add(grads, f"{b}.{ff}.DenseReluDense", g)
        dn, g = rms_norm_backward(dn, bc["lnf"])
        grads[f"{b}.{ff}.layer_norm.weight"] = g["weight"]
        dx = dx + dn
        if is_decoder:
            # x = x + dropout(EncDecAttention(norm(x), memory))
            da, _ = dropout_backward(dx, bc["ca_drop"])
            (dn, dm, _), g = attention_backward(da, bc["ca"])
            _add(grads, f"{b}.1.EncDecAttention", g)
            dmemory = dm if dmemory is None else dmemory + dm
            dn, g = rms_norm_backward(dn, bc["ln1"])
            grads[f"{b}.1.layer_norm.weight"] = g["weight"]
            dx = dx + dn
        # x = x + dropout(SelfAttention(norm(x)))
        da, _ = dropout_backward(dx, bc["sa_drop"])
        (dn, _, dbias), g = attention_backward(da, bc["sa"])  # self-attention: dn is the whole input grad
        _add(grads, f"{b}.0.SelfAttention", g)
        dself_bias = dbias if dself_bias is None else dself_bias + dbias
        dn, g = rms_norm_backward(dn, bc["ln0"])
        grads[f"{b}.0.layer_norm.weight"] = g["weight"]
        dx = dx + dn
    # self_bias = position_bias + mask: the mask is constant
    _, g = position_bias_backward(dself_bias, c_pos)
    grads[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = g[
        "relative_attention_bias"]
    # x = dropout(shared[ids])
    dx, _ = dropout_backward(dx, c_drop_in)
    _, g = embedding_backward(dx, c_emb)
    grads["shared.weight"] = g["weight"]
    return dmemory, grads


def _merge(a: dict, b: dict) -> dict:
    """Sum two gradient dicts (keys in either)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] + v if k in out else v
    return out


# ------------------------------------------------------------------------ the model


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
        """Load a Hugging Face T5 folder (config.json + model.safetensors) onto a device."""
        from minillm.hf import load_pretrained

        config, params = load_pretrained(path, dtype=dtype)
        return cls(config, params).to(device)

    def to(self, device: str) -> T5:
        """This model with its params on 'cpu' or 'cuda' (self when already there)."""
        if device == self.device:
            return self
        return T5(self.config, to_device(self.params, device))

    @property
    def device(self) -> str:
        return device_of(self.params["shared.weight"])

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write config.json and model.safetensors that transformers loads."""
        from minillm.hf import save_pretrained

        save_pretrained(self.config, self.params, path)

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
        return self.encode_forward(input_ids, attention_mask, rng)[0]

    def encode_forward(self, input_ids, attention_mask=None, rng=None):
        input_ids = self._ids(input_ids, "input_ids")
        attention_mask = self._mask(attention_mask, input_ids, "attention_mask")
        return stack_forward(self.params, self.config, "encoder", input_ids,
                             padding_keep(attention_mask), rng=rng)

    def decode(self, decoder_input_ids, memory, attention_mask=None, decoder_attention_mask=None,
               rng=None):
        """hidden (B, T, C): the decoder's final-normed output, before the LM head."""
        return self.decode_forward(decoder_input_ids, memory, attention_mask,
                                   decoder_attention_mask, rng)[0]

    def decode_forward(self, decoder_input_ids, memory, attention_mask=None,
                       decoder_attention_mask=None, rng=None):
        xp = self.xp
        ids = self._ids(decoder_input_ids, "decoder_input_ids")
        B, S = memory.shape[:2]
        enc_mask = xp.ones((B, S), dtype=np.int64) if attention_mask is None else xp.asarray(attention_mask)
        keep = causal_keep(ids.shape[1], xp=xp)  # (1, 1, T, T)
        if decoder_attention_mask is not None:
            keep = keep & padding_keep(self._mask(decoder_attention_mask, ids, "decoder_attention_mask"))
        return stack_forward(self.params, self.config, "decoder", ids, keep, memory=memory,
                             memory_keep=padding_keep(enc_mask), rng=rng)

    def lm_head(self, hidden):
        """logits (B, T, V) = (hidden * s) W^T, s = d_model**-0.5 if scale_decoder_outputs else 1."""
        return self.lm_head_forward(hidden)[0]

    def lm_head_forward(self, hidden):
        s = self.config.d_model**-0.5 if self.config.scale_decoder_outputs else 1.0
        w = self.params.get("lm_head.weight", self.params["shared.weight"])
        logits, c = linear_forward(hidden * s if s != 1.0 else hidden, {"weight": w})
        return logits, (c, s)

    def lm_head_backward(self, dlogits, cache):
        c, s = cache
        dhs, g = linear_backward(dlogits, c)
        key = "shared.weight" if self.tied else "lm_head.weight"
        # logits = (hidden * s) W^T
        return (dhs * s if s != 1.0 else dhs), {key: g["weight"]}

    # --------------------------------------------------------- whole model
    def forward(self, input_ids, decoder_input_ids, attention_mask=None,
                decoder_attention_mask=None, rng=None, repeats: int = 1):
        """logits (N, T, V) and the cache ``backward`` needs. rng: dropout Generator (None = eval).

        input_ids (B, S), decoder_input_ids (N, T) with N = B * repeats: with
        repeats > 1 each prompt is encoded once and its memory serves the
        ``repeats`` adjacent decoder rows that follow it (k samples per prompt).
        """
        memory, c_enc = self.encode_forward(input_ids, attention_mask, rng)  # (B, S, C)
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
                                       decoder_attention_mask, rng)
        logits, c_head = self.lm_head_forward(h)
        return logits, (c_enc, c_dec, c_head, repeats)

    def backward(self, dlogits, cache) -> dict:
        """dlogits (N, T, V) -> grads keyed like params."""
        c_enc, c_dec, c_head, repeats = cache
        dh, g_head = self.lm_head_backward(dlogits, c_head)
        dmemory, g_dec = stack_backward(dh, c_dec)  # (N, S, C)
        if repeats > 1:
            # memory_rep = repeat(memory, repeats)  =>  dmemory = the sum over each prompt's rows
            N, S, C = dmemory.shape
            dmemory = dmemory.reshape(N // repeats, repeats, S, C).sum(axis=1)  # (B, S, C)
        _, g_enc = stack_backward(dmemory, c_enc)
        grads = _merge(_merge(g_enc, g_dec), g_head)
        return {k: grads[k] for k in self.params}

    def logits(self, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None):
        """logits (B, T, V) in evaluation mode."""
        return self.forward(input_ids, decoder_input_ids, attention_mask, decoder_attention_mask)[0]

    def shift_right(self, labels):
        """decoder_input_ids: labels shifted right, decoder_start_token_id first, -100 -> pad."""
        return shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)

    def loss(self, input_ids, labels, attention_mask=None, label_smoothing: float = 0.0):
        """Mean cross-entropy over the non-ignored labels, in evaluation mode."""
        labels = self._ids(labels, "labels")
        logits = self.logits(input_ids, self.shift_right(labels), attention_mask)
        return float(cross_entropy(logits, labels, label_smoothing)[0])

    def loss_and_grads(self, input_ids, labels, attention_mask=None, rng=None,
                       label_smoothing: float = 0.0, decoder_attention_mask=None):
        """transformers' loss and its gradient.

        decoder_input_ids = shift_right(labels); loss = mean cross-entropy over
        labels != -100. rng: a Generator turns dropout on (training); None is
        evaluation mode. Returns (loss: float, grads keyed like params).
        """
        labels = self._ids(labels, "labels")
        logits, cache = self.forward(input_ids, self.shift_right(labels), attention_mask,
                                     decoder_attention_mask, rng)
        loss, ce_cache = cross_entropy(logits, labels, label_smoothing)
        dlogits, _ = cross_entropy_mean_backward(1.0, ce_cache)
        return float(loss), self.backward(dlogits, cache)

    def num_parameters(self) -> int:
        return int(sum(math.prod(v.shape) for v in self.params.values()))

    def astype(self, dtype) -> T5:
        """A copy with every parameter cast to dtype."""
        return T5(self.config, {k: v.astype(dtype) for k, v in self.params.items()})

    def generate(self, input_ids, attention_mask=None, **kwargs):
        """Decode as transformers' ``generate`` does; see ``minillm.generation``."""
        from minillm.generation import generate

        return generate(self, input_ids, attention_mask=attention_mask, **kwargs)


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
