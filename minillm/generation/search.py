"""Generation: transformers' ``generate`` for T5, token for token, over a KV cache.

    ids = minillm.generate(model, input_ids, attention_mask, max_new_tokens=20, num_beams=4)
    ids = minillm.generate(model, input_ids, attention_mask, do_sample=True, top_p=0.9, rng=rng)

The options are transformers' ``GenerationConfig`` fields, with its defaults and
meanings; the installed ``transformers/generation/utils.py`` and
``logits_process.py`` are the specification this module follows. The encoder runs
once; each step feeds one token through the cached decoder (``minillm.engine.kv_cache``).
``use_cache=False`` runs the reference model's whole decoder each step instead.

Every step turns the logits into float32 scores and applies transformers'
logits processors (``minillm.generation.processors``). Greedy picks argmax s;
sampling draws from softmax(s) with the ``rng`` given.
Rows that have produced EOS are padded with ``pad_token_id``; decoding stops when
every row has finished or after ``max_new_tokens`` tokens.

Beam search (num_beams > 1) is ``minillm.generation.beam``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from minillm.backend import get_xp
from minillm.blas import adapt_threads
from minillm.engine import decode_step, encode, init_cache, reorder_cache, step_weights
from minillm.generation.beam import beam_search
from minillm.generation.processors import Settings, check_fits, check_settings, process_scores, sample


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
    s = check_settings(config, max_new_tokens, min_new_tokens, do_sample, temperature, top_k, top_p,
                       num_beams, length_penalty, early_stopping, num_return_sequences,
                       repetition_penalty, no_repeat_ngram_size, eos_token_id, pad_token_id)
    check_fits(config, s, input_ids.shape[0], input_ids.shape[1])
    if s.do_sample:
        if rng is None:
            raise ValueError("do_sample=True needs rng=numpy.random.default_rng(seed)")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    memory = encode(model, input_ids, attention_mask)  # (B, S, C), the engine's: no caches kept
    repeats = s.num_beams if s.num_beams > 1 else s.num_return_sequences
    decoder = _Decoder(model, memory, attention_mask, repeats, 1 + s.max_new_tokens, use_cache)
    B = memory.shape[0]
    if s.num_beams > 1:
        out = GenerateOutput(*beam_search(decoder, s, B, config.vocab_size, rng, get_xp(memory),
                                          output_scores))
    else:
        out = _greedy_or_sample(decoder, s, B * repeats, rng, get_xp(memory), output_scores)
    return out if output_scores else out.sequences


def check_options(config, batch_size: int, source_len: int, **options) -> Settings:
    """What :func:`generate` checks of its ``options`` (its keywords; the rest at their defaults),
    and that ``batch_size`` prompts of ``source_len`` tokens fit in memory, without decoding: a
    caller that decodes batch after batch refuses a bad option before the first."""
    names = [n for n in inspect.signature(check_settings).parameters if n != "config"]
    defaults = inspect.signature(generate).parameters
    s = check_settings(config, **{n: options.get(n, defaults[n].default) for n in names})
    check_fits(config, s, batch_size, source_len)
    return s


def _greedy_or_sample(decoder, s: Settings, N: int, rng, xp, keep_scores: bool) -> GenerateOutput:
    """transformers' ``_sample``: one token per row per step, argmax or a draw."""
    max_len = 1 + s.max_new_tokens
    ids = xp.full((N, max_len), s.pad, dtype=np.int64)
    ids[:, 0] = s.start
    eos = xp.asarray(s.eos, dtype=np.int64)
    unfinished = xp.ones(N, dtype=bool)
    scores = []
    length = max_len
    for cur in range(1, max_len):
        adapt_threads()  # BLAS's pool follows the idle cores (--threads auto)
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
