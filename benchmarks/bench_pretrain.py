"""Pretraining-step benchmark: ``minillm pretrain``'s step against transformers' T5 on the same
shape and batch, in the same run, interleaved (A B A B ...).

    python benchmarks/bench_pretrain.py                  # the default `minillm pretrain` shape
    python benchmarks/bench_pretrain.py --repeats 7 --threads 2
    python benchmarks/bench_pretrain.py --quick          # a smaller, faster run
    python benchmarks/bench_pretrain.py --heads 16 --d-kv 8   # the small preset's heads

The shape is ``minillm pretrain``'s default: the ``pretrain`` preset's T5 (as
minillm.workflows.presets has it when this runs; ``--preset``, ``--heads`` and ``--d-kv``
change it), a 4000-id vocabulary, inputs
of 128 tokens (141 raw tokens, 29 target tokens at noise density 0.15 and mean
span 3), 32 examples a step. Both sides take the same steps: a fresh noise mask
per row (minillm.data.span_corruption, the data collator of both), forward,
loss, backward, clipping to norm 1, AdamW. minillm's is the trainer's own
``train_step``; transformers' is T5ForConditionalGeneration with torch's AdamW and
``clip_grad_norm_``. Each side runs in its own subprocess per round, times
``--steps`` steps after two warm-up steps; the parent prints the medians, the
ratio minillm / transformers (below 1: minillm is faster) and tokens per second
(source + target tokens of a step over its time), and writes
benchmarks/results/pretrain.json. This machine is noisy: read the medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

IMPLS = ("minillm", "transformers")


def shape(quick: bool, preset: str | None = None, heads: int | None = None,
          d_kv: int | None = None) -> dict:
    """The benchmark's model and batch: ``minillm pretrain``'s preset's T5 (or a smaller one with
    --quick); ``heads`` / ``d_kv`` replace its num_heads / d_kv (to compare shapes)."""
    from minillm.data.span_corruption import expanded_length
    from minillm.workflows.presets import PRETRAIN_PRESET, get_preset

    model = dict(get_preset("tiny" if quick else (preset or PRETRAIN_PRESET)).model)
    model.update({k: v for k, v in (("num_heads", heads), ("d_kv", d_kv)) if v is not None})
    s = dict(model=model, vocab_size=1000 if quick else 4000, batch=8 if quick else 32,
             input_length=64 if quick else 128, noise_density=0.15, mean_span_length=3.0)
    s["raw_length"], s["target_length"] = expanded_length(s["input_length"], 0.15, 3.0)
    return s


def _raw(s: dict):
    import numpy as np

    rng = np.random.default_rng(1)
    return rng.integers(3, s["vocab_size"] - 100, (s["batch"], s["raw_length"]))  # below the sentinels


def _corrupt(s: dict, raw, step: int):
    import numpy as np

    from minillm.data.span_corruption import corrupt_batch

    rng = np.random.default_rng([step, 7])
    return corrupt_batch(raw, s["noise_density"], s["mean_span_length"], rng, s["vocab_size"] - 1, 1)


def worker_minillm(s: dict, steps: int) -> dict:
    import numpy as np

    import minillm
    from minillm.backend import keep_freed_memory
    from minillm.optim import ScaledAdamW
    from minillm.training.sft import TrainConfig, train_step

    keep_freed_memory()  # as the minillm CLI does
    model = minillm.T5.init(minillm.T5Config(vocab_size=s["vocab_size"], **s["model"]),
                            np.random.default_rng(0))
    config = TrainConfig(steps=10_000, batch_size=s["batch"], lr=1e-3, warmup_steps=0)
    opt = ScaledAdamW.from_config(config)
    raw = _raw(s)
    counter = iter(range(10**9))

    def step():
        t = next(counter)
        return train_step(model, opt, [_corrupt(s, raw, t)], t, config, config.steps)["loss"]

    return _time(step, steps)


def worker_transformers(s: dict, steps: int) -> dict:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=s["vocab_size"], decoder_start_token_id=0, **s["model"])
    model = T5ForConditionalGeneration(cfg).train()  # the default attention (what users get)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    raw = _raw(s)
    counter = iter(range(10**9))

    def step():
        batch = _corrupt(s, raw, next(counter))
        x, y = torch.tensor(batch["input_ids"]), torch.tensor(batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=x, attention_mask=torch.tensor(batch["attention_mask"]), labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    return _time(step, steps)


def _time(step, steps: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    assert loss == loss, "loss is NaN"
    return {"times_ms": [t * 1000 for t in times]}


WORKERS = {"minillm": worker_minillm, "transformers": worker_transformers}


def run_worker(impl: str, s: dict, steps: int, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--worker", impl, "--steps", str(steps), "--shape", json.dumps(s),
           "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(s: dict, times: dict[str, list[float]]) -> dict:
    tokens = s["batch"] * (s["input_length"] + s["target_length"])  # source + target, no padding
    med = {i: statistics.median(t) for i, t in times.items()}
    out = {"shape": s, "tokens_per_step": tokens, "step_ms_median": med, "step_ms_all": times,
           "tokens_per_s": {i: tokens / (ms / 1000) for i, ms in med.items()}}
    if len(med) == 2:
        out["time_ratio_minillm_vs_transformers"] = med["minillm"] / med["transformers"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per process per round")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true", help="the tiny preset's shape, 2 rounds")
    ap.add_argument("--only", nargs="+", choices=IMPLS, default=list(IMPLS))
    ap.add_argument("--preset", default=None, help="the preset's T5 (default: minillm pretrain's)")
    ap.add_argument("--heads", type=int, default=None, help="num_heads instead of the preset's")
    ap.add_argument("--d-kv", type=int, default=None, help="d_kv instead of the preset's")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "pretrain.json"))
    ap.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        if args.worker == "transformers":
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(WORKERS[args.worker](json.loads(args.shape), args.steps)))
        return 0
    s = shape(args.quick, args.preset, args.heads, args.d_kv)
    repeats = min(args.repeats, 2) if args.quick else args.repeats
    times: dict[str, list[float]] = {i: [] for i in args.only}
    for r in range(repeats):
        for impl in args.only:
            times[impl] += run_worker(impl, s, args.steps, args.threads)["times_ms"]
        print(f"round {r + 1}/{repeats}: " + ", ".join(
            f"{i} {statistics.median(times[i]):.0f} ms" for i in args.only), file=sys.stderr)
    res = {**summarise(s, times), "threads": args.threads, "repeats": repeats,
           "date": time.strftime("%Y-%m-%d"), "load_average": os.getloadavg()}
    m = s["model"]
    print(f"\npretraining step, {m['num_heads']} heads x {m['d_kv']}, batch {s['batch']} x "
          f"({s['input_length']} -> {s['target_length']}) "
          f"tokens, vocab {s['vocab_size']}, threads {args.threads}, load average "
          f"{res['load_average'][0]:.1f}")
    for impl, ms in res["step_ms_median"].items():
        print(f"  {impl:<13} {ms:8.0f} ms/step  {res['tokens_per_s'][impl]:8.0f} tokens/s")
    if "time_ratio_minillm_vs_transformers" in res:
        print(f"  minillm / transformers: {res['time_ratio_minillm_vs_transformers']:.2f}x the step time")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
