"""Beam search as transformers' ``generate`` runs it (num_beams = K > 1), vectorised over prompts.

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
from minillm.blas import adapt_threads
from minillm.generation.processors import Settings, process_scores, topk
from minillm.ops.cross_entropy import log_softmax

NEG = np.float32(-1.0e9)  # transformers' "never pick this" beam score


@dataclass
class _Beams:
    """Beam search's state for B prompts of K beams; L = max_len = 1 + max_new_tokens.

    The K running beams: ids (B, K, L), summed processed log-probs (B, K) and the
    flat beam row each token came from (B, K, L-1; -1 where none). The K best
    finished hypotheses: the same ids and rows, their normalised scores (NEG
    while a slot is empty) and which slots are filled. ``improvable`` (B, 1) is
    transformers' is_early_stop_heuristic_unsatisfied.
    """

    running: Any
    running_scores: Any
    running_from: Any
    sequences: Any
    seq_from: Any
    beam_scores: Any
    finished: Any
    improvable: Any


def _start_beams(B: int, K: int, s: Settings, xp) -> _Beams:
    """K identical beams per prompt (decoder start only); only the first is expanded."""
    max_len = 1 + s.max_new_tokens
    fill = s.pad if (s.pad or not s.eos) else s.eos[0]  # transformers: pad_token_id or eos[0]
    running = xp.full((B, K, max_len), fill, dtype=np.int64)
    running[:, :, 0] = s.start
    running_scores = xp.zeros((B, K), dtype=np.float32)
    running_scores[:, 1:] = NEG  # the K beams start identical: expand only the first
    running_from = xp.full((B, K, max_len - 1), -1, dtype=np.int64)
    return _Beams(running, running_scores, running_from, running.copy(), running_from.copy(),
                  xp.full((B, K), NEG, dtype=np.float32), xp.zeros((B, K), dtype=bool),
                  xp.ones((B, 1), dtype=bool))


def _best_continuations(total, keep: int, s: Settings, rng, xp):
    """The best ``keep`` of total (B, K*V), best first (a draw without replacement when do_sample).

    Sampling adds Gumbel noise and keeps the top ``keep`` of the noisy scores: a
    draw in proportion to exp(score). Returns (scores (B, keep), flat index (B, keep)).
    """
    if not s.do_sample:
        return topk(total, keep)
    gumbel = -xp.log(-xp.log(xp.asarray(rng.random(total.shape))))  # (B, K*V)
    _, idx = topk(total.astype(np.float64) + gumbel, keep)
    scores = xp.take_along_axis(total, idx, axis=-1)
    order = xp.argsort(-scores, axis=-1, kind="stable")
    return xp.take_along_axis(scores, order, axis=-1), xp.take_along_axis(idx, order, axis=-1)


def _extend(beams: _Beams, idx, V: int, cur: int, eos):
    """The candidates: parent beam + token at position cur; which of them end (EOS or max length).

    idx: (B, keep) flat index parent * V + token. Returns ids (B, keep, L),
    parent rows (B, keep, L-1), ends (B, keep).
    """
    K, max_len = beams.running.shape[1:]
    batch = get_xp(idx).arange(len(idx))[:, None]  # (B, 1)
    parent, token = idx // V, idx % V  # (B, keep)
    cand = beams.running[batch, parent]  # (B, keep, L)
    cand[:, :, cur] = token
    cand_from = beams.running_from[batch, parent]  # (B, keep, L-1)
    cand_from[:, :, cur - 1] = parent + batch * K
    ends = (token[:, :, None] == eos).any(axis=-1) | (cur + 1 >= max_len)  # (B, keep)
    return cand, cand_from, ends


def _keep_running(beams: _Beams, cand, cand_from, cand_scores, ends) -> None:
    """The next running beams: the best K candidates that do not end."""
    K = beams.running.shape[1]
    batch = get_xp(cand).arange(len(cand))[:, None]  # (B, 1)
    r_scores = cand_scores + ends.astype(np.float32) * NEG
    _, best = topk(r_scores, K)  # (B, K)
    beams.running, beams.running_from = cand[batch, best], cand_from[batch, best]
    beams.running_scores = get_xp(cand).take_along_axis(r_scores, best, axis=-1)


def _merge_finished(beams: _Beams, cand, cand_from, cand_scores, just_done, generated: int,
                    s: Settings) -> None:
    """Merge the candidates ending now (among the best K) into the K best finished hypotheses.

    A hypothesis scores sum_logprobs / generated ** length_penalty; none is
    added to a prompt that is full under early_stopping=True or cannot improve.
    """
    xp = get_xp(cand)
    K = beams.running.shape[1]
    batch = xp.arange(len(cand))[:, None]  # (B, 1)
    f32 = np.float32
    normed = cand_scores / (generated**s.length_penalty)  # (B, keep)
    full = beams.finished.all(axis=-1, keepdims=True) & (s.early_stopping is True)  # (B, 1)
    normed += full.astype(f32) * NEG
    normed += (~beams.improvable).astype(f32) * NEG
    normed += (~just_done).astype(f32) * NEG
    m_scores = xp.concatenate([beams.beam_scores, normed], axis=1)  # (B, K + keep)
    _, best = topk(m_scores, K)  # (B, K)
    beams.sequences = xp.concatenate([beams.sequences, cand], axis=1)[batch, best]
    beams.seq_from = xp.concatenate([beams.seq_from, cand_from], axis=1)[batch, best]
    beams.finished = xp.concatenate([beams.finished, just_done], axis=1)[batch, best]
    beams.beam_scores = xp.take_along_axis(m_scores, best, axis=-1)


def _update_improvable(beams: _Beams, cur: int, s: Settings) -> None:
    """Can a prompt's best running beam still beat its worst finished hypothesis?

    The running beam is scored at its current length, or at max length with
    early_stopping="never" and length_penalty > 0.
    """
    xp = get_xp(beams.running_scores)
    lp, max_len = s.length_penalty, beams.running.shape[2]
    best_len = (max_len if (s.early_stopping == "never" and lp > 0) else cur) - 1  # generated tokens
    best_running = beams.running_scores[:, :1] / (best_len**lp)  # (B, 1)
    worst_done = xp.where(beams.finished, beams.beam_scores.min(axis=1, keepdims=True), NEG)  # (B, K)
    beams.improvable &= (best_running > worst_done).any(axis=-1, keepdims=True)


def beam_search(decoder, s: Settings, B: int, V: int, rng, xp, keep_scores: bool) -> tuple:
    """transformers' ``_beam_search`` (vectorised over prompts), in float32 as it is.

    decoder(ids (N, cur)) -> logits (N, V) for N = B * K rows, and
    decoder.reorder(index (N,)) makes row n continue row index[n]. ``cur`` is
    the current length (decoder start included); each step scores the K beams'
    continuations, keeps the best ``keep`` = 2K of them (one more per extra EOS
    id), and splits those into the next running beams and the finished
    hypotheses. Returns (sequences (B*R, 1+L), per-step scores, sequences_scores
    (B*R,), beam_indices (B*R, L)): ``GenerateOutput``'s fields.
    """
    K = s.num_beams
    N, max_len = B * K, 1 + s.max_new_tokens
    keep = max(2, 1 + len(s.eos)) * K  # candidates per step: 2K for one EOS id
    in_top_k = xp.arange(keep) < K  # (keep,)
    eos = xp.asarray(s.eos, dtype=np.int64)
    beams = _start_beams(B, K, s, xp)
    all_scores = []
    cur = 1
    while True:
        flat = beams.running[:, :, :cur].reshape(N, cur)  # (N, cur)
        adapt_threads()  # BLAS's pool follows the idle cores (--threads auto)
        logits = decoder(flat)  # (N, V)
        log_probs = process_scores(log_softmax(logits.astype(np.float32, copy=False)), flat, s)  # (N, V)
        if keep_scores:
            all_scores.append(log_probs)
        total = (log_probs.reshape(B, K, V) + beams.running_scores[:, :, None]).reshape(B, K * V)
        cand_scores, idx = _best_continuations(total, keep, s, rng, xp)  # (B, keep)
        cand, cand_from, ends = _extend(beams, idx, V, cur, eos)
        _keep_running(beams, cand, cand_from, cand_scores, ends)
        _merge_finished(beams, cand, cand_from, cand_scores, ends & in_top_k, cur, s)
        decoder.reorder(beams.running_from[:, :, cur - 1].reshape(N))
        cur += 1
        _update_improvable(beams, cur, s)
        open_beams = not (bool(beams.finished.all()) and s.early_stopping is True)
        if not (bool(beams.improvable.any()) and open_beams and not bool(ends.all())):
            break

    R = s.num_return_sequences
    sequences = beams.sequences[:, :R].reshape(B * R, max_len)
    seq_from = beams.seq_from[:, :R].reshape(B * R, max_len - 1)
    length = int((seq_from >= 0).sum(axis=1).max())
    return (sequences[:, :1 + length], tuple(all_scores), beams.beam_scores[:, :R].reshape(B * R),
            seq_from[:, :length])
