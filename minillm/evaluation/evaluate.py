"""Evaluate a model on instruction data: loss, perplexity, BLEU, ROUGE, exact match.

    result = evaluate_model(model, tokenizer, examples, num_beams=1, max_new_tokens=32)

- loss: mean target-token cross-entropy under teacher forcing (the model's own
  ``loss``: labels are the target plus ``</s>``); perplexity = exp(loss),
  corpus-level: exp(sum of token NLL / number of target tokens).
- The outputs are decoded with ``minillm.generation.generate`` and the given
  settings, cut at the first ``</s>``; BLEU (sacrebleu's corpus BLEU, 0-100),
  ROUGE-1/2/L F-measures (rouge-score's, mean over examples, 0-1) and exact
  match (fraction 0-1) compare them with the targets, overall and per task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minillm.backend import to_numpy
from minillm.data import Example, collate, encode_examples


def decode_outputs(model, tokenizer, encoded, batch_size: int = 64, progress: bool = False,
                   **gen_kwargs: Any) -> list[str]:
    """Generate for every source in ``encoded`` (batched by length); decoded strings, in order.

    gen_kwargs go to ``generate`` (max_new_tokens, num_beams, do_sample, rng, ...);
    with num_return_sequences > 1 only the first sequence of each prompt is kept.
    """
    from minillm.generation import generate
    from minillm.training.sft import strip_after_eos

    order = np.argsort(encoded.lengths[:, 0], kind="stable")
    out: list[str] = [""] * len(encoded)
    cfg = model.config
    r = int(gen_kwargs.get("num_return_sequences", 1))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc="decoding", unit="ex", leave=False)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        b = collate(encoded, idx)
        ids = to_numpy(generate(model, b["input_ids"], b["attention_mask"], **gen_kwargs))
        for j, k in enumerate(idx):
            out[int(k)] = tokenizer.decode(
                strip_after_eos(ids[j * r], cfg.eos_token_id, cfg.decoder_start_token_id))
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return out


def text_metrics(outputs: Sequence[str], targets: Sequence[str]) -> dict[str, float]:
    """exact_match, corpus BLEU and mean ROUGE-1/2/L F of outputs against targets."""
    from minillm import metrics

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


def evaluate_model(model, tokenizer, examples: Sequence[Example], *, max_source_len: int = 256,
                   max_target_len: int = 128, batch_size: int = 64, progress: bool = False,
                   verifiers: dict[str, Callable[[Example, str], float]] | None = None,
                   **gen_kwargs: Any) -> dict[str, Any]:
    """All the metrics for ``examples``; returns a JSON-ready dict (see the module docstring).

    Keys: loss, perplexity, n_target_tokens, exact_match, bleu, rouge1, rouge2,
    rougeL, n, per_task {task: the same text metrics, n[, score]}, decoding
    (the generation settings) and outputs (one string per example).
    """
    from minillm.metrics import perplexity
    from minillm.training.sft import teacher_forced_nll

    if not examples:
        raise ValueError("no examples to evaluate")
    encoded, stats = encode_examples(examples, tokenizer, max_source_len, max_target_len)
    nll, n_tok = teacher_forced_nll(model, encoded, batch_size)
    gen_kwargs.setdefault("max_new_tokens", max_target_len)
    outputs = decode_outputs(model, tokenizer, encoded, batch_size, progress, **gen_kwargs)
    targets = [ex.target for ex in examples]
    result: dict[str, Any] = {"loss": nll / max(n_tok, 1),
                              "perplexity": perplexity(nll, n_tok) if n_tok else float("inf"),
                              "n_target_tokens": n_tok}
    result.update(text_metrics(outputs, targets))
    result["n"] = len(examples)
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.task or "all", []).append(i)
    result["per_task"] = {}
    for task in sorted(groups):
        idx = groups[task]
        row = text_metrics([outputs[i] for i in idx], [targets[i] for i in idx])
        row["n"] = len(idx)
        if verifiers and task in verifiers:
            row["score"] = float(np.mean([verifiers[task](examples[i], outputs[i]) for i in idx]))
        result["per_task"][task] = row
    result["truncated"] = {"sources": stats.truncated_sources, "targets": stats.truncated_targets}
    result["decoding"] = {k: v for k, v in gen_kwargs.items() if k != "rng"}
    result["outputs"] = outputs
    return result
