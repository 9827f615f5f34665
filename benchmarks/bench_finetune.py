"""Fine-tuning benchmark on real T5 shapes: minillm vs transformers + torch.optim.AdamW,
training step, greedy generation and peak memory, interleaved in one run.

    python benchmarks/bench_finetune.py                          # t5-small, flan-t5-small, flan-t5-base
    python benchmarks/bench_finetune.py --quick                  # a tiny shape: a smoke test
    python benchmarks/bench_finetune.py --shapes t5-small --repeats 3 --steps 3
    python benchmarks/bench_finetune.py --contention --recompute # + a busy core, + minillm recompute

Shapes (vocab 32128, d_kv 64, float32): t5-small (d_model 512, 8 heads, d_ff 2048,
6+6 layers, relu, tied, 60M parameters), flan-t5-small (512, 6 heads, 1024, 8+8,
gated-gelu, untied, 77M) and flan-t5-base (768, 12 heads, 2048, 12+12, gated-gelu,
untied, 248M). Each shape's random weights are drawn once by transformers
(``torch.manual_seed(0)``) and saved with ``save_pretrained`` in a temporary folder
that both sides load (``minillm.from_pretrained``, transformers' ``from_pretrained``).

What is measured, each in a subprocess of its own (so its peak RSS is its own),
with ``--threads`` threads on both sides (torch.set_num_threads; the BLAS through
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS set in the child's
environment before NumPy loads):

- step: one fine-tuning step on a batch of 8, 128 source and 64 target tokens
  (random ids, fixed seed, the same on both sides), dropout 0.1 (training mode).
  minillm: the trainer's own step, ``minillm.training.sft.train_step`` (the loss
  and gradient, clipping to norm 1, the ScaledAdamW update and its finiteness check:
  what ``minillm train --init`` does), set up as the CLI sets up a process:
  ``keep_freed_memory()`` and ``--threads`` BLAS threads, or with
  ``--minillm-threads auto`` threads that follow the cores other processes leave
  idle (``follow_idle_cores``, at most ``--threads``, with ``adapt_threads()``
  before each step as the training loop calls it: ``minillm train --threads auto``).
  transformers: ``model(input_ids, attention_mask, labels).loss``,
  ``backward()``, ``clip_grad_norm_(1.0)``, ``torch.optim.AdamW.step()`` (the same
  lr, betas, eps and weight decay, the norm gains undecayed as minillm does),
  ``zero_grad(set_to_none=True)``. Two warm-up steps, then ``--steps`` timed steps.
  The peak RSS quoted is this training process's (VmHWM of /proc/self/status; not
  ``ru_maxrss``, which Linux carries into a child from its parent at fork).
- generate: greedy decoding of exactly 32 new tokens (min_new_tokens =
  max_new_tokens = 32) from 128-token prompts, KV cache on, eval mode, at batch 1
  and 8: one warm-up call, then ``--gen-calls`` timed calls each; tokens/s =
  batch * 32 / the call's wall time (encoder included). A process of its own.
- breakdown (untimed, its own processes, ``--no-breakdown`` skips it): minillm's
  memory by tracemalloc (NumPy registers its buffers with it) and nbytes sums:
  parameters, AdamW moments, gradients, and what else is alive at the traced peak
  of a real train_step (above what it started with): the activations not yet
  freed and the temporaries. The backward frees each block's activations once its
  backward is done while the gradients grow, so the two share the peak; the
  activations right after the forward are shown beside it, not summed. "other":
  the timed training process's peak RSS minus the parts (interpreter, libraries,
  BLAS buffers, allocator slack). transformers: parameters, gradients and
  optimizer state by nbytes, and the rest of its peak RSS as "other"; beside it,
  not summed, its activations: the distinct storages autograd saves for backward
  (parameters excluded; ``saved_tensors_hooks``).

The parent runs ``--repeats`` rounds; each round runs every measurement once,
alternating which implementation goes first, so slow drifts of the machine fall
on both. ``--contention`` adds, in every round, the same measurements again
with a single-threaded busy loop pinned to one core (started before, killed
after), and reports each ratio under contention over its quiet value.

How to read it: the medians (step ms over all timed steps of all rounds;
generation over all timed calls; peak RSS over rounds) and the ratios, all
minillm / transformers: step time (lower is better; target <= 0.6), generation
speed (higher is better; targets >= 2.5 at batch 1, >= 1.5 at batch 8), peak RSS
(lower is better; target <= 0.6, <= 0.45 with ``--recompute``), and for
contention the degradation of each ratio (>1 is worse; target <= 1.2). On a
shared machine read the ratios of the interleaved medians, not absolute figures.
Writes every per-round figure and the medians as JSON to
benchmarks/results/finetune.json (``--out``; finetune-quick.json with --quick).

``--recompute`` adds a minillm training variant with activation recomputation
(``train_step(..., recompute=True)``, what ``minillm train --recompute`` runs).

transformers 5 ties T5's LM head to the embedding whatever the config says (its
T5Config sets tie_word_embeddings = True and keeps the flag only as the output
scale), so the flan shapes run with a tied head on both sides: 60.5M and 222.9M
parameters rather than FLAN-T5's 77M and 248M (an untied head adds 16.4M and
24.7M to both, and its gradient and moments).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

COMMON = dict(vocab_size=32128, d_kv=64)
SHAPES = {
    "t5-small": dict(COMMON, d_model=512, num_heads=8, d_ff=2048, num_layers=6, num_decoder_layers=6,
                     feed_forward_proj="relu", tie_word_embeddings=True),
    "flan-t5-small": dict(COMMON, d_model=512, num_heads=6, d_ff=1024, num_layers=8, num_decoder_layers=8,
                          feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "flan-t5-base": dict(COMMON, d_model=768, num_heads=12, d_ff=2048, num_layers=12,
                         num_decoder_layers=12, feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}
QUICK_SHAPE = {"tiny": dict(vocab_size=2000, d_kv=16, d_model=64, num_heads=4, d_ff=128, num_layers=2,
                            num_decoder_layers=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False)}
WORKLOAD = dict(batch=8, src_len=128, tgt_len=64, gen_batches=[1, 8], prompt_len=128, new_tokens=32,
                dropout=0.1)
QUICK_WORKLOAD = dict(WORKLOAD, batch=4, src_len=32, tgt_len=16, gen_batches=[1, 4], prompt_len=32,
                      new_tokens=8)
# the optimizer of both sides (TrainConfig's defaults but a small constant rate, as for fine-tuning)
OPTIM = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, max_grad_norm=1.0)
WARMUP = 2
TARGETS = dict(step=0.6, gen_b1=2.5, gen_bn=1.5, rss=0.6, rss_recompute=0.45, contention=1.2)


# ---------------------------------------------------------------- helpers for the workers


def _rss_mb() -> dict:
    """This process's current and peak resident set (VmRSS, VmHWM) in MB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) / 1024  # kB
    return {"rss_mb": out.get("VmRSS"), "hwm_mb": out.get("VmHWM")}


