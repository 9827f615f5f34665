"""How far a pretraining run's held-out loss is from predictors that read no context.

    python benchmarks/pretrain_baseline.py runs/pretrain

A span-corruption target is sentinels, ``</s>`` and the dropped text tokens:

    <extra_id_0> to the <extra_id_1> list of <extra_id_2> ... </s>

Two context-free predictors, scored on the run's own held-out targets (its held-out
documents, corrupted on its ``held_out_noise`` stream, as the run's evaluations score
them), in nats per target token, the unit of the run's held-out loss:

    unigram          -mean log p(y), p the frequency of each token among span-corruption
                     targets of the training text (corrupted three times; add-one)
    format + unigram  a predictor that knows where every sentinel and ``</s>`` goes (cost 0)
                     and draws each text token from the training text's target unigram:
                     -mean over targets of [y is text] log p_text(y)

A model whose held-out loss is near "format + unigram" has learnt the format and the word
frequencies, and little that depends on the context; fill-in then writes the commonest
tokens. Reads the run folder's trainer_state.json (its ``run`` fields: corpus, lengths,
noise, seed) and tokenizer.json; rebuilds the data as ``minillm pretrain`` does.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from minillm import seeds
from minillm.data.t5_tokenizer import count_sentinels
from minillm.data.tokenizer import Tokenizer
from minillm.runfolder.metrics import read_metrics
from minillm.workflows.pretrain_data import pretraining_examples, read_documents
from minillm.workflows.runs import read_run


def baselines(run: str, passes: int = 3) -> dict:
    """{"unigram", "format_unigram", "text_share", "n_targets", "held_out_loss"} of a pretraining run."""
    info = read_run(run, "pretrain")["run"]  # validated: a pretraining run's state
    tok = Tokenizer.from_file(os.path.join(run, "tokenizer.json"))
    train, held = read_documents(info)
    data = pretraining_examples(info, train, held, tok)
    V = tok.vocab_size
    counts = np.ones(V)  # add-one: every id has some probability
    for r in range(passes):  # the training text's targets, on streams the run never draws
        batch = data.noise.corrupt(data.raw, seeds.generator(1000 + r, "span_noise"))
        labels = batch["labels"]
        counts += np.bincount(labels[labels >= 0].ravel(), minlength=V)
    y = np.concatenate([np.asarray(t) for t in data.held.targets])  # (N,) every held-out target id
    lowest_sentinel = data.noise.first_sentinel - count_sentinels(tok) + 1
    is_text = np.arange(V) < lowest_sentinel  # (V,) text tokens: below the sentinels, not </s> or pad
    is_text[[tok.eos_token_id, tok.pad_token_id]] = False
    log_p = np.log(counts / counts.sum())
    text_counts = np.where(is_text, counts, 0.0)
    log_p_text = np.log(np.where(is_text, text_counts / text_counts.sum(), 1.0))
    evals = [r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if r.get("kind") == "eval"]
    return {"unigram": float(-log_p[y].mean()),
            "format_unigram": float(np.where(is_text[y], -log_p_text[y], 0.0).mean()),
            "text_share": float(is_text[y].mean()), "n_targets": int(y.size),
            "held_out_loss": [(r["step"], r["loss"]) for r in evals]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a minillm pretrain run folder")
    args = p.parse_args()
    b = baselines(args.run)
    print(f"{b['n_targets']} held-out target tokens ({b['text_share']:.0%} text, the rest sentinels "
          f"and </s>), nats per target token:")
    print(f"  unigram                 {b['unigram']:.3f}")
    print(f"  format + unigram        {b['format_unigram']:.3f}")
    for step, loss in b["held_out_loss"]:
        print(f"  the run at step {step:<6d}  {loss:.3f}")


if __name__ == "__main__":
    main()
