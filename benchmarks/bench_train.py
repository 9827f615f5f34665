"""Training-step benchmark: minillm vs transformers' T5 vs a plain torch.nn
encoder-decoder, on the same config, in the same run, interleaved (A B C A B C).

    python benchmarks/bench_train.py                 # both variants, reference config
    python benchmarks/bench_train.py --quick         # a smaller, faster run
    python benchmarks/bench_train.py --variant relu --repeats 7 --threads 2

Each implementation runs in its own subprocess (so its peak RSS is its own),
times ``--steps`` training steps (forward, loss, backward, AdamW) after two
warm-up steps, and reports them; the parent interleaves the processes over
``--repeats`` rounds, then prints medians and ratios and writes JSON to
benchmarks/results/train.json. The NumPy GEMM rate is measured in the same
rounds, and the training step's model FLOPs / step time is quoted as a
fraction of it. This machine is noisy: read the medians and ratios.

The torch.nn model is nn.Transformer with T5's FFN: relu for the relu variant,
and for gated-gelu T5 v1.1's gated FFN, so each does the FLOPs of the T5 beside
it. The minillm worker calls ``keep_freed_memory()``, as the minillm CLI does
(torch and transformers keep glibc's defaults, as their users get them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REFERENCE = dict(vocab_size=8000, d_model=256, d_kv=64, num_heads=4, d_ff=1024, num_layers=3,
                 num_decoder_layers=3, batch=32, src_len=64, tgt_len=64)
QUICK = dict(REFERENCE, vocab_size=2000, d_model=128, d_kv=32, d_ff=512, num_layers=2,
             num_decoder_layers=2, batch=16, src_len=32, tgt_len=32)
IMPLS = ("minillm", "transformers", "torch")


def model_flops(c: dict, variant: str) -> float:
    """Matmul FLOPs of one training step (forward + backward ~ 3x forward).

    Per token, a (in -> out) projection costs 2*in*out; attention scores and
    the weighted sum cost 2*L*H*D each per query, L the number of keys.
    """
    B, S, T = c["batch"], c["src_len"], c["tgt_len"]
    C, HD, F, V = c["d_model"], c["num_heads"] * c["d_kv"], c["d_ff"], c["vocab_size"]
    ffn = (3 if variant.startswith("gated") else 2) * 2 * C * F
    enc = S * (4 * 2 * C * HD + 2 * 2 * S * HD + ffn)
    dec_self = T * (4 * 2 * C * HD + 2 * 2 * T * HD)
    dec_cross = T * (2 * 2 * C * HD + 2 * 2 * S * HD) + S * (2 * 2 * C * HD)
    dec = dec_self + dec_cross + T * ffn
    forward = B * (c["num_layers"] * enc + c["num_decoder_layers"] * dec + T * 2 * C * V)
    return 3.0 * forward


# ---------------------------------------------------------------- the workers


def _batch(c, seed=1):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.integers(2, c["vocab_size"], (c["batch"], c["src_len"]))
    y = rng.integers(2, c["vocab_size"], (c["batch"], c["tgt_len"]))
    return x, y


def worker_minillm(c, variant, dropout, steps, device="cpu"):
    import numpy as np

    import minillm
    from minillm.backend import keep_freed_memory, to_device, xp_for
    from minillm.optim import AdamW

    keep_freed_memory()  # as the minillm CLI does
    cfg = minillm.T5Config(**{k: c[k] for k in ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff",
                                                  "num_layers", "num_decoder_layers")},
                           dropout_rate=dropout, feed_forward_proj=variant,
                           tie_word_embeddings=variant == "relu")
    model = minillm.T5.init(cfg, np.random.default_rng(0), device=device)
    opt = AdamW(lr=1e-4)
    drng = np.random.default_rng(2)
    x, y = (to_device(a, device) for a in _batch(c))
    xp = xp_for(device)

    def step():
        loss, grads = model.loss_and_grads(x, y, rng=drng if dropout else None)
        opt.step(model.params, grads)
        if xp is not np:
            xp.cuda.Device().synchronize()
        return loss

    return _time(step, steps)


def worker_transformers(c, variant, dropout, steps, device="cpu"):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(**{k: c[k] for k in ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff",
                                        "num_layers", "num_decoder_layers")},
                   dropout_rate=dropout, feed_forward_proj=variant, tie_word_embeddings=variant == "relu",
                   decoder_start_token_id=0)
    model = T5ForConditionalGeneration(cfg)  # the default attention (what users get)
    if variant != "relu":  # FLAN-T5: a separate LM head
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = (torch.tensor(a, device=device) for a in _batch(c))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=x, labels=y).loss
        loss.backward()
        opt.step()
        return loss.item()  # .item() synchronises a GPU

    return _time(step, steps)


def worker_torch(c, variant, dropout, steps, device="cpu"):
    """A plain torch.nn encoder-decoder of the same size: embeddings, nn.Transformer, LM head.

    For the gated variant the feed-forward is T5 v1.1's, gelu_tanh(x W_i0) * (x W_i1) then W_o,
    with the same weights and FLOPs: nn.Transformer's first FFN linear is widened to 2F and
    split by the activation, its second linear maps F -> C.
    """
    import torch
    from torch import nn

    torch.manual_seed(0)
    C, V, F = c["d_model"], c["vocab_size"], c["d_ff"]
    gated = variant != "relu"

    def geglu(h):  # (.., 2F) -> (.., F): the gated FFN's two input projections in one
        h0, h1 = h.chunk(2, dim=-1)
        return nn.functional.gelu(h0, approximate="tanh") * h1

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, C)
            self.tf = nn.Transformer(C, c["num_heads"], c["num_layers"], c["num_decoder_layers"],
                                     2 * F if gated else F, dropout, activation=geglu if gated else "relu",
                                     batch_first=True, norm_first=True, bias=False)
            if gated:
                for layer in [*self.tf.encoder.layers, *self.tf.decoder.layers]:
                    layer.linear2 = nn.Linear(F, C, bias=False)
            self.head = nn.Linear(C, V, bias=False)
            if not gated:
                self.head.weight = self.emb.weight

        def forward(self, x, y):
            mask = nn.Transformer.generate_square_subsequent_mask(y.shape[1], device=y.device)
            h = self.tf(self.emb(x), self.emb(y), tgt_mask=mask, tgt_is_causal=True)
            return self.head(h)

    model = Seq2Seq().to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = (torch.tensor(a, device=device) for a in _batch(c))
    dec = torch.cat([torch.zeros_like(y[:, :1]), y[:, :-1]], dim=1)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x, dec)
        loss = nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss.item()

    return _time(step, steps)


def _time(step, steps, warmup=2):
    for _ in range(warmup):  # allocations, first touch, lazy initialisation: every implementation alike
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    assert loss == loss, "loss is NaN"
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"times_ms": [t * 1000 for t in times], "peak_rss_mb": rss_mb}


WORKERS = {"minillm": worker_minillm, "transformers": worker_transformers, "torch": worker_torch}


def run_worker(impl, c, variant, dropout, steps, threads, device="cpu"):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", impl, "--variant", variant, "--steps", str(steps),
           "--dropout", str(dropout), "--config", json.dumps(c), "--threads", str(threads),
           "--device", device]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def gemm_rate(c, repeats=5, device="cpu"):
    """float32 GEMM GFLOP/s of the array module on the step's most common shape: (B*L, C) @ (C, F)."""
    import numpy as np

    from minillm.backend import to_device, xp_for

    xp = xp_for(device)
    sync = (lambda: xp.cuda.Device().synchronize()) if xp is not np else (lambda: None)
    rng = np.random.default_rng(0)
    a = to_device(rng.standard_normal((c["batch"] * c["src_len"], c["d_model"]), dtype=np.float32), device)
    b = to_device(rng.standard_normal((c["d_model"], c["d_ff"]), dtype=np.float32), device)
    a @ b
    sync()
    times = []
    for _ in range(repeats):  # each sample: as many products as fill 0.2 s
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.2:
            a @ b
            n += 1
        sync()
        times.append((time.perf_counter() - t0) / n)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / statistics.median(times) / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=["relu", "gated-gelu", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per process per round")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--quick", action="store_true", help="a smaller config and fewer rounds")
    ap.add_argument("--only", nargs="+", choices=IMPLS, default=list(IMPLS))
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: minillm on CuPy against PyTorch CUDA eager")
    ap.add_argument("--config-scale", type=int, default=1,
                    help="multiply batch and widths (d_model, d_ff, d_kv) to occupy a GPU")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "train.json"))
    ap.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        if args.worker != "minillm":
            import torch

            torch.set_num_threads(args.threads)
        res = WORKERS[args.worker](json.loads(args.config), args.variant, args.dropout, args.steps,
                                   args.device)
        print(json.dumps(res))
        return 0

    c = dict(QUICK if args.quick else REFERENCE)
    if args.config_scale > 1:
        k = args.config_scale
        c.update(batch=c["batch"] * k, d_model=c["d_model"] * k, d_ff=c["d_ff"] * k, d_kv=c["d_kv"] * k)
    repeats = min(args.repeats, 2) if args.quick else args.repeats
    variants = ["relu", "gated-gelu"] if args.variant == "both" else [args.variant]
    results = {"config": c, "device": args.device, "threads": args.threads, "dropout": args.dropout,
               "repeats": repeats,
               "variants": {}}
    for variant in variants:
        times = {impl: [] for impl in args.only}
        rss = {impl: [] for impl in args.only}
        gemm = []
        for r in range(repeats):
            gemm.append(gemm_rate(c, device=args.device))
            for impl in args.only:
                res = run_worker(impl, c, variant, args.dropout, args.steps, args.threads, args.device)
                times[impl] += res["times_ms"]
                rss[impl].append(res["peak_rss_mb"])
            print(f"[{variant}] round {r + 1}/{repeats}: " + ", ".join(
                f"{i} {statistics.median(times[i]):.0f} ms" for i in args.only), file=sys.stderr)
        med = {i: statistics.median(times[i]) for i in args.only}
        flops = model_flops(c, variant)
        g = statistics.median(gemm)
        v = {"step_ms_median": med, "step_ms_all": times, "peak_rss_mb": {i: max(rss[i]) for i in rss},
             "gemm_gflops": g, "model_gflop_per_step": flops / 1e9}
        if "minillm" in med:
            achieved = flops / (med["minillm"] / 1000) / 1e9
            v["minillm_gflops"] = achieved
            v["fraction_of_gemm_rate"] = achieved / g
            for ref in ("transformers", "torch"):
                if ref in med:
                    v[f"time_ratio_vs_{ref}"] = med["minillm"] / med[ref]
                    v[f"rss_ratio_vs_{ref}"] = v["peak_rss_mb"]["minillm"] / v["peak_rss_mb"][ref]
        results["variants"][variant] = v

    print(f"\ntraining step, config {c}, threads {args.threads}, dropout {args.dropout}")
    print(f"{'variant':<11} {'impl':<13} {'median ms':>10} {'peak RSS MB':>12} {'ratio (minillm/x)':>18}")
    for variant, v in results["variants"].items():
        for impl, ms in v["step_ms_median"].items():
            ratio = v.get(f"time_ratio_vs_{impl}")
            rr = v.get(f"rss_ratio_vs_{impl}")
            extra = f"{ratio:.2f}x time, {rr:.2f}x RSS" if ratio else ""
            print(f"{variant:<11} {impl:<13} {ms:>10.0f} {v['peak_rss_mb'][impl]:>12.0f} {extra:>18}")
        if "fraction_of_gemm_rate" in v:
            print(f"{variant:<11} GEMM rate {v['gemm_gflops']:.1f} GFLOP/s; minillm step "
                  f"{v['minillm_gflops']:.1f} GFLOP/s = {v['fraction_of_gemm_rate']:.0%} of it "
                  f"({v['model_gflop_per_step']:.1f} GFLOP per step)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
