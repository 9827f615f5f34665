"""The logits processors transformers' ``generate`` applies, the options check, and the pickers.

Every step turns the logits into scores in float32 (transformers casts there
too, whatever the model's dtype) and ``process_scores`` applies the processors
in transformers' order; the sampling warpers only when ``do_sample``:

    repetition_penalty  s_v -> s_v * p if s_v < 0 else s_v / p   for v among the row's ids
    no_repeat_ngram     s_v -> -inf  if (last n-1 ids, v) is an n-gram the row already holds
    min_new_tokens      s_eos -> -inf while fewer than min_new_tokens tokens are generated
    temperature         s -> s / T
    top_k               s_v -> -inf  if s_v < the k-th largest score
    top_p               s_v -> -inf  if v is outside the smallest set of top tokens with mass >= p

``sample`` draws one id per row from softmax(s); ``topk`` picks the k best of a
row (beam search). The installed ``transformers/generation/logits_process.py``
is the specification. Shapes: N rows (prompts x beams or samples), V vocab, L ids so far.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from minillm.backend import get_xp

# The longest output generate() sizes its buffers for: (B * beams, H, 1 + L, D) per layer.
MAX_NEW_TOKENS = 65_536


@dataclass(frozen=True)
class Settings:
    """The checked options of one ``generate`` call (transformers' GenerationConfig fields)."""

    max_new_tokens: int
    min_new_tokens: int
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    num_beams: int
    length_penalty: float
    early_stopping: Any
    num_return_sequences: int
    repetition_penalty: float
    no_repeat_ngram_size: int
    eos: tuple
    pad: int
    start: int


def check_settings(config, max_new_tokens, min_new_tokens, do_sample, temperature, top_k, top_p,
                   num_beams, length_penalty, early_stopping, num_return_sequences, repetition_penalty,
                   no_repeat_ngram_size, eos_token_id, pad_token_id) -> Settings:
    """Check the options as transformers does (same conditions, clear messages)."""

    def int_at_least(name, v, minimum):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
        return int(v)

    max_new_tokens = int_at_least("max_new_tokens", max_new_tokens, 1)
    if max_new_tokens > MAX_NEW_TOKENS:  # checked before the KV cache's buffers are sized
        raise ValueError(f"max_new_tokens must be at most {MAX_NEW_TOKENS:,}, got {max_new_tokens:,}")
    min_new_tokens = int_at_least("min_new_tokens", min_new_tokens, 0)
    num_beams = int_at_least("num_beams", num_beams, 1)
    num_return_sequences = int_at_least("num_return_sequences", num_return_sequences, 1)
    no_repeat_ngram_size = int_at_least("no_repeat_ngram_size", no_repeat_ngram_size, 0)
    if top_k is None:
        top_k = 0
    top_k = int_at_least("top_k", top_k, 0)
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    early_stopping = "never" if early_stopping == "never" else bool(early_stopping)
    if not finite("repetition_penalty", repetition_penalty) > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty!r}")
    if do_sample and not finite("temperature", temperature) > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature!r} "
                         "(for greedy decoding set do_sample=False)")
    if not 0.0 <= finite("top_p", top_p) <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p!r}")
    # a hypothesis scores sum_logprobs / generated ** length_penalty: finite for every length
    most = math.log(np.finfo(np.float64).max) / math.log(max_new_tokens + 1)
    if num_beams > 1 and not abs(finite("length_penalty", length_penalty)) <= most:
        raise ValueError(f"length_penalty must be at most {most:.4g} in size with max_new_tokens "
                         f"{max_new_tokens} (generated ** length_penalty must be finite), got "
                         f"{length_penalty!r}")
    if num_return_sequences > 1:
        if num_beams == 1 and not do_sample:
            raise ValueError("greedy decoding (do_sample=False, num_beams=1) returns one sequence per "
                             f"prompt; num_return_sequences={num_return_sequences} needs do_sample=True "
                             "or num_beams >= num_return_sequences")
        if num_beams > 1 and num_return_sequences > num_beams:
            raise ValueError(f"num_return_sequences ({num_return_sequences}) must be <= num_beams "
                             f"({num_beams})")
    if eos_token_id is None:
        eos_token_id = config.eos_token_id
    eos = tuple(int(e) for e in (eos_token_id if isinstance(eos_token_id, list | tuple)
                                 else [eos_token_id]))
    if not eos:
        raise ValueError("eos_token_id must be a token id or a non-empty list of them, got []")
    pad = config.pad_token_id if pad_token_id is None else int(pad_token_id)
    for name, ids in (("eos_token_id", eos), ("pad_token_id", (pad,))):
        if any(not 0 <= i < config.vocab_size for i in ids):
            raise ValueError(f"{name} {ids} outside [0, vocab_size={config.vocab_size})")
    return Settings(max_new_tokens, min_new_tokens, bool(do_sample), finite("temperature", temperature),
                     top_k, float(top_p), num_beams, finite("length_penalty", length_penalty), early_stopping,
                     num_return_sequences, float(repetition_penalty), no_repeat_ngram_size, eos,
                     pad, config.decoder_start_token_id)


