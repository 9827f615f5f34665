"""Named recipes for ``minillm train``: a model shape and the training settings that suit it.

A preset fixes what a user should not have to choose to see the trainer work:

    model      T5Config fields except vocab_size (which comes from the tokenizer)
    training   TrainConfig fields (steps, batch size, learning rate, ...)
    data       the built-in suite's sizes, the tokenizer's vocabulary, max lengths

Every value can still be overridden on the command line (``--steps``, ``--lr``, ...).

- ``small`` (the default): the main job, 1.4M parameters (3 encoder and 6 decoder
  layers, d_model 128 as 16 heads of 8, d_ff 128), 3000 steps of 32 of 100,000 generated
  examples of the default suite, qa weighted 3, instruction word dropout 0.15, the
  learning rate held at 1e-3 to three quarters of the steps and then linear to 0 ("wsd").
  Measured: docs/main-job.md (seeds 0-2 from fresh clones, 2 quiet cores, 2026-12-06).
  What chose it (docs/main-job.md): 16 heads of 8 learn every task in half the steps of
  4 heads of 32 at 1.27x the step's cost; the qa lookup is learnt as a jump, which qa
  weighted 3 with the rate held high brought on every seed (weighted 2 under a cosine
  decay missed it on one seed in three); 2500-2600 steps leave largest_number and
  sort_words short; once qa was learnt, what failed was a held-out phrasing per seed
  (sort_words, uppercase), which instruction word dropout carried over; d_ff 128 learns
  as well as 512 here (the tasks need attention, not a wide FFN) in about 0.8x the time;
  batches of 64 and 128 learn less per example than their cheaper examples gain; lr 2e-3
  is too high; model dropout 0.1 learns too slowly for the budget. The decoder depth is
  what moved the copy tasks (issue 14: 3+3 layers gave 86.6% and 88.8% where 3+6 gave 92%).
- ``pretrain``: ``minillm pretrain``'s default: the ``small`` preset's layers and width as 4
  heads of 32, with d_ff 512 (the shape ``small`` had until issue 27). At pretraining's
  128-token inputs the attention's (B, H, S, S) probabilities dominate what is not a GEMM,
  and 4 heads make them a quarter of 16 heads': the step took 450 ms against 823 ms at 16
  heads of 8 (``python benchmarks/bench_pretrain.py --repeats 3 [--heads 4 --d-kv 32]``,
  2 threads, 2026-12-06; docs/pretraining.md).
- ``tiny``: a model that trains in seconds; for tests and smoke runs (it learns little).
- ``base``: 5.7M parameters (d_model 256, 3+3 layers) and longer training; for a
  machine with time to spare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """A named recipe: ``model`` are T5Config fields, ``training`` TrainConfig fields.

    ``n_train`` / ``n_eval``: examples of the built-in suite drawn for training and
    for held-out evaluation (``n_eval_periodic`` of them at each periodic evaluation);
    ``task_weights``: the training mix (task -> relative weight, 1 for a task not named;
    the held-out examples stay balanced over the tasks);
    ``instruction_dropout``: each word of a training example's instruction is left out
    with this probability (the built-in suite only; :func:`minillm.data.tasks.base.drop_words`);
    ``vocab_size``: the tokenizer's target vocabulary (the model takes the tokenizer's
    actual size).
    """

    name: str
    description: str
    model: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    task_weights: dict[str, float] = field(default_factory=dict)
    instruction_dropout: float = 0.0
    n_train: int = 20_000
    n_eval: int = 900
    n_eval_periodic: int = 270
    vocab_size: int = 1000
    max_source_len: int = 64
    max_target_len: int = 32


# the layers and width that the main job (`small`) and `pretrain` share; they differ in heads and d_ff
SMALL_LAYERS = dict(d_model=128, num_layers=3, num_decoder_layers=6, feed_forward_proj="relu",
                    tie_word_embeddings=True, dropout_rate=0.0)
SMALL_MODEL = {**SMALL_LAYERS, "num_heads": 16, "d_kv": 8, "d_ff": 128}  # the main job's T5

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="small",
            description="1.4M parameters, the default: the built-in suite in 4-5 min on 2 CPU cores",
            model=SMALL_MODEL,
            training=dict(steps=3000, batch_size=32, lr=1e-3, warmup_steps=100, schedule="wsd",
                          decay_fraction=0.25, position_bias_lr_scale=30.0, eval_every=500,
                          weight_decay=0.01, max_grad_norm=1.0),
            task_weights={"qa": 3.0},
            instruction_dropout=0.15,
            n_train=100_000,
        ),
        Preset(
            name="pretrain",
            description="small's layers as 4 heads of 32, d_ff 512: minillm pretrain's default (128-token inputs)",
            model={**SMALL_LAYERS, "num_heads": 4, "d_kv": 32, "d_ff": 512},
            training=dict(steps=2000, batch_size=32, lr=1e-3, warmup_steps=100,
                          position_bias_lr_scale=30.0, eval_every=500, weight_decay=0.01,
                          max_grad_norm=1.0),
        ),
        Preset(
            name="tiny",
            description="a few thousand parameters; trains in seconds (tests, smoke runs)",
            model=dict(d_model=32, d_kv=8, num_heads=2, d_ff=64, num_layers=1,
                       num_decoder_layers=1, feed_forward_proj="relu", tie_word_embeddings=True,
                       dropout_rate=0.1, relative_attention_num_buckets=8,
                       relative_attention_max_distance=32),
            training=dict(steps=20, batch_size=16, lr=3e-3, warmup_steps=4, eval_every=10,
                          position_bias_lr_scale=10.0, weight_decay=0.01, max_grad_norm=1.0),
            n_train=400, n_eval=36, n_eval_periodic=18, vocab_size=300,
        ),
        Preset(
            name="base",
            description="5.7M parameters, longer training (for a machine with time to spare)",
            model=dict(d_model=256, d_kv=64, num_heads=4, d_ff=1024, num_layers=3,
                       num_decoder_layers=3, feed_forward_proj="relu", tie_word_embeddings=True,
                       dropout_rate=0.0),
            training=dict(steps=6000, batch_size=64, lr=1e-3, warmup_steps=200,
                          position_bias_lr_scale=30.0, eval_every=1000, weight_decay=0.01,
                          max_grad_norm=1.0),
            n_train=50_000,
        ),
    )
}

DEFAULT_PRESET = "small"
PRETRAIN_PRESET = "pretrain"  # minillm pretrain's default


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ValueError listing the presets for an unknown name."""
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(f"{p.name} ({p.description})" for p in PRESETS.values())
        raise ValueError(f"unknown preset {name!r}; known presets: {known}") from None
