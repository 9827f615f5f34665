"""Generation: transformers' ``generate`` for T5, token for token, over a KV cache.

    ids = generate(model, input_ids, attention_mask, max_new_tokens=20, num_beams=4)
    ids = model.generate(input_ids, attention_mask, do_sample=True, top_p=0.9, rng=rng)

The options are transformers' ``GenerationConfig`` fields, with its defaults and
meanings; the installed ``transformers/generation/utils.py`` and
``logits_process.py`` are the specification this module follows. The encoder runs
once; each step feeds one token through the cached decoder (``minillm.model.kv_cache``).

Every step turns the logits into scores in float32 (transformers casts there
too, whatever the model's dtype) and applies the processors in transformers'
order; the sampling warpers only when ``do_sample``:

    repetition_penalty  s_v -> s_v * p if s_v < 0 else s_v / p   for v among the row's ids
    no_repeat_ngram     s_v -> -inf  if (last n-1 ids, v) is an n-gram the row already holds
    min_new_tokens      s_eos -> -inf while fewer than min_new_tokens tokens are generated
    temperature         s -> s / T
    top_k               s_v -> -inf  if s_v < the k-th largest score
    top_p               s_v -> -inf  if v is outside the smallest set of top tokens with mass >= p

Greedy picks argmax s; sampling draws from softmax(s) with the ``rng`` given.
Rows that have produced EOS are padded with ``pad_token_id``; decoding stops when
every row has finished or after ``max_new_tokens`` tokens.

Beam search (num_beams = K > 1) scores with log-probabilities: the processors see
log_softmax(logits), and a beam's score is the sum of its tokens' processed
log-probs. Each step takes the top 2K continuations of the K running beams
(sampled without replacement in proportion to exp(score) when ``do_sample``); a
continuation that ends in EOS (among the best K) is a finished hypothesis
scored sum_logprobs / generated_len ** length_penalty, kept when it is among the
best K finished; the best K that do not end go on running. Once a prompt has K
finished hypotheses it is done when ``early_stopping`` is True; when it is
False, once its best running beam, scored at its current length, cannot beat
the worst finished one; with "never" and length_penalty > 0 the running beam is
scored at max length instead (for length_penalty <= 0 "never" acts as False).
Decoding stops when every prompt is done or at max length. Sequences shorter
than the longest returned are padded as transformers pads them: with
pad_token_id, or with the EOS id when pad_token_id is 0 (its
``pad_token_id or eos_token_id[0]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from minillm.backend import get_xp
from minillm.model.kv_cache import decode_step, init_cache, reorder_cache, step_weights
from minillm.ops.cross_entropy import log_softmax

NEG = np.float32(-1.0e9)  # transformers' "never pick this" beam score


@dataclass
class GenerateOutput:
    """What ``generate(..., output_scores=True)`` returns.

    sequences: (B*R, 1+L) ids, decoder_start_token_id first.
    scores: one (rows, V) float32 array per step: the processed scores the token
        was chosen from (rows = B*R; in beam search rows = B*num_beams and the
        scores are processed log-probs).
    sequences_scores: (B*R,) float32, beam search only: each returned
        hypothesis's sum_logprobs / generated_len ** length_penalty.
    beam_indices: (B*R, L), beam search only: the flat beam row each token came from.
    """

    sequences: Any
    scores: tuple
    sequences_scores: Any = None
    beam_indices: Any = None


@dataclass(frozen=True)
class _Settings:
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


def _settings(config, max_new_tokens, min_new_tokens, do_sample, temperature, top_k, top_p,
              num_beams, length_penalty, early_stopping, num_return_sequences, repetition_penalty,
              no_repeat_ngram_size, eos_token_id, pad_token_id) -> _Settings:
    """Check the options as transformers does (same conditions, clear messages)."""

    def int_at_least(name, v, minimum):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
        return int(v)

    max_new_tokens = int_at_least("max_new_tokens", max_new_tokens, 1)
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
    if not float(repetition_penalty) > 0:
        raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty!r}")
    if do_sample and not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature!r} "
                         "(for greedy decoding set do_sample=False)")
    if not 0.0 <= float(top_p) <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p!r}")
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
    pad = config.pad_token_id if pad_token_id is None else int(pad_token_id)
    for name, ids in (("eos_token_id", eos), ("pad_token_id", (pad,))):
        if any(not 0 <= i < config.vocab_size for i in ids):
            raise ValueError(f"{name} {ids} outside [0, vocab_size={config.vocab_size})")
    return _Settings(max_new_tokens, min_new_tokens, bool(do_sample), float(temperature), top_k,
                     float(top_p), num_beams, float(length_penalty), early_stopping,
                     num_return_sequences, float(repetition_penalty), no_repeat_ngram_size, eos,
                     pad, config.decoder_start_token_id)


# ------------------------------------------------------------------ the processors


def repetition_penalty(scores, ids, penalty: float):
    """s_v -> s_v * penalty if s_v < 0 else s_v / penalty, for each token v in the row's ids.

    scores: (N, V), ids: (N, L) every id so far (the decoder start included).
    """
    xp = get_xp(scores)
    rows = xp.arange(ids.shape[0])[:, None]  # (N, 1)
    picked = scores[rows, ids]  # (N, L)
    out = scores.copy()
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
    remove_sorted[:, scores.shape[-1] - min_tokens_to_keep:] = False
    remove = xp.empty_like(remove_sorted)
    remove[xp.arange(scores.shape[0])[:, None], order] = remove_sorted  # back to vocab order
    return xp.where(remove, xp.asarray(-np.inf, dtype=scores.dtype), scores)


def process_scores(scores, ids, s: _Settings):
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


# ------------------------------------------------------------------ the decoder


class _Decoder:
    """Next-token logits for N rows, with the KV cache or (use_cache=False) by full recompute."""

    def __init__(self, model, memory, attention_mask, repeats: int, max_length: int,
                 use_cache: bool):
        self.model, self.use_cache = model, use_cache
        xp = get_xp(memory)
        if use_cache:
            self.weights = step_weights(model.params, model.config)
            self.cache = init_cache(model.params, model.config, memory, attention_mask,
                                    max_length, repeats)
        else:
            self.memory = xp.repeat(memory, repeats, axis=0)  # (N, S, C)
            self.mask = None if attention_mask is None else xp.repeat(attention_mask, repeats, axis=0)

    def __call__(self, ids):
        """ids (N, t+1), all the tokens so far -> logits (N, V) for position t+1."""
        if self.use_cache:
            return decode_step(self.weights, self.cache, ids[:, -1])
        h = self.model.decode(ids, self.memory, self.mask)  # (N, t+1, C)
        return self.model.lm_head(h[:, -1:])[:, 0]  # (N, V)

    def reorder(self, index):
        """Row n continues row index[n] (beam search)."""
        if self.use_cache:
            reorder_cache(self.cache, index)


# ------------------------------------------------------------------ generate


def generate(model, input_ids, attention_mask=None, *, max_new_tokens: int = 20,
             min_new_tokens: int = 0, do_sample: bool = False, temperature: float = 1.0,
             top_k: int | None = 50, top_p: float = 1.0, num_beams: int = 1,
             length_penalty: float = 1.0, early_stopping: bool | str = False,
             num_return_sequences: int = 1, repetition_penalty: float = 1.0,
             no_repeat_ngram_size: int = 0, eos_token_id: int | list[int] | None = None,
             pad_token_id: int | None = None, rng: np.random.Generator | None = None,
             output_scores: bool = False, use_cache: bool = True):
    """Decode as transformers' ``model.generate`` does (greedy, sampling, beam search, beam sampling).

    input_ids: (B, S) prompt ids; attention_mask: (B, S), 1 for real tokens.
    Options: transformers' GenerationConfig names and defaults (see the module
    docstring); top_k, top_p and temperature apply only when do_sample.
    eos_token_id / pad_token_id default to the model config's. rng: a
    numpy.random.Generator, required when do_sample. use_cache=False recomputes
    the whole decoder every step (slow; the reference for the cache).

    Returns ids (B*R, 1+L), R = num_return_sequences, rows of a prompt adjacent,
    decoder_start_token_id first, L <= max_new_tokens. With output_scores=True,
    a ``GenerateOutput`` holding them and the per-step processed scores.
    """
    config = model.config
    s = _settings(config, max_new_tokens, min_new_tokens, do_sample, temperature, top_k, top_p,
                  num_beams, length_penalty, early_stopping, num_return_sequences,
                  repetition_penalty, no_repeat_ngram_size, eos_token_id, pad_token_id)
    if s.do_sample:
        if rng is None:
            raise ValueError("do_sample=True needs rng=numpy.random.default_rng(seed)")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    memory = model.encode(input_ids, attention_mask)  # (B, S, C)
    repeats = s.num_beams if s.num_beams > 1 else s.num_return_sequences
    decoder = _Decoder(model, memory, attention_mask, repeats, 1 + s.max_new_tokens, use_cache)
    B = memory.shape[0]
    if s.num_beams > 1:
        out = _beam_search(decoder, s, B, config.vocab_size, rng, get_xp(memory), output_scores)
    else:
        out = _greedy_or_sample(decoder, s, B * repeats, rng, get_xp(memory), output_scores)
    return out if output_scores else out.sequences


def _greedy_or_sample(decoder, s: _Settings, N: int, rng, xp, keep_scores: bool) -> GenerateOutput:
    """transformers' ``_sample``: one token per row per step, argmax or a draw."""
    max_len = 1 + s.max_new_tokens
    ids = xp.full((N, max_len), s.pad, dtype=np.int64)
    ids[:, 0] = s.start
    eos = xp.asarray(s.eos, dtype=np.int64)
    unfinished = xp.ones(N, dtype=bool)
    scores = []
    length = max_len
    for cur in range(1, max_len):
        logits = decoder(ids[:, :cur])  # (N, V)
        step_scores = process_scores(logits.astype(np.float32, copy=False), ids[:, :cur], s)
        if keep_scores:
            scores.append(step_scores)
        nxt = sample(step_scores, rng) if s.do_sample else step_scores.argmax(axis=-1)  # (N,)
        ids[:, cur] = xp.where(unfinished, nxt, s.pad)
        unfinished &= ~(ids[:, cur, None] == eos).any(axis=-1)
        if not bool(unfinished.any()):
            length = cur + 1
            break
    return GenerateOutput(ids[:, :length], tuple(scores))