def _peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM, the high-water mark of its own address space.

    Not ``ru_maxrss``: Linux carries that over fork and exec, so a child's starts at its
    parent's RSS when it was forked (the parent here holds torch: about 240 MB).
    """
    return _rss_mb()["hwm_mb"]


def _batch(w: dict, vocab: int, seed: int = 1):
    """input_ids (B, S), attention_mask (B, S), labels (B, T): int64, as the trainer's collate builds."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.integers(2, vocab, (w["batch"], w["src_len"]))
    x[:, -1] = 1  # </s>
    y = rng.integers(2, vocab, (w["batch"], w["tgt_len"]))
    y[:, -1] = 1
    return x, np.ones_like(x), y


def _prompts(w: dict, vocab: int, batch: int, seed: int = 2):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(2, vocab, (batch, w["prompt_len"]))
    ids[:, -1] = 1  # </s>
    return ids, np.ones_like(ids)


def _time_steps(step, steps: int) -> dict:
    losses = [step(i) for i in range(WARMUP)]  # first touch, lazy initialisation, the moments
    times = []
    for i in range(WARMUP, WARMUP + steps):
        t0 = time.perf_counter()
        losses.append(step(i))
        times.append(time.perf_counter() - t0)
    if not all(v == v for v in losses):
        raise RuntimeError(f"a loss is NaN: {losses}")
    return {"times_ms": [t * 1000 for t in times], "losses": losses}


