"""The engine's whole model: training's forward and backward, SFT's fused loss, and inference.

Each function takes a :class:`minillm.model.T5` and computes what the reference's
method of the same name computes (tests/test_engine.py holds them together):

    forward(model, ...)        -> (logits, cache)   the whole logits (REINFORCE's log-probs)
    backward(model, dlogits, cache) -> grads        consumes the cache, freeing it as it goes
    loss_and_grads(model, input_ids, labels, ...)   SFT: the LM head and the loss fused in chunks
    encode / decode / lm_head / logits / loss       inference: no dropout, no caches kept

The gradient of ``shared.weight``, read by both stacks (and a tied head), is summed on
the rows their ids touch (``embedding_backward_sum``), then added into the tied head's
dW: one (V, C) array, not three.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from minillm.backend import get_xp
from minillm.engine.lm_loss import cross_entropy_rows, lm_head_loss_and_grads
from minillm.engine.stack import StackCache, stack_backward, stack_forward, stack_output
from minillm.model.params import add_grads
from minillm.ops.attention import padding_keep
from minillm.ops.cross_entropy import IGNORE_INDEX
from minillm.ops.embedding import EmbeddingCache

# ------------------------------------------------------------------ the embedding's gradient


def embedding_backward_rows(dout, cache: EmbeddingCache):
    """dout (..., C) -> (rows (U,), drows (U, C)): the rows of ``embedding_backward``'s dW that are not
    zero, in order, the same numbers (each starts from 0 and adds its positions in the same order)."""
    ids, (_, C), dtype = cache
    xp = get_xp(dout)
    rows, where = xp.unique(ids.reshape(-1), return_inverse=True)  # (U,), (positions,)
    drows = xp.zeros((rows.shape[0], C), dtype=dtype)  # (U, C)
    # out = W[ids]  =>  dW[rows[u]] = the sum of dout over the positions where ids == rows[u]
    xp.add.at(drows, where.reshape(-1), dout.reshape(-1, C))
    return rows, drows


def embedding_backward_sum(parts, dw_into=None):
    """dW (V, C) of a table read several times: (scatter_1 + scatter_2 + ...) + dw_into.

    parts: [(dout, EmbeddingCache), ...] (T5's two stacks). The scatters are summed on the
    rows their ids touch, in the order given: the numbers of adding the dense scatters,
    without a (V, C) array per part. ``dw_into`` (V, C): added into that array (a tied
    head's dW), which is returned; else a new zero array.
    """
    xp = get_xp(parts[0][0])
    scattered = [embedding_backward_rows(dout, cache) for dout, cache in parts]  # (U_k,), (U_k, C)
    shape, dtype = parts[0][1].shape, parts[0][1].dtype
    rows = scattered[0][0]
    for r, _ in scattered[1:]:
        rows = xp.union1d(rows, r)  # (U,) sorted
    total = xp.zeros((rows.shape[0], shape[1]), dtype=dtype)  # (U, C)
    for r, d in scattered:
        total[xp.searchsorted(rows, r)] += d  # scatter_1 + scatter_2 + ..., row by row
    if dw_into is None:
        dw = xp.zeros(shape, dtype=dtype)
        dw[rows] = total
        return dw
    dw_into += 0.0  # -0.0 + 0 = +0.0, as (0 + 0) + x gives where no id points
    dw_into[rows] = total + dw_into[rows]  # (scatter_1 + ...) + dw_into
    return dw_into


# ------------------------------------------------------------------ training


class HiddenCache(NamedTuple):
    """What ``hidden_backward`` needs: both stacks' caches and the decoder rows per prompt."""

    encoder: StackCache
    decoder: StackCache
    repeats: int


def hidden_forward(model, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None,
                   rng=None, repeats: int = 1, recompute: bool = False):
    """(hidden (N, T, C), HiddenCache): the decoder's output before the LM head.

    As :meth:`minillm.model.T5.forward`: N = B * repeats decoder rows, each prompt encoded
    once. ``recompute``: keep each block's input only (:mod:`minillm.engine.stack`).
    """
    xp, config, params = model.xp, model.config, model.params
    input_ids = model.check_ids(input_ids, "input_ids")
    mask = model.check_mask(attention_mask, input_ids, "attention_mask")
    memory, c_enc = stack_forward(params, config, "encoder", input_ids, padding_keep(mask), rng=rng,
                                  recompute=recompute)  # (B, S, C)
    ids = model.check_ids(decoder_input_ids, "decoder_input_ids")
    B, N = len(memory), len(ids)
    if not (isinstance(repeats, int) and repeats >= 1) or N != B * repeats:
        raise ValueError(f"decoder_input_ids has {N} rows; expected input_ids' {B} rows "
                         f"x repeats ({repeats!r})")
    if repeats > 1:  # memory_rep = repeat(memory, repeats)
        memory, mask = xp.repeat(memory, repeats, axis=0), xp.repeat(mask, repeats, axis=0)  # (N, S, C)
    h, c_dec = stack_forward(params, config, "decoder", ids, model.decoder_keep(ids, decoder_attention_mask),
                             memory=memory, memory_keep=padding_keep(mask), rng=rng, recompute=recompute)
    return h, HiddenCache(c_enc, c_dec, repeats)


def hidden_backward(model, dhidden, cache: HiddenCache, head_dw=None) -> dict:
    """dhidden (N, T, C) -> the grads of both stacks, ``shared.weight``'s summed (+ ``head_dw``, a tied
    head's dW, summed into that array). The cache is consumed."""
    c_enc, c_dec, repeats = cache
    del cache
    dmemory, g_dec, d_dec = stack_backward(dhidden, c_dec)
    if repeats > 1:
        # memory_rep = repeat(memory, repeats)  =>  dmemory = the sum over each prompt's rows
        N, S, C = dmemory.shape
        dmemory = dmemory.reshape(N // repeats, repeats, S, C).sum(axis=1)  # (B, S, C)
    _, g_enc, d_enc = stack_backward(dmemory, c_enc)
    # shared[ids] is read by both stacks  =>  dshared = scatter_enc + scatter_dec (+ a tied head's dW)
    g_dec["shared.weight"] = embedding_backward_sum([(d_enc, c_enc.embedding), (d_dec, c_dec.embedding)],
                                                    dw_into=head_dw)
    return add_grads(add_grads({}, g_enc), g_dec)


class ForwardCache(NamedTuple):
    hidden: HiddenCache
    hs: Any  # (N, T, C) hidden * s, the head's input


def forward(model, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None, rng=None,
            repeats: int = 1, recompute: bool = False):
    """(logits (N, T, V), the cache ``backward`` consumes): :meth:`minillm.model.T5.forward`'s."""
    h, c_hidden = hidden_forward(model, input_ids, decoder_input_ids, attention_mask,
                                 decoder_attention_mask, rng, repeats, recompute)
    w, s = model.head()[1:]
    hs = h * s if s != 1.0 else h  # (N, T, C)
    logits = (hs.reshape(-1, hs.shape[-1]) @ w.T).reshape(*hs.shape[:-1], w.shape[0])  # (N, T, V)
    return logits, ForwardCache(c_hidden, hs)


def backward(model, dlogits, cache: ForwardCache) -> dict:
    """dlogits (N, T, V) -> grads keyed like params; the cache is consumed."""
    key, w, s = model.head()
    c_hidden, hs = cache
    del cache
    # logits = hs W^T,  hs = hidden * s
    dlogits2 = dlogits.reshape(-1, dlogits.shape[-1])  # (N*T, V)
    dhs = (dlogits2 @ w).reshape(hs.shape)  # (N, T, C)
    dw = dlogits2.T @ hs.reshape(-1, hs.shape[-1])  # (V, C)
    del hs
    grads = add_grads(hidden_backward(model, dhs * s if s != 1.0 else dhs, c_hidden), {key: dw})
    return {k: grads[k] for k in model.params}


def loss_and_grads(model, input_ids, labels, attention_mask=None, rng=None, label_smoothing: float = 0.0,
                   decoder_attention_mask=None, recompute: bool = False, chunk_rows: int | None = None):
    """(loss, grads keyed like params): :meth:`minillm.model.T5.loss_and_grads`'s, lean.

    The LM head and the loss run fused, ``chunk_rows`` rows at a time (:mod:`.lm_loss`);
    the backward frees each block's activations once its backward is done; ``recompute``
    keeps only each block's input. A tied head's dW receives the embedding's gradient.
    """
    labels = model.check_ids(labels, "labels")
    h, cache = hidden_forward(model, input_ids, model.shift_right(labels), attention_mask,
                              decoder_attention_mask, rng, recompute=recompute)  # (B, T, C)
    B, T, C = h.shape
    key, w, s = model.head()
    loss, dh, dw = lm_head_loss_and_grads(h.reshape(B * T, C), w, labels.reshape(-1), s, label_smoothing,
                                          chunk_rows)  # h: (B*T, C)
    del h
    tied = key == "shared.weight"
    grads = hidden_backward(model, dh.reshape(B, T, C), cache, head_dw=dw if tied else None)
    if not tied:
        grads = add_grads(grads, {key: dw})
    return float(loss), {k: grads[k] for k in model.params}


# ------------------------------------------------------------------ inference


def encode(model, input_ids, attention_mask=None):
    """memory (B, S, C), keeping no cache: :meth:`minillm.model.T5.encode`'s numbers."""
    input_ids = model.check_ids(input_ids, "input_ids")
    mask = model.check_mask(attention_mask, input_ids, "attention_mask")
    return stack_output(model.params, model.config, "encoder", input_ids, padding_keep(mask))


def decode(model, decoder_input_ids, memory, attention_mask=None, decoder_attention_mask=None):
    """hidden (B, T, C), keeping no cache: :meth:`minillm.model.T5.decode`'s numbers."""
    xp = model.xp
    ids = model.check_ids(decoder_input_ids, "decoder_input_ids")
    B, S = memory.shape[:2]
    mask = xp.ones((B, S), dtype="int64") if attention_mask is None else xp.asarray(attention_mask)
    return stack_output(model.params, model.config, "decoder", ids, model.decoder_keep(
        ids, decoder_attention_mask), memory=memory, memory_keep=padding_keep(mask))


def lm_head(model, hidden):
    """logits (..., V) = (hidden * s) W^T, as one 2-D GEMM."""
    _, w, s = model.head()
    hs = hidden * s if s != 1.0 else hidden
    return (hs.reshape(-1, hs.shape[-1]) @ w.T).reshape(*hs.shape[:-1], w.shape[0])  # (..., V)


def logits(model, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None):
    """logits (B, T, V) in evaluation mode, keeping no cache."""
    memory = encode(model, input_ids, attention_mask)
    return lm_head(model, decode(model, decoder_input_ids, memory, attention_mask, decoder_attention_mask))


def loss(model, input_ids, labels, attention_mask=None, label_smoothing: float = 0.0) -> float:
    """The mean cross-entropy over the labels that are not -100, in evaluation mode."""
    labels = model.check_ids(labels, "labels")
    z = logits(model, input_ids, model.shift_right(labels), attention_mask)  # (B, T, V)
    V = z.shape[-1]
    z = z.reshape(-1, V)  # (B*T, V)
    token_loss = cross_entropy_rows(z, labels.reshape(-1), label_smoothing, out=z)[0]  # p written over z
    return float(token_loss.sum() / max(int((labels != IGNORE_INDEX).sum()), 1))