def finite(name: str, v) -> float:
    """``v`` as a finite float; ValueError naming ``name`` for anything else (NaN, inf, 1e400)."""
    try:
        ok = not isinstance(v, bool) and math.isfinite(float(v))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def check_fits(config, s: Settings, batch_size: int, source_len: int, itemsize: int = 4) -> None:
    """ValueError when decoding ``batch_size`` prompts of ``source_len`` tokens with ``s`` cannot fit
    in this machine's memory: before a buffer is sized by num_beams or num_return_sequences.

    Per decoded row (B * beams, or B * num_return_sequences): the self-attention cache
    2 * L' * (1 + max_new_tokens) * H * D, the cross-attention keys and values
    2 * L' * S * H * D, and a few (V,) score rows; ``itemsize`` bytes each.
    """
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - no sysconf (Windows)
        return
    rows = batch_size * max(s.num_beams, s.num_return_sequences)
    per_row = (2 * config.num_decoder_layers * (1 + s.max_new_tokens + source_len) * config.inner_dim
               + 4 * config.vocab_size)
    need = rows * per_row * itemsize
    if need > memory:
        raise ValueError(f"num_beams {s.num_beams} and num_return_sequences {s.num_return_sequences} "
                         f"for {batch_size} prompts need {need / 2**30:,.1f} GiB, more than this "
                         f"machine's {memory / 2**30:.1f} GiB")


# ------------------------------------------------------------------ the processors


def repetition_penalty(scores, ids, penalty: float):
    """s_v -> s_v * penalty if s_v < 0 else s_v / penalty, for each token v in the row's ids.

    scores: (N, V), ids: (N, L) every id so far (the decoder start included).
    """
    xp = get_xp(scores)
    rows = xp.arange(ids.shape[0])[:, None]  # (N, 1)
    picked = scores[rows, ids]  # (N, L)
    out = scores.copy()
    with np.errstate(over="ignore"):  # a huge penalty takes a score to -inf, as in transformers
        out[rows, ids] = xp.where(picked < 0, picked * penalty, picked / penalty)
    return out


def no_repeat_ngram(scores, ids, n: int):
    """-inf for every token that would complete an n-gram already in the row.

    The last n-1 ids are the prefix; every window of n ids whose first n-1 equal
    it bans its last id. scores: (N, V), ids: (N, L).
    """
    xp = get_xp(scores)
    N, L = ids.shape
    V = scores.shape[1]
    if L < n:
        return scores
    W = L - n + 1
    windows = xp.stack([ids[:, j:j + W] for j in range(n)], axis=-1)  # (N, W, n)
    prefix = ids[:, L - n + 1:]  # (N, n-1)
    match = (windows[:, :, :-1] == prefix[:, None, :]).all(axis=-1)  # (N, W)
    banned = xp.zeros((N, V + 1), dtype=bool)  # column V absorbs the windows that do not match
    banned[xp.arange(N)[:, None], xp.where(match, windows[:, :, -1], V)] = True
    return xp.where(banned[:, :V], xp.asarray(-np.inf, dtype=scores.dtype), scores)


def suppress(scores, token_ids):
    """-inf at the given token ids (min_new_tokens keeps EOS away this way)."""
    out = scores.copy()
    out[:, list(token_ids)] = -np.inf
    return out