def _beam_search(decoder, s: _Settings, B: int, V: int, rng, xp, keep_scores: bool) -> GenerateOutput:
    """transformers' ``_beam_search`` (vectorised over prompts), in float32 as it is.

    Per prompt: K running beams (sequence, summed log-prob), K finished
    hypotheses (sequence, normalised score, finished flag), the flat beam row
    each token came from. ``cur`` is the current length (decoder start included).
    """
    K, lp, stop = s.num_beams, s.length_penalty, s.early_stopping
    N, max_len = B * K, 1 + s.max_new_tokens
    prompt_len = 1  # the decoder start token
    f32 = np.float32
    keep = max(2, 1 + len(s.eos)) * K  # candidates per step: 2K for one EOS id
    in_top_k = xp.arange(keep) < K  # (keep,)
    eos = xp.asarray(s.eos, dtype=np.int64)
    fill = s.pad if (s.pad or not s.eos) else s.eos[0]  # transformers: pad_token_id or eos[0]

    running = xp.full((B, K, max_len), fill, dtype=np.int64)
    running[:, :, 0] = s.start
    running_scores = xp.zeros((B, K), dtype=f32)
    running_scores[:, 1:] = NEG  # the K beams start identical: expand only the first
    running_from = xp.full((B, K, max_len - 1), -1, dtype=np.int64)  # flat parent row per token
    sequences, seq_from = running.copy(), running_from.copy()
    beam_scores = xp.full((B, K), NEG, dtype=f32)
    finished = xp.zeros((B, K), dtype=bool)
    improvable = xp.ones((B, 1), dtype=bool)  # transformers' is_early_stop_heuristic_unsatisfied
    batch = xp.arange(B)[:, None]  # (B, 1)
    all_scores = []
    cur = 1
    while True:
        flat = running[:, :, :cur].reshape(N, cur)  # (N, cur)
        logits = decoder(flat)  # (N, V)
        log_probs = process_scores(log_softmax(logits.astype(f32, copy=False)), flat, s)  # (N, V)
        if keep_scores:
            all_scores.append(log_probs)
        total = (log_probs.reshape(B, K, V) + running_scores[:, :, None]).reshape(B, K * V)

        # the best `keep` continuations over all K beams (or a draw of them, without replacement)
        if s.do_sample:
            gumbel = -xp.log(-xp.log(xp.asarray(rng.random(total.shape))))  # (B, K*V)
            _, idx = topk(total.astype(np.float64) + gumbel, keep)
            cand_scores = xp.take_along_axis(total, idx, axis=-1)
            order = xp.argsort(-cand_scores, axis=-1, kind="stable")
            cand_scores = xp.take_along_axis(cand_scores, order, axis=-1)
            idx = xp.take_along_axis(idx, order, axis=-1)
        else:
            cand_scores, idx = topk(total, keep)  # (B, keep)
        parent, token = idx // V, idx % V  # (B, keep)
        cand = running[batch, parent]  # (B, keep, max_len)
        cand[:, :, cur] = token
        cand_from = running_from[batch, parent]  # (B, keep, max_len - 1)
        cand_from[:, :, cur - 1] = parent + batch * K
        ends = (token[:, :, None] == eos).any(axis=-1) | (cur + 1 >= max_len)  # (B, keep)

        # the next running beams: the best K continuations that do not end
        r_scores = cand_scores + ends.astype(f32) * NEG
        _, best = topk(r_scores, K)  # (B, K)
        running, running_scores = cand[batch, best], xp.take_along_axis(r_scores, best, axis=-1)
        running_from = cand_from[batch, best]

        # the finished hypotheses: merge the ones ending now (among the best K) into the best K
        just_done = ends & in_top_k  # (B, keep)
        normed = cand_scores / ((cur + 1 - prompt_len) ** lp)  # sum_logprobs / generated_len**lp
        full = finished.all(axis=-1, keepdims=True) & (stop is True)  # (B, 1)
        normed += full.astype(f32) * NEG
        normed += (~improvable).astype(f32) * NEG
        normed += (~just_done).astype(f32) * NEG
        m_scores = xp.concatenate([beam_scores, normed], axis=1)  # (B, K + keep)
        _, best = topk(m_scores, K)  # (B, K)
        sequences = xp.concatenate([sequences, cand], axis=1)[batch, best]
        seq_from = xp.concatenate([seq_from, cand_from], axis=1)[batch, best]
        finished = xp.concatenate([finished, just_done], axis=1)[batch, best]
        beam_scores = xp.take_along_axis(m_scores, best, axis=-1)

        decoder.reorder(running_from[:, :, cur - 1].reshape(N))
        cur += 1
        # can a running beam still beat the worst finished hypothesis?
        best_len = (max_len if (stop == "never" and lp > 0) else cur) - prompt_len
        best_running = running_scores[:, :1] / (best_len**lp)  # (B, 1)
        worst_done = xp.where(finished, beam_scores.min(axis=1, keepdims=True), NEG)  # (B, K)
        improvable &= (best_running > worst_done).any(axis=-1, keepdims=True)
        open_beams = not (bool(finished.all()) and stop is True)
        if not (bool(improvable.any()) and open_beams and not bool(ends.all())):
            break

    R = s.num_return_sequences
    sequences = sequences[:, :R].reshape(B * R, max_len)
    seq_from = seq_from[:, :R].reshape(B * R, max_len - 1)
    length = int((seq_from >= 0).sum(axis=1).max())
    return GenerateOutput(sequences[:, :1 + length], tuple(all_scores),
                          beam_scores[:, :R].reshape(B * R), seq_from[:, :length])
