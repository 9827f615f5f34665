"""Generation benchmark: minillm's ``generate`` vs transformers' on the same random T5,
in the same process, interleaved (A B A B), greedy and beam search, batch 1 and 16.

    python benchmarks/bench_generate.py                 # the reference config
    python benchmarks/bench_generate.py --quick         # smaller and fewer repeats
    python benchmarks/bench_generate.py --repeats 9 --threads 2
    python benchmarks/bench_generate.py --device cuda   # CuPy against transformers on torch CUDA

Reference config: vocab 8000, d_model 256, d_kv 64, 4 heads, d_ff 1024, 3+3
layers, relu, tied embeddings; prompts of 64 tokens; 64 new tokens with
min_new_tokens=64, so every call decodes exactly 64 steps. Both sides run in
float32 with the same weights (minillm's saved, transformers' loaded from them),
on ``--threads`` threads (default: every core): torch's, and numpy's BLAS
through threadpoolctl when it is installed (else the BLAS default). tokens/s is
batch * new tokens / wall time of one ``generate`` call (encoder included).
Prints the medians over ``--repeats`` rounds and minillm / transformers, and
writes JSON to benchmarks/results/generate-t{threads}.json. The machine may be shared:
read the ratios of the interleaved medians, not the absolute rates.

With ``--device cuda`` both run on the GPU (minillm through CuPy, transformers
on torch CUDA), the prompts are copied there before the clock starts, and each
side synchronises its device before reading the clock at both ends
(``cupy.cuda.Device().synchronize()``, ``torch.cuda.synchronize()``); the JSON
goes to benchmarks/results/generate-cuda.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

REFERENCE = dict(vocab_size=8000, d_model=256, d_kv=64, num_heads=4, d_ff=1024, num_layers=3,
                 num_decoder_layers=3, prompt_len=64, new_tokens=64)
QUICK = dict(REFERENCE, prompt_len=32, new_tokens=32)
CASES = [(1, 1), (1, 4), (16, 1), (16, 4)]  # (batch, num_beams)


def build(c: dict, folder: str, device: str = "cpu"):
    """The same random float32 T5 for both, on ``device``: minillm's, and transformers' loaded from it."""
    import numpy as np
    import torch
    from transformers import T5ForConditionalGeneration

    import minillm

    cfg = minillm.T5Config(**{k: c[k] for k in ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff",
                                                  "num_layers", "num_decoder_layers")},
                           dropout_rate=0.0, feed_forward_proj="relu", tie_word_embeddings=True)
    model = minillm.T5.init(cfg, np.random.default_rng(0), dtype="float32")
    model.save_pretrained(folder)
    tm = T5ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32,
                                                    attn_implementation="eager")
    tm.to(device).eval()
    return model.to(device), tm


def prompts(c: dict, batch: int, seed: int = 1):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(2, c["vocab_size"], (batch, c["prompt_len"]))
    ids[:, -1] = 1  # </s>
    return ids, np.ones_like(ids)


def time_minillm(model, ids, mask, kw, device: str = "cpu"):
    from minillm.backend import to_device, to_numpy, xp_for
    from minillm.generation import generate

    sync = xp_for(device).cuda.Device().synchronize if device == "cuda" else (lambda: None)
    x, m = to_device(ids, device), to_device(mask, device)
    sync()
    t = time.perf_counter()
    out = generate(model, x, m, **kw)
    sync()
    return time.perf_counter() - t, to_numpy(out)


def time_transformers(tm, ids, mask, kw, device: str = "cpu"):
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    x, m = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
    sync()
    t = time.perf_counter()
    with torch.inference_mode():
        out = tm.generate(x, attention_mask=m, **kw)
    sync()
    return time.perf_counter() - t, out.cpu().numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="32+32 tokens, 3 repeats")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch threads and numpy BLAS threads (default: every core)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: minillm on CuPy against transformers on PyTorch CUDA (default: cpu)")
    ap.add_argument("--out", default=None,
                    help="JSON file (default benchmarks/results/generate-tN[-quick].json, "
                    "generate-cuda[-quick].json with --device cuda)")
    args = ap.parse_args(argv)
    import numpy as np
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    gpu = None
    if args.device == "cuda":
        from minillm.backend import xp_for

        try:
            xp_for("cuda")
        except RuntimeError as e:
            ap.error(str(e))
        if not torch.cuda.is_available():
            ap.error(f"--device cuda: torch {torch.__version__} sees no CUDA device")
        gpu = torch.cuda.get_device_name()
    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads, user_api="blas")
        blas_threads = args.threads
    except ImportError:
        blas_threads = "default (threadpoolctl not installed)"
    c = QUICK if args.quick else REFERENCE
    repeats = args.repeats or (3 if args.quick else 5)
    with tempfile.TemporaryDirectory() as folder:
        model, tm = build(c, folder, args.device)
    kw_base = dict(max_new_tokens=c["new_tokens"], min_new_tokens=c["new_tokens"])
    times: dict = {(b, k): {"minillm": [], "transformers": []} for b, k in CASES}
    agree: dict = {}
    for b, k in CASES:  # warm-up, and do both decode the same tokens?
        ids, mask = prompts(c, b)
        kw = dict(kw_base, num_beams=k)
        _, a = time_minillm(model, ids, mask, kw, args.device)
        _, h = time_transformers(tm, ids, mask, kw, args.device)
        agree[b, k] = float((a == h).mean()) if a.shape == h.shape else 0.0
    for r in range(repeats):
        for b, k in CASES:
            ids, mask = prompts(c, b)
            kw = dict(kw_base, num_beams=k)
            order = ("minillm", "transformers") if r % 2 == 0 else ("transformers", "minillm")
            for impl in order:
                if impl == "minillm":
                    dt, _ = time_minillm(model, ids, mask, kw, args.device)
                else:
                    dt, _ = time_transformers(tm, ids, mask, kw, args.device)
                times[b, k][impl].append(dt)
        print(f"round {r + 1}/{repeats} done", file=sys.stderr)

    rows = []
    where = (f"on {gpu} (cupy vs torch CUDA)" if gpu else
             f"torch threads {args.threads}, BLAS threads {blas_threads}")
    print(f"\nT5 vocab {c['vocab_size']}, d_model {c['d_model']}, {c['num_layers']}+"
          f"{c['num_decoder_layers']} layers; prompt {c['prompt_len']}, {c['new_tokens']} new tokens; "
          f"{where}; medians of {repeats}")
    print(f"{'batch':>5} {'beams':>5} {'minillm tok/s':>14} {'transformers tok/s':>19} "
          f"{'ratio':>6} {'same tokens':>12}")
    for b, k in CASES:
        tokens = b * c["new_tokens"]
        med = {impl: statistics.median(v) for impl, v in times[b, k].items()}
        ours, theirs = tokens / med["minillm"], tokens / med["transformers"]
        rows.append(dict(batch=b, num_beams=k, minillm_tokens_per_s=ours,
                         transformers_tokens_per_s=theirs, ratio=ours / theirs,
                         same_tokens=agree[b, k], minillm_s=times[b, k]["minillm"],
                         transformers_s=times[b, k]["transformers"]))
        print(f"{b:>5} {k:>5} {ours:>14.0f} {theirs:>19.0f} {ours / theirs:>5.2f}x "
              f"{agree[b, k]:>11.0%}")
    tag = "cuda" if gpu else f"t{args.threads}"
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"generate-{tag}{'-quick' if args.quick else ''}.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    on_gpu = {}
    if gpu:
        from minillm.backend import xp_for

        on_gpu = dict(device="cuda", gpu=gpu, cupy=xp_for("cuda").__version__)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(dict(config=c, threads=args.threads, blas_threads=blas_threads, repeats=repeats,
                       numpy=np.__version__, **on_gpu,
                       torch=torch.__version__, transformers=transformers.__version__, rows=rows),
                  f, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
