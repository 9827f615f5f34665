"""Where the main job's training step goes: the ``small`` preset's step taken apart.

    python benchmarks/main_job_step.py                 # batch 32, as minillm train
    python benchmarks/main_job_step.py --batch 64 --rounds 5
    OPENBLAS_NUM_THREADS=1 python benchmarks/main_job_step.py
    python benchmarks/main_job_step.py --heads 4 --d-kv 32 --d-ff 512   # the shape before issue 27
    python benchmarks/main_job_step.py --d-ff 512               # the recipe before d_ff 128

On batches of the built-in suite (length-bucketed, as the trainer draws them), it
times, interleaved over ``--rounds`` rounds (the minimum is printed, then every round):

    step              train_step: loss_and_grads, clip, AdamW, the finiteness checks
    loss_and_grads    the engine's forward and backward alone (what the trainer runs)
    reference         the same on the reference tier (T5.loss_and_grads), for comparison
    per-op overhead   the engine's loss_and_grads at B=1, S=T=2: every op's Python and
                      NumPy dispatch, with next to no arithmetic
    clip / AdamW / checks   the parts that scale with the parameters, not the batch
    collate           one batch padded from the encoded data
    GEMM replay       the step's linear maps as plain matmuls of its shapes
                      (forward x W, backward dy W^T and x^T dy): the FLOP floor
    attention bmm     the attention's batched products (scores, weighted sum, backward)

so loss_and_grads - GEMM - bmm - per-op overhead is the elementwise work (norms,
softmax, ReLU, the loss, the adds). The machine is shared: read the minimum.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import minillm
from minillm import engine, seeds
from minillm.data.batching import batch_stream, collate
from minillm.data.tasks import builtin_dataset
from minillm.data.tokenizer import Tokenizer
from minillm.optim import ScaledAdamW, clip_grad_norm, nonfinite_state
from minillm.training.sft import TrainConfig, train_step
from minillm.workflows.presets import PRESETS
from minillm.workflows.run_data import encode


def linear_shapes(cfg, B: int, S: int, T: int) -> list[tuple[int, int, int]]:
    """(M, K, N) of every linear map of one forward: x (M, K) @ W (K, N)."""
    C, F, HD, V = cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.d_kv, cfg.vocab_size
    enc = [(B * S, C, 3 * HD), (B * S, HD, C), (B * S, C, F), (B * S, F, C)]
    dec = [(B * T, C, 3 * HD), (B * T, HD, C), (B * T, C, HD), (B * S, C, 2 * HD), (B * T, HD, C),
           (B * T, C, F), (B * T, F, C)]
    return enc * cfg.num_layers + dec * cfg.num_decoder_layers + [(B * T, C, V)]


def gemm_replay(cfg, B: int, S: int, T: int):
    """(a function doing the step's matmuls once, their FLOP: forward and both backward products)."""
    rng = np.random.default_rng(0)
    mats = [(rng.random((M, K), np.float32), rng.random((K, N), np.float32), rng.random((M, N), np.float32))
            for M, K, N in linear_shapes(cfg, B, S, T)]
    flop = sum(3 * 2 * M * K * N for M, K, N in linear_shapes(cfg, B, S, T))

    def run(_):
        for x, w, dy in mats:
            x @ w, dy @ w.T, x.T @ dy  # noqa: B018 - timed for their cost
    return run, flop


def bmm_replay(cfg, B: int, S: int, T: int):
    """(the attention's batched products of one step, their FLOP): encoder self, decoder self, cross."""
    rng = np.random.default_rng(1)
    H, D = cfg.num_heads, cfg.d_kv
    att, flop = [], 0
    for tq, tk, n in [(S, S, cfg.num_layers), (T, T, cfg.num_decoder_layers), (T, S, cfg.num_decoder_layers)]:
        q, k = rng.random((B, H, tq, D), np.float32), rng.random((B, H, tk, D), np.float32)
        p = rng.random((B, H, tq, tk), np.float32)
        att += [(q, k, p)] * n
        flop += n * 3 * 2 * 2 * B * H * tq * tk * D

    def run(_):
        for q, k, p in att:  # scores q k^T, the weighted sum p v, and the backward's four products
            q @ k.transpose(0, 1, 3, 2), p @ k, p.transpose(0, 1, 3, 2) @ q  # noqa: B018
            p @ k, q @ k.transpose(0, 1, 3, 2), p.transpose(0, 1, 3, 2) @ q  # noqa: B018
    return run, flop


def setup(batch: int, shape: dict):
    """(model, optimizer, config, batches, encoded data) of the small preset on the built-in suite."""
    examples = builtin_dataset(20_000, seed=0)
    tok = Tokenizer.train([e.prompt for e in examples] + [e.target for e in examples], vocab_size=1000)
    enc = encode(examples, tok, 64, 32)
    preset = PRESETS["small"]
    model = minillm.T5.init(minillm.T5Config(vocab_size=tok.vocab_size, **{**preset.model, **shape}),
                            seeds.generator(0, "init"))
    config = TrainConfig(**{**preset.training, "batch_size": batch})
    optimizer = ScaledAdamW.from_config(config)
    stream = batch_stream(enc, batch, 0)
    batches = [next(stream)[0] for _ in range(60)]
    for i in range(10):  # warm up: the moments exist, the allocator has its blocks
        train_step(model, optimizer, [batches[i]], i, config, config.steps)
    return model, optimizer, config, batches, enc


def parts(batch: int, shape: dict) -> tuple[dict, str]:
    """{name: function of the round's index}, and a line describing the workload."""
    model, opt, config, batches, enc = setup(batch, shape)
    S = int(round(np.mean([b["input_ids"].shape[1] for b in batches])))
    T = int(round(np.mean([b["labels"].shape[1] for b in batches])))
    one = {k: v[:1, :2].copy() for k, v in batches[0].items() if k in ("input_ids", "labels")}
    one["attention_mask"] = np.ones((1, 2), np.int64)
    _, grads = engine.loss_and_grads(model, batches[0]["input_ids"], batches[0]["labels"],
                                     batches[0]["attention_mask"])
    b = lambda i: (batches[i % 60]["input_ids"], batches[i % 60]["labels"],  # noqa: E731
                   batches[i % 60]["attention_mask"])
    gemm, gemm_flop = gemm_replay(model.config, batch, S, T)
    bmm, bmm_flop = bmm_replay(model.config, batch, S, T)
    fns = {
        "step": lambda i: train_step(model, opt, [batches[i % 60]], 100 + i, config, config.steps),
        "loss_and_grads": lambda i: engine.loss_and_grads(model, *b(i)),
        "reference T5.loss_and_grads": lambda i: model.loss_and_grads(*b(i)),
        "per-op overhead (B=1, S=T=2)": lambda i: engine.loss_and_grads(
            model, one["input_ids"], one["labels"], one["attention_mask"]),
        "clip norm": lambda i: clip_grad_norm(grads, 1e9),
        "AdamW": lambda i: opt.step(model.params, grads, 1e-12),
        "finiteness checks": lambda i: nonfinite_state(model.params, opt),
        "collate": lambda i: collate(enc, np.arange(i * batch, (i + 1) * batch)),
        "GEMM replay": gemm,
        "attention bmm replay": bmm,
    }
    about = (f"B={batch}, mean padded S={S}, T={T}; {model.num_parameters():,} parameters; "
             f"GEMM {gemm_flop / 1e9:.2f} + bmm {bmm_flop / 1e9:.2f} GFLOP a step")
    return fns, about


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=20, help="calls of each part per round")
    p.add_argument("--heads", type=int, default=None, help="num_heads instead of the preset's")
    p.add_argument("--d-kv", type=int, default=None, help="d_kv instead of the preset's")
    p.add_argument("--d-ff", type=int, default=None, help="d_ff instead of the preset's")
    args = p.parse_args()
    shape = {k: v for k, v in (("num_heads", args.heads), ("d_kv", args.d_kv), ("d_ff", args.d_ff))
             if v is not None}
    fns, about = parts(args.batch, shape)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for i in range(args.calls):
                fn(i)
            times[name].append((time.perf_counter() - t0) / args.calls * 1e3)
    print(about)
    for name, ts in times.items():
        print(f"{name:30s} {min(ts):8.2f} ms   rounds: {' '.join(f'{t:.1f}' for t in ts)}")


if __name__ == "__main__":
    main()