def _minillm_trainer(folder: str, w: dict, recompute: bool):
    """(model, step(i) -> loss, optimizer): minillm's trainer step on the benchmark batch."""
    from minillm.model import T5
    from minillm.optim import ScaledAdamW
    from minillm.training import sft

    model = T5.from_pretrained(folder, dtype="float32")
    total = WARMUP + 10**6
    cfg = sft.TrainConfig(steps=total, batch_size=w["batch"], lr=OPTIM["lr"], warmup_steps=0,
                          schedule="constant", weight_decay=OPTIM["weight_decay"],
                          betas=OPTIM["betas"], eps=OPTIM["eps"], max_grad_norm=OPTIM["max_grad_norm"],
                          seed=0)
    opt = ScaledAdamW.from_config(cfg)
    x, m, y = _batch(w, model.config.vocab_size)
    batch = {"input_ids": x, "attention_mask": m, "labels": y}

    def step(i):  # what `minillm train --init [--recompute]` runs each step
        return sft.train_step(model, opt, [batch], i, cfg, total, recompute=recompute)["loss"]
    return model, step, opt

def _transformers_trainer(folder: str, w: dict):
    """(model, step(i) -> loss, optimizer, batch tensors): transformers' fine-tuning step."""
    import torch
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    model.train()
    named = list(model.named_parameters())  # tied weights once
    groups = [{"params": [p for n, p in named if "layer_norm" not in n],
               "weight_decay": OPTIM["weight_decay"]},
              {"params": [p for n, p in named if "layer_norm" in n], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=OPTIM["lr"], betas=OPTIM["betas"], eps=OPTIM["eps"])
    x, m, y = (torch.from_numpy(a) for a in _batch(w, model.config.vocab_size))
    params = [p for _, p in named]

    def step(i):
        loss = model(input_ids=x, attention_mask=m, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, OPTIM["max_grad_norm"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return model, step, opt, (x, m, y)


# ---------------------------------------------------------------- the workers


def worker_build(spec: dict) -> dict:
    """The shape's random weights, drawn by transformers, saved to spec["folder"] (safetensors)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(**spec["shape"], dropout_rate=spec["workload"]["dropout"], decoder_start_token_id=0,
                   pad_token_id=0, eos_token_id=1)
    model = T5ForConditionalGeneration(cfg)
    model.save_pretrained(spec["folder"])  # safetensors
    return {"parameters": sum(p.numel() for p in model.parameters())}


def _as_the_cli(spec: dict):
    """The process set-up the minillm CLI does: keep freed memory, and --threads BLAS threads
    (``--minillm-threads auto``: follow the idle cores, at most --threads, as ``--threads auto``
    does). Returns adapt_threads (call it between steps, as the training loop does; generation
    calls it itself)."""
    from minillm.backend import keep_freed_memory
    from minillm.blas import adapt_threads, follow_idle_cores, set_blas_threads

    keep_freed_memory()
    set_blas_threads(spec["threads"])
    if spec.get("minillm_threads") == "auto":
        follow_idle_cores(cores=spec["threads"])
    return adapt_threads


def worker_step_minillm(spec: dict) -> dict:
    adapt = _as_the_cli(spec)
    w = spec["workload"]
    model, step, _ = _minillm_trainer(spec["folder"], w, spec.get("recompute", False))
    inner = step

    def step(i):  # noqa: F811 - the trainer's step, with the loop's thread check before it
        adapt()
        return inner(i)
    loaded = _rss_mb()["rss_mb"]
    x, m, y = _batch(w, model.config.vocab_size)
    eval_loss = model.loss(x, y, m)  # no dropout: the two implementations agree on it
    res = _time_steps(step, spec["steps"])
    return dict(res, eval_loss=eval_loss, peak_rss_mb=_peak_rss_mb(), rss_after_load_mb=loaded,
                parameters=model.num_parameters())


def worker_step_transformers(spec: dict) -> dict:
    import torch

    model, step, _, (x, m, y) = _transformers_trainer(spec["folder"], spec["workload"])
    loaded = _rss_mb()["rss_mb"]
    model.eval()
    with torch.no_grad():
        eval_loss = model(input_ids=x, attention_mask=m, labels=y).loss.item()
    model.train()
    res = _time_steps(step, spec["steps"])
    return dict(res, eval_loss=eval_loss, peak_rss_mb=_peak_rss_mb(), rss_after_load_mb=loaded,
                attn_implementation=model.config._attn_implementation,
                parameters=sum(p.numel() for p in model.parameters()))


def _time_generate(gen, w: dict, vocab: int, calls: int) -> dict:
    out = {}
    for b in w["gen_batches"]:
        ids, mask = _prompts(w, vocab, b)
        tokens = gen(ids, mask)  # warm-up
        if tokens.shape != (b, 1 + w["new_tokens"]):
            raise RuntimeError(f"batch {b}: generated {tokens.shape}, expected {(b, 1 + w['new_tokens'])}")
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            gen(ids, mask)
            times.append(time.perf_counter() - t0)
        out[str(b)] = {"times_s": times, "tokens": tokens.tolist()}
    return out


def worker_gen_minillm(spec: dict) -> dict:
    from minillm.generation import generate
    from minillm.model import T5

    _as_the_cli(spec)
    w = spec["workload"]
    model = T5.from_pretrained(spec["folder"], dtype="float32")
    kw = dict(max_new_tokens=w["new_tokens"], min_new_tokens=w["new_tokens"], use_cache=True)
    res = _time_generate(lambda ids, mask: generate(model, ids, mask, **kw), w, model.config.vocab_size,
                         spec["gen_calls"])
    return {"batches": res, "peak_rss_mb": _peak_rss_mb()}


def worker_gen_transformers(spec: dict) -> dict:
    import torch
    from transformers import T5ForConditionalGeneration

    w = spec["workload"]
    model = T5ForConditionalGeneration.from_pretrained(spec["folder"], dtype=torch.float32)
    model.eval()
    kw = dict(max_new_tokens=w["new_tokens"], min_new_tokens=w["new_tokens"], do_sample=False, num_beams=1,
              use_cache=True)

    def gen(ids, mask):
        with torch.inference_mode():
            return model.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), **kw).numpy()

    res = _time_generate(gen, w, model.config.vocab_size, spec["gen_calls"])
    return {"batches": res, "peak_rss_mb": _peak_rss_mb(),
            "attn_implementation": model.config._attn_implementation}


def _nbytes(arrays) -> int:
    return int(sum(a.nbytes for a in arrays))


def worker_mem_minillm(spec: dict) -> dict:
    """minillm's training memory, measured: nbytes sums and tracemalloc (untimed).

    activations: what the forward (both stacks, dropout on, as loss_and_grads runs it)
    leaves allocated for the backward; step_peak: the traced peak of a real trainer
    step above its start (parameters and moments allocated). The backward frees each
    block's activations once used while the gradients grow, so the peak holds the
    gradients plus what is still alive then: activations and temporaries together.
    """
    import tracemalloc

    from minillm import seeds
    from minillm.backend import keep_freed_memory

    keep_freed_memory()
    w, recompute = spec["workload"], spec.get("recompute", False)
    model, step, opt = _minillm_trainer(spec["folder"], w, recompute)
    params = _nbytes(model.params.values())
    step(0)  # the first step allocates the AdamW moments
    moments = _nbytes(opt.state_dict()["arrays"].values())
    out = {"parameters": params, "moments": moments}
    x, m, y = _batch(w, model.config.vocab_size)
    _, grads, _ = _loss_and_grads(model, x, m, y, recompute)
    out["gradients"] = _nbytes(grads.values())
    del grads
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    h, cache = model.hidden_forward(x, model.shift_right(y), m, None, seeds.generator(0, "dropout", 1, 0),
                                    recompute=recompute)
    out["activations"] = tracemalloc.get_traced_memory()[0] - base
    del h, cache
    # the real trainer step, from its steady state (parameters and moments allocated)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    step(1)
    out["step_peak"] = tracemalloc.get_traced_memory()[1] - base
    out["tracemalloc_overhead"] = tracemalloc.get_tracemalloc_memory()
    tracemalloc.stop()
    out["activations_and_temporaries_at_peak"] = out["step_peak"] - out["gradients"]
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _loss_and_grads(model, x, m, y, recompute: bool):
    from minillm.training import sft

    batch = {"input_ids": x, "attention_mask": m, "labels": y}
    return sft.sft_loss_and_grads(model, [batch], None, recompute=recompute)


def worker_mem_transformers(spec: dict) -> dict:
    """transformers' training memory: nbytes of parameters, gradients, AdamW state; saved activations."""
    import torch

    model, step, opt, (x, m, y) = _transformers_trainer(spec["folder"], spec["workload"])
    params = list(model.parameters())
    step(0)  # allocates the optimizer state
    out = {"parameters": sum(p.nbytes for p in params),
           "moments": sum(t.nbytes for s in opt.state.values() for t in s.values() if torch.is_tensor(t))}
    param_storages = {p.untyped_storage().data_ptr() for p in params}
    saved: dict = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in param_storages:
            saved[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=x, attention_mask=m, labels=y).loss
    out["activations"] = int(sum(saved.values()))
    loss.backward()
    out["gradients"] = sum(p.grad.nbytes for p in params if p.grad is not None)
    opt.zero_grad(set_to_none=True)
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


WORKERS = {"build": worker_build, "step-minillm": worker_step_minillm,
           "step-transformers": worker_step_transformers, "gen-minillm": worker_gen_minillm,
           "gen-transformers": worker_gen_transformers, "mem-minillm": worker_mem_minillm,
           "mem-transformers": worker_mem_transformers}


# ---------------------------------------------------------------- the parent


def _thread_env(threads: int, minillm: bool = False) -> dict:
    """The child's environment: the thread counts set for torch and the BLAS. A minillm worker
    instead sets its BLAS threads itself, as the CLI does (``_as_the_cli``), so that the count
    can follow the idle cores (an environment variable would pin it)."""
    n = str(threads)
    env = dict(os.environ, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n)
    if minillm:
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(k)
    return env


def run_worker(name: str, spec: dict, threads: int, label: str = "") -> dict:
    """Run one worker in a fresh process; its JSON result. Says on stderr how long it took."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--spec", json.dumps(spec),
           "--threads", str(threads)]
    t0 = time.perf_counter()
    spec = dict(spec, threads=threads)
    cmd[cmd.index("--spec") + 1] = json.dumps(spec)
    env = _thread_env(threads, minillm=name.endswith("minillm"))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} worker failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    print(f"  {label}{name}{' (recompute)' if spec.get('recompute') else ''}: "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _exit_on_sigterm(signum, frame):
    """SIGTERM (``timeout``, kill) as an exception: subprocess.run then kills the running worker,
    and the busy loop's ``with`` kills it, instead of leaving them running."""
    raise SystemExit(128 + signum)


SPIN = """
import os
cpus = sorted(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpus[-1]})
while True:
    pass
"""


class BusyCore:
    """A single-threaded pure-Python busy loop pinned to the last CPU, for the length of a ``with``."""

    def __enter__(self):
        env = dict(_thread_env(1))
        self.proc = subprocess.Popen([sys.executable, "-c", SPIN], env=env)
        time.sleep(0.3)  # running before the first measurement
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
        return False


def _median(xs):
    return statistics.median(xs) if xs else None


def summarise(rounds: list, w: dict, recompute: bool) -> dict:
    """Medians over the rounds of one condition and the minillm / transformers ratios."""
    steps = {"minillm": "step-minillm", "transformers": "step-transformers"}
    if recompute:
        steps["minillm-recompute"] = "step-minillm-recompute"
    s: dict = {"step_ms": {}, "peak_rss_mb": {}, "gen_tokens_per_s": {}, "gen_peak_rss_mb": {}}
    for impl, job in steps.items():
        s["step_ms"][impl] = _median([t for r in rounds for t in r[job]["times_ms"]])
        s["peak_rss_mb"][impl] = _median([r[job]["peak_rss_mb"] for r in rounds])
    for impl in ("minillm", "transformers"):
        job = f"gen-{impl}"
        s["gen_tokens_per_s"][impl] = {
            str(b): b * w["new_tokens"] / _median([t for r in rounds
                                                   for t in r[job]["batches"][str(b)]["times_s"]])
            for b in w["gen_batches"]}
        s["gen_peak_rss_mb"][impl] = _median([r[job]["peak_rss_mb"] for r in rounds])
    ref_ms, ref_rss = s["step_ms"]["transformers"], s["peak_rss_mb"]["transformers"]
    s["ratios"] = {"step_time": s["step_ms"]["minillm"] / ref_ms,
                   "peak_rss": s["peak_rss_mb"]["minillm"] / ref_rss,
                   **{f"gen_speed_b{b}": s["gen_tokens_per_s"]["minillm"][str(b)]
                      / s["gen_tokens_per_s"]["transformers"][str(b)] for b in w["gen_batches"]},
                   "gen_peak_rss": s["gen_peak_rss_mb"]["minillm"] / s["gen_peak_rss_mb"]["transformers"]}
    if recompute:
        s["ratios"]["step_time_recompute"] = s["step_ms"]["minillm-recompute"] / ref_ms
        s["ratios"]["peak_rss_recompute"] = s["peak_rss_mb"]["minillm-recompute"] / ref_rss
    # do both decode the same tokens? (random weights in float32: a near-tie can flip a token)
    first = rounds[0]
    s["gen_same_tokens"] = {}
    for b in w["gen_batches"]:
        a = first["gen-minillm"]["batches"][str(b)]["tokens"]
        h = first["gen-transformers"]["batches"][str(b)]["tokens"]
        same = [x == y for ra, rh in zip(a, h, strict=True) for x, y in zip(ra, rh, strict=True)]
        s["gen_same_tokens"][str(b)] = sum(same) / len(same)
    s["eval_loss"] = {impl: first[job]["eval_loss"] for impl, job in steps.items()}
    return s


def degradation(quiet: dict, busy: dict) -> dict:
    """Each ratio under contention against its quiet value, oriented so that > 1 is worse."""
    out = {}
    for k, q in quiet["ratios"].items():
        b = busy["ratios"][k]
        out[k] = q / b if k.startswith("gen_speed") else b / q
    return out


def breakdown_mb(mem: dict, timed_peak_rss_mb: float) -> dict:
    """The measured parts in MB, and "other": the timed training process's peak RSS minus them."""
    keys = ["parameters", "moments", "gradients", "activations_and_temporaries_at_peak"]
    parts = {k: mem[k] / 2**20 for k in keys if k in mem}
    parts["other"] = timed_peak_rss_mb - sum(parts.values())
    if "activations" in mem:  # not a part of the sum: the backward frees them as the gradients grow
        parts["(activations after the forward)"] = mem["activations"] / 2**20
    return parts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    ap.add_argument("--repeats", type=int, default=None,
                    help="interleaved rounds (default 3; 2 with --quick)")
    ap.add_argument("--steps", type=int, default=3,
                    help="timed training steps per process (after 2 warm-up)")
    ap.add_argument("--gen-calls", type=int, default=2,
                    help="timed generate calls per batch size per process")
    ap.add_argument("--threads", type=int, default=2, help="torch threads and BLAS threads of every worker")
    ap.add_argument("--quick", action="store_true", help="a tiny shape and workload: a smoke test")
    ap.add_argument("--recompute", action="store_true",
                    help="also time minillm with activation recomputation (recompute=True)")
    ap.add_argument("--contention", action="store_true",
                    help="also measure every round with a busy loop pinned to one core")
    ap.add_argument("--minillm-threads", choices=("fixed", "auto"), default="fixed",
                    help="minillm's BLAS threads: --threads (the CLI's default), or auto: following the "
                    "idle cores, at most --threads, as `minillm train --threads auto` (default: fixed)")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the (untimed) memory breakdown")
    ap.add_argument("--out", default=None,
                    help="JSON file (default benchmarks/results/finetune.json; "
                    "finetune-quick.json with --quick)")
    ap.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        if args.worker.endswith("transformers") or args.worker == "build":
            import torch
            import transformers

            transformers.logging.set_verbosity_error()
            torch.set_num_threads(args.threads)
        print(json.dumps(WORKERS[args.worker](json.loads(args.spec))))
        return 0

    if args.quick:
        shapes, w = dict(QUICK_SHAPE), dict(QUICK_WORKLOAD)
    else:
        names = [s.strip() for s in args.shapes.split(",") if s.strip()]
        unknown = [s for s in names if s not in SHAPES]
        if unknown or not names:
            ap.error(f"--shapes: unknown {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(SHAPES)}")
        shapes, w = {s: SHAPES[s] for s in names}, dict(WORKLOAD)
    repeats = args.repeats or (2 if args.quick else 3)
    conditions = ["quiet", "busy"] if args.contention else ["quiet"]
    jobs = ["step-minillm", "step-transformers", "gen-minillm", "gen-transformers"]
    if args.recompute:
        jobs.insert(2, "step-minillm-recompute")

    import numpy as np
    import torch
    import transformers

    import minillm

    results = {"workload": w, "optim": OPTIM, "threads": args.threads, "repeats": repeats,
               "steps": args.steps, "warmup_steps": WARMUP, "gen_calls": args.gen_calls,
               "contention": args.contention, "recompute": args.recompute,
               "minillm_threads": args.minillm_threads, "targets": TARGETS,
               "cpus": os.cpu_count(), "numpy": np.__version__, "torch": torch.__version__,
               "transformers": transformers.__version__, "minillm": getattr(minillm, "__version__", None),
               "shapes": {}}
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"finetune{'-quick' if args.quick else ''}.json")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in shapes.items():
            folder = os.path.join(tmp, name)
            base = {"folder": folder, "workload": w, "steps": args.steps, "gen_calls": args.gen_calls,
                    "minillm_threads": args.minillm_threads}
            tag = f"[{name}] "
            built = run_worker("build", dict(base, shape=shape), args.threads, tag)
            entry: dict = {"shape": shape, "parameters": built["parameters"]}
            print(f"[{name}] {built['parameters'] / 1e6:.1f}M parameters", file=sys.stderr)
            if not args.no_breakdown:
                mem = {"minillm": run_worker("mem-minillm", base, args.threads, tag),
                       "transformers": run_worker("mem-transformers", base, args.threads, tag)}
                if args.recompute:
                    mem["minillm-recompute"] = run_worker("mem-minillm", dict(base, recompute=True),
                                                          args.threads, tag)
                entry["memory_raw"] = mem
            raw: dict = {c: [] for c in conditions}
            for r in range(repeats):
                order = jobs if r % 2 == 0 else jobs[::-1]
                for cond in conditions:
                    rnd = {}
                    with BusyCore() if cond == "busy" else contextlib.nullcontext():
                        for job in order:
                            spec = dict(base, recompute=job.endswith("recompute"))
                            rnd[job] = run_worker(job.removesuffix("-recompute"), spec, args.threads,
                                                  f"{tag}round {r + 1} {cond}: ")
                    raw[cond].append(rnd)
                    print(f"[{name}] round {r + 1}/{repeats} {cond}: step "
                          f"{statistics.median(rnd['step-minillm']['times_ms']):.0f} ms minillm, "
                          f"{statistics.median(rnd['step-transformers']['times_ms']):.0f} ms transformers "
                          f"({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
            entry["rounds"] = raw
            entry["summary"] = {c: summarise(raw[c], w, args.recompute) for c in conditions}
            if args.contention:
                entry["contention_degradation"] = degradation(entry["summary"]["quiet"],
                                                              entry["summary"]["busy"])
            if not args.no_breakdown:
                q = entry["summary"]["quiet"]["peak_rss_mb"]
                entry["memory_mb"] = {impl: breakdown_mb(m, q[impl]) for impl, m in mem.items()}
            results["shapes"][name] = entry
            results["wall_s"] = time.perf_counter() - t_start
            write_json(out, results)  # after each shape: a long run that stops keeps what it measured
    report(results)
    print(f"wrote {out} ({results['wall_s']:.0f} s)")
    return 0


def write_json(path: str, results: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    os.replace(path + ".tmp", path)


def report(results: dict) -> None:
    w, t = results["workload"], TARGETS
    bs = w["gen_batches"]
    print(f"\nfine-tune step: batch {w['batch']}, {w['src_len']}+{w['tgt_len']} tokens, "
          f"dropout {w['dropout']}; generation: {w['prompt_len']}-token prompts, "
          f"{w['new_tokens']} new tokens; threads {results['threads']}; medians of "
          f"{results['repeats']} rounds x {results['steps']} steps / {results['gen_calls']} calls; "
          "ratios minillm / transformers")
    for name, e in results["shapes"].items():
        for cond, s in e["summary"].items():
            ms, rss, gen, r = s["step_ms"], s["peak_rss_mb"], s["gen_tokens_per_s"], s["ratios"]
            print(f"\n{name} ({e['parameters'] / 1e6:.1f}M parameters), {cond}")
            print(f"  {'':<22} {'minillm':>10} {'transformers':>13} {'ratio':>7}  target")
            print(f"  {'step ms':<22} {ms['minillm']:>10.0f} {ms['transformers']:>13.0f} "
                  f"{r['step_time']:>6.2f}x  <= {t['step']}")
            if "minillm-recompute" in ms:
                print(f"  {'step ms (recompute)':<22} {ms['minillm-recompute']:>10.0f} {'':>13} "
                      f"{r['step_time_recompute']:>6.2f}x  <= {t['step']}")
            for i, b in enumerate(bs):
                key = str(b)
                print(f"  {f'generate B{b} tok/s':<22} {gen['minillm'][key]:>10.1f} "
                      f"{gen['transformers'][key]:>13.1f} {r[f'gen_speed_b{b}']:>6.2f}x  >= "
                      f"{t['gen_b1'] if i == 0 else t['gen_bn']}  "
                      f"(same tokens {s['gen_same_tokens'][key]:.0%})")
            print(f"  {'peak RSS MB (train)':<22} {rss['minillm']:>10.0f} {rss['transformers']:>13.0f} "
                  f"{r['peak_rss']:>6.2f}x  <= {t['rss']}")
            if "minillm-recompute" in rss:
                print(f"  {'peak RSS MB (recomp.)':<22} {rss['minillm-recompute']:>10.0f} {'':>13} "
                      f"{r['peak_rss_recompute']:>6.2f}x  <= {t['rss_recompute']}")
            g = s["gen_peak_rss_mb"]
            print(f"  {'peak RSS MB (generate)':<22} {g['minillm']:>10.0f} {g['transformers']:>13.0f} "
                  f"{r['gen_peak_rss']:>6.2f}x")
            print("  loss before training, no dropout: "
                  + ", ".join(f"{k} {v:.5f}" for k, v in s["eval_loss"].items()))
        if "contention_degradation" in e:
            print(f"  contention (busy ratio vs quiet, > 1 worse; target <= {t['contention']}): " + ", ".join(
                f"{k} {v:.2f}x" for k, v in e["contention_degradation"].items()))
        if "memory_mb" in e:
            print("  memory breakdown MB (measured; 'other' = the timed training process's peak RSS "
                  "minus the parts)")
            for impl, parts in e["memory_mb"].items():
                print(f"    {impl:<18} " + ", ".join(f"{k} {v:.0f}" for k, v in parts.items()))


if __name__ == "__main__":
    sys.exit(main())
