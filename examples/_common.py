"""Shared by the application examples: train a small T5 on some built-in tasks, then ask it.

Not an example itself; each ``examples/<application>.py`` is a few lines on top of it:

    model, tok = train_on_tasks(["qa"], steps=1500, out="runs/qa")
    print(answer(model, tok, ["Answer the question using the context.\\n..."]))
"""

from __future__ import annotations

import argparse

import numpy as np

import minillm
from minillm import seeds
from minillm.backend import keep_freed_memory
from minillm.data import encode_examples
from minillm.data.tasks import TASKS, builtin_dataset
from minillm.data.tokenizer import Tokenizer
from minillm.evaluation import format_eval
from minillm.generation import generate
from minillm.training import TrainConfig, fit
from minillm.workflows.presets import PRESETS


def parse_args(doc: str, steps: int, out: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=steps, help="optimizer steps")
    p.add_argument("--out", default=out, help="run folder (a Hugging Face folder afterwards)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def train_on_tasks(tasks: list[str], steps: int, out: str, seed: int = 0, n_train: int = 10_000,
                   batch_size: int = 32, lr: float = 3e-3):
    """Train the "small" preset's T5 on ``tasks``; print held-out exact match; (model, tokenizer)."""
    keep_freed_memory()  # reuse each step's large arrays (see the README's performance notes)
    train = builtin_dataset(n_train, seed=seed, tasks=tasks)  # the "sft_data" stream of minillm.seeds
    held = builtin_dataset(40 * len(tasks), seed=seed, split="eval", tasks=tasks)  # "eval_data"
    phrasings = [p for t in tasks for p in TASKS[t].instructions + TASKS[t].heldout_instructions]
    tok = Tokenizer.train([e.prompt for e in train] + [e.target for e in train] + phrasings,
                          vocab_size=800)
    config = minillm.T5Config(vocab_size=tok.vocab_size, **PRESETS["small"].model)
    model = minillm.T5.init(config, seeds.generator(seed, "init"))
    print(f"{model.num_parameters():,} parameters; {len(train)} training examples of {tasks}")
    enc, _ = encode_examples(train, tok, 64, 32)
    held_enc, _ = encode_examples(held, tok, 64, 32)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(100, steps // 10),
                      eval_every=max(steps // 3, 1), seed=seed)
    result = fit(model, tok, enc, cfg, out, eval_examples=held, eval_data=held_enc,
                 verifiers={t: TASKS[t].verify for t in tasks})
    print(format_eval(result["final_eval"]))
    print(f"saved to {out} (load with minillm.from_pretrained or transformers)")
    return model, tok


def answer(model, tok, prompts: list[str], max_new_tokens: int = 32) -> list[str]:
    """Greedy answers of ``model`` to ``prompts``."""
    ids = [tok.encode(p) for p in prompts]
    S = max(map(len, ids))
    input_ids = np.zeros((len(ids), S), dtype=np.int64)  # (B, S), padded with <pad> = 0
    mask = np.zeros_like(input_ids)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)], mask[i, : len(row)] = row, 1
    out = generate(model, input_ids, mask, max_new_tokens=max_new_tokens)  # (B, 1 + L)
    texts = []
    for row in out:
        row = list(row[1:])  # drop the decoder start token
        texts.append(tok.decode(row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row))
    return texts


def show(model, tok, prompts: list[str]) -> None:
    for prompt, reply in zip(prompts, answer(model, tok, prompts), strict=True):
        print(f"\n{prompt}\n  -> {reply}")
