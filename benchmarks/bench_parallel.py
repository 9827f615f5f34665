"""Data-parallel benchmark: one process x 2 BLAS threads against 2 MPI ranks x 1 thread each.

    python benchmarks/bench_parallel.py                # reference config (bench_train.py's)
    python benchmarks/bench_parallel.py --quick        # a smaller, faster run
    python benchmarks/bench_parallel.py --ranks 2 --repeats 5

Both sides do the same work: a step is two micro-batches of batch/2 sequences
(the reference's 32 sequences of 64 + 64 tokens), forward, backward, one
AdamW update: ``minillm.training.train_step`` with ``--grad-accum 2`` in one
process (OMP_NUM_THREADS=2), and under ``mpiexec -n 2`` (OMP_NUM_THREADS=1) with
one micro-batch per rank and the gradient summed by one Allreduce. Each run
times ``--steps`` steps after two warm-ups; the parent interleaves the runs
(A B A B ...) over ``--repeats`` rounds and reports medians, written as JSON to
benchmarks/results/parallel.json.

Per step it reports: tokens/s (source + target tokens of the global batch);
for the ranks, the gradient Allreduce's seconds split into ``wait`` (a barrier
just before it: the time the faster rank waits for the slower one) and
``transfer`` (the Allreduce itself), their share of the step, and the bytes:
the gradient buffer (P parameters x dtype size) and what a ring allreduce moves
per rank, 2 (N-1)/N of it. The barrier exists only in this benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import QUICK, REFERENCE  # noqa: E402  (the reference config, one place)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(c: dict, steps: int, accum: int) -> dict:
    """Time ``steps`` train_steps on this rank (of ``get_world()``); rank 0 returns the figures."""
    import numpy as np

    import minillm
    from minillm.backend import keep_freed_memory
    from minillm.optim import AdamW
    from minillm.parallel import get_world
    from minillm.training import TrainConfig
    from minillm.training.sft import train_step

    keep_freed_memory()
    world = get_world()
    cfg = minillm.T5Config(**{k: c[k] for k in ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff",
                                                  "num_layers", "num_decoder_layers")},
                           dropout_rate=0.0, feed_forward_proj="relu", tie_word_embeddings=True)
    model = minillm.T5.init(cfg, np.random.default_rng(0))
    opt = AdamW(lr=1e-4)
    n_micro = accum * world.size
    micro_b = c["batch"] // n_micro
    rng = np.random.default_rng(1)
    micro = [{"input_ids": rng.integers(2, c["vocab_size"], (micro_b, c["src_len"])),
              "attention_mask": np.ones((micro_b, c["src_len"]), dtype=np.int64),
              "labels": rng.integers(2, c["vocab_size"], (micro_b, c["tgt_len"]))}
             for _ in range(n_micro)]
    config = TrainConfig(steps=steps + 2, batch_size=micro_b, grad_accum=accum, warmup_steps=0)

    timing = {"wait": 0.0, "transfer": 0.0, "bytes": 0}
    if world.size > 1:
        real = world.allreduce_

        def timed(buf):
            if buf.size < 16:  # the step's loss and error flag: not the gradient
                return real(buf)
            t0 = time.perf_counter()
            world.comm.Barrier()
            t1 = time.perf_counter()
            out = real(buf)
            timing["wait"] += t1 - t0
            timing["transfer"] += time.perf_counter() - t1
            timing["bytes"] = buf.nbytes
            return out

        world.allreduce_ = timed
    for s in range(2):  # warm-up
        train_step(model, opt, micro, s, config, config.steps, world=world)
    timing.update(wait=0.0, transfer=0.0)
    t0 = time.perf_counter()
    for s in range(2, steps + 2):
        out = train_step(model, opt, micro, s, config, config.steps, world=world)
    seconds = (time.perf_counter() - t0) / steps
    n = world.size
    return {"step_s": seconds, "tokens_per_s": out["tokens"] / seconds,
            "allreduce_wait_s": timing["wait"] / steps, "allreduce_transfer_s": timing["transfer"] / steps,
            "buffer_bytes": timing["bytes"], "ring_bytes_per_rank": 2 * (n - 1) / n * timing["bytes"],
            "parameters": model.num_parameters(), "ranks": n}


def launch(c: dict, steps: int, ranks: int, threads: int, mpiexec: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    accum = 2 if ranks == 1 else 1
    cmd = [sys.executable, __file__, "--worker", "--config", json.dumps(c), "--steps", str(steps),
           "--accum", str(accum)]
    if ranks > 1:
        cmd = [mpiexec, "-n", str(ranks), *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "parallel.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--accum", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        res = worker(json.loads(args.config), args.steps, args.accum)
        from minillm.parallel import get_world

        if get_world().is_root:
            print(json.dumps(res))
        return
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = beside if os.path.exists(beside) else "mpiexec"
    c = QUICK if args.quick else REFERENCE
    runs = {"one": [], "ranks": []}
    for _ in range(args.repeats):  # interleaved: the machine's noise falls on both
        runs["one"].append(launch(c, args.steps, 1, args.ranks, mpiexec))
        runs["ranks"].append(launch(c, args.steps, args.ranks, 1, mpiexec))

    def med(side, key):
        return statistics.median(r[key] for r in runs[side])

    ranks = {k: med("ranks", k) for k in runs["ranks"][0]}
    one = {k: med("one", k) for k in ("step_s", "tokens_per_s", "parameters")}
    ranks["allreduce_share"] = (ranks["allreduce_wait_s"] + ranks["allreduce_transfer_s"]) / ranks["step_s"]
    ranks["transfer_share"] = ranks["allreduce_transfer_s"] / ranks["step_s"]
    ranks["transfer_bytes_per_s"] = ranks["ring_bytes_per_rank"] / max(ranks["allreduce_transfer_s"], 1e-12)
    results = {"config": c, "steps": args.steps, "repeats": args.repeats,
               "one_process": {**one, "threads": args.ranks, "grad_accum": 2},
               f"{args.ranks}_ranks": {**ranks, "threads_per_rank": 1},
               "speedup": ranks["tokens_per_s"] / one["tokens_per_s"], "runs": runs}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(f"one process x {args.ranks} threads: {one['tokens_per_s']:,.0f} tokens/s "
          f"({one['step_s']:.3f} s/step)")
    print(f"{args.ranks} ranks x 1 thread:   {ranks['tokens_per_s']:,.0f} tokens/s "
          f"({ranks['step_s']:.3f} s/step); speedup {results['speedup']:.2f}x")
    print(f"allreduce: {ranks['buffer_bytes'] / 1e6:.1f} MB buffer, "
          f"{ranks['ring_bytes_per_rank'] / 1e6:.1f} MB moved per rank (ring); "
          f"wait {ranks['allreduce_wait_s'] * 1e3:.1f} ms + transfer "
          f"{ranks['allreduce_transfer_s'] * 1e3:.1f} ms = {100 * ranks['allreduce_share']:.1f}% of the "
          f"step; {ranks['transfer_bytes_per_s'] / 1e9:.2f} GB/s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