def top_k_filter(scores, k: int, min_tokens_to_keep: int = 1):
    """-inf below the k-th largest score of each row (ties with it are kept)."""
    xp = get_xp(scores)
    k = min(max(k, min_tokens_to_keep), scores.shape[-1])
    kth = -xp.partition(-scores, k - 1, axis=-1)[:, k - 1:k]  # (N, 1)
    return xp.where(scores < kth, xp.asarray(-np.inf, dtype=scores.dtype), scores)


def top_p_filter(scores, p: float, min_tokens_to_keep: int = 1):
    """Nucleus filtering: keep the fewest top tokens whose probability mass reaches p.

    As transformers: sort ascending, drop the tokens whose cumulative
    probability is <= 1 - p, but always keep the top ``min_tokens_to_keep``.
    """
    xp = get_xp(scores)
    order = xp.argsort(scores, axis=-1, kind="stable")  # ascending
    sorted_scores = xp.take_along_axis(scores, order, axis=-1)  # (N, V)
    probs = xp.exp(sorted_scores - sorted_scores[:, -1:])
    probs /= probs.sum(axis=-1, keepdims=True)
    cum = xp.cumsum(probs, axis=-1, dtype=np.float64).astype(scores.dtype)
    remove_sorted = cum <= scores.dtype.type(1 - p)
    # the top min_tokens_to_keep are kept: all V of them when it exceeds V (V - m clipped at 0,
    # as transformers' slice [..., -m:] is)
    remove_sorted[:, max(0, scores.shape[-1] - min_tokens_to_keep):] = False
    remove = xp.empty_like(remove_sorted)
    remove[xp.arange(scores.shape[0])[:, None], order] = remove_sorted  # back to vocab order
    return xp.where(remove, xp.asarray(-np.inf, dtype=scores.dtype), scores)


def process_scores(scores, ids, s: Settings):
    """The processors in transformers' order (see the module docstring).

    scores: (N, V) float32, ids: (N, L) the ids so far, decoder start first.
    """
    if s.repetition_penalty != 1.0:
        scores = repetition_penalty(scores, ids, s.repetition_penalty)
    if s.no_repeat_ngram_size > 0:
        scores = no_repeat_ngram(scores, ids, s.no_repeat_ngram_size)
    if s.min_new_tokens > 0 and ids.shape[1] - 1 < s.min_new_tokens:
        scores = suppress(scores, s.eos)
    if s.do_sample:
        # beam sampling keeps one token more than there are EOS ids
        keep = len(s.eos) + 1 if s.num_beams > 1 else 1
        if s.temperature != 1.0:
            scores = scores / scores.dtype.type(s.temperature)
        if s.top_k != 0:
            scores = top_k_filter(scores, s.top_k, keep)
        if s.top_p < 1.0:
            scores = top_p_filter(scores, s.top_p, keep)
    return scores


def sample(scores, rng: np.random.Generator):
    """One draw per row from softmax(scores): (N, V) -> (N,) ids.

    Inverse CDF in float64: the id is the number of cumulative probabilities
    <= u * total for u ~ U[0, 1) from ``rng``; a zero-probability id is never drawn.
    """
    xp = get_xp(scores)
    s = scores.astype(np.float64)
    cdf = xp.cumsum(xp.exp(s - s.max(axis=-1, keepdims=True)), axis=-1)  # (N, V)
    u = xp.asarray(rng.random((s.shape[0], 1)))  # (N, 1), drawn on the host
    return (cdf <= u * cdf[:, -1:]).sum(axis=-1)


def topk(x, k: int):
    """The k largest of each row, largest first: (N, M) -> values (N, k), indices (N, k)."""
    xp = get_xp(x)
    idx = xp.sort(xp.argpartition(x, -k, axis=-1)[:, -k:], axis=-1)  # (N, k), by index
    vals = xp.take_along_axis(x, idx, axis=-1)
    order = xp.argsort(-vals, axis=-1, kind="stable")  # ties: the lower index first
    return xp.take_along_axis(vals, order, axis=-1), xp.take_along_axis(idx, order, axis=-1)
