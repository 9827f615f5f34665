"""Scoring a model on instruction data: loss, perplexity, exact match, BLEU, ROUGE, per task.

    result = evaluate_model(model, tokenizer, examples, num_beams=1, max_new_tokens=32)  # minillm eval
    result = evaluate(model, tokenizer, examples, encoded)      # the SFT trainer's held-out figures

- loss: mean target-token cross-entropy under teacher forcing (the model's own
  ``loss``: labels are the target plus ``</s>``); perplexity = exp(loss),
  corpus-level: exp(sum of token NLL / number of target tokens).
- The outputs are decoded with ``minillm.generation.generate`` and the given
  settings, cut at the first ``</s>``; BLEU (sacrebleu's corpus BLEU, 0-100),
  ROUGE-1/2/L F-measures (rouge-score's, mean over examples, 0-1) and exact
  match (fraction 0-1) compare them with the targets, overall and per task
  (``minillm.data.group_by_task``; examples without a task are under "all").
- ``verifiers`` (task name -> score(example, output), e.g. the built-in tasks'
  ``verify``) add a "score" per task: semantic equivalence for code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import minillm.engine as engine
from minillm.data.batching import EncodedDataset, collate, encode_examples
from minillm.data.examples import Example, group_by_task
from minillm.evaluation.decode import decode_outputs, greedy_outputs
from minillm.ops.cross_entropy import IGNORE_INDEX
from minillm.parallel import SINGLE

Verifiers = dict[str, Callable[[Example, str], float]]


def teacher_forced_nll(model, encoded: EncodedDataset, batch_size: int = 150,
                       world=None) -> tuple[float, int]:
    """(summed negative log-likelihood in nats, number of target tokens) over ``encoded``.

    sum_i n_i * loss_i over length-sorted batches i of n_i target tokens each,
    loss_i being the model's mean token NLL of batch i. ``world``
    (:mod:`minillm.parallel`; None: one process): rank r computes batches r, r + R,
    ...; the terms are summed over the ranks (each has one owner, the others add
    0) and then added in batch order, so the total is one process's, bit for bit.
    """
    order = np.argsort(encoded.lengths[:, 0], kind="stable")
    starts = list(range(0, len(order), batch_size))
    world = SINGLE if world is None else world
    terms = np.zeros(len(starts), dtype=np.float64)  # n_i * loss_i of each batch
    counts = np.zeros(len(starts), dtype=np.float64)  # n_i (exact in float64)
    with world.together():  # an error on one rank is raised on every rank
        for j in range(world.rank, len(starts), world.size):
            b = collate(encoded, order[starts[j] : starts[j] + batch_size])
            n_b = int((b["labels"] != IGNORE_INDEX).sum())
            terms[j] = engine.loss(model, b["input_ids"], b["labels"], b["attention_mask"]) * n_b
            counts[j] = n_b
    if world.size > 1:
        both = world.allreduce_(np.concatenate([terms, counts]))
        terms, counts = both[: len(starts)], both[len(starts):]
    total, n = 0.0, 0
    for t, c in zip(terms.tolist(), counts.tolist(), strict=True):
        total += t
        n += int(c)
    return total, n


def text_metrics(outputs: Sequence[str], targets: Sequence[str]) -> dict[str, float]:
    """exact_match, corpus BLEU and mean ROUGE-1/2/L F of outputs against targets."""
    import minillm.metrics as metrics

    types = ("rouge1", "rouge2", "rougeL")
    rouge = [metrics.rouge(o, t, types=types) for o, t in zip(outputs, targets, strict=True)]
    n = max(len(rouge), 1)
    return {
        "exact_match": metrics.exact_match(outputs, targets),
        "bleu": metrics.corpus_bleu(list(outputs), [[t] for t in targets]),
        "rouge1": sum(r["rouge1"][2] for r in rouge) / n,
        "rouge2": sum(r["rouge2"][2] for r in rouge) / n,
        "rougeL": sum(r["rougeL"][2] for r in rouge) / n,
    }


def verified_score(verify: Callable[[Example, str], float], examples: Sequence[Example],
                   outputs: Sequence[str], idx: Sequence[int]) -> float:
    """Mean of verify(example_i, output_i) over the examples ``idx``."""
    return float(np.mean([verify(examples[i], outputs[i]) for i in idx]))


def samples(examples: Sequence[Example], outputs: Sequence[str], n: int = 3) -> list[dict]:
    """The first ``n`` (prompt, target, output) triples, for a look at what the model writes."""
    return [{"prompt": examples[i].prompt, "target": examples[i].target, "output": outputs[i]}
            for i in range(min(n, len(examples)))]


def evaluate(model, tokenizer, examples: Sequence[Example], encoded: EncodedDataset,
             batch_size: int = 150, max_new_tokens: int = 32,
             verifiers: Verifiers | None = None, world=None, decode: bool = True) -> dict[str, Any]:
    """Held-out metrics: loss, perplexity, exact match (greedy decoding), overall and per task.

    exact_match = (1/n) sum_i [strip(output_i) == strip(target_i)], a fraction 0-1;
    perplexity = exp(summed target-token NLL / target tokens). Returns {"loss",
    "perplexity", "exact_match", "n", "per_task": {task: {"exact_match", "n"[,
    "score"]}}, "samples": a few (prompt, target, output)}. ``decode=False``: only
    {"loss", "perplexity", "n"} (one teacher-forced pass, no decoding). ``world``: the
    ranks split the batches (:func:`teacher_forced_nll`, :func:`decode_outputs`); each
    gets the whole result, equal to one process's.
    """
    from minillm.metrics import exact_match, perplexity

    nll, n_tok = teacher_forced_nll(model, encoded, batch_size, world)
    loss = {"loss": nll / max(n_tok, 1), "perplexity": perplexity(nll, n_tok) if n_tok else math.inf,
            "n": len(examples)}
    if not decode:
        return loss
    outputs = greedy_outputs(model, tokenizer, encoded, batch_size, max_new_tokens, world)
    per_task = {}
    for task, idx in group_by_task(examples).items():
        row = {"exact_match": exact_match([outputs[i] for i in idx],
                                          [examples[i].target for i in idx]), "n": len(idx)}
        if verifiers and task in verifiers:
            row["score"] = verified_score(verifiers[task], examples, outputs, idx)
        per_task[task] = row
    return {**loss, "exact_match": exact_match(outputs, [ex.target for ex in examples]),
            "per_task": per_task, "samples": samples(examples, outputs)}


def evaluate_model(model, tokenizer, examples: Sequence[Example], *, max_source_len: int = 256,
                   max_target_len: int = 128, batch_size: int = 64, progress: bool = False,
                   verifiers: Verifiers | None = None, world=None, **gen_kwargs: Any) -> dict[str, Any]:
    """All the metrics for ``examples``; returns a JSON-ready dict (see the module docstring).

    Keys: loss, perplexity, n_target_tokens, exact_match, bleu, rouge1, rouge2,
    rougeL, n, per_task {task: the same text metrics, n[, score]}, truncated,
    decoding (the generation settings) and outputs (one string per example).
    ``world``: the ranks split the batches, as in :func:`evaluate`.
    """
    from minillm.metrics import perplexity

    if not examples:
        raise ValueError("no examples to evaluate")
    encoded, stats = encode_examples(examples, tokenizer, max_source_len, max_target_len)
    nll, n_tok = teacher_forced_nll(model, encoded, batch_size, world)
    gen_kwargs.setdefault("max_new_tokens", max_target_len)
    outputs = decode_outputs(model, tokenizer, encoded, batch_size, progress, world, **gen_kwargs)
    targets = [ex.target for ex in examples]
    result: dict[str, Any] = {"loss": nll / max(n_tok, 1),
                              "perplexity": perplexity(nll, n_tok) if n_tok else float("inf"),
                              "n_target_tokens": n_tok}
    result.update(text_metrics(outputs, targets))
    result["n"] = len(examples)
    result["per_task"] = {}
    for task, idx in group_by_task(examples).items():
        row = text_metrics([outputs[i] for i in idx], [targets[i] for i in idx])
        row["n"] = len(idx)
        if verifiers and task in verifiers:
            row["score"] = verified_score(verifiers[task], examples, outputs, idx)
        result["per_task"][task] = row
    result["truncated"] = {"sources": stats.truncated_sources, "targets": stats.truncated_targets}
    result["decoding"] = {k: v for k, v in gen_kwargs.items() if k != "rng"}
    result["outputs"] = outputs
    return result
