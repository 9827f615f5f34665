"""REINFORCE lifts a weak model: held-out reward before and after, with the KL to where it started.

    python examples/rl_experiment.py                        # a few minutes on 2 CPU cores
    python examples/rl_experiment.py --sft runs/my_sft      # start from your own SFT checkpoint
    python examples/rl_experiment.py --algo grpo --num-iterations 4
    python examples/rl_experiment.py --compare --seconds 300
                                    # RLOO mu=1, RLOO mu=4 and GRPO at equal training time

1. SFT (skipped with --sft): the "small" preset's T5 is trained on one built-in task
   for only --sft-steps steps, so it is weak: it gets some held-out prompts right.
2. REINFORCE with that task's verifier as the reward: the ``minillm rl`` workflow,

       rl(RLSettings(dir="OUT/sft", out="OUT/rl", tasks=TASK, reward="verify", k=8, ...))

   which is what ``minillm rl OUT/sft --out OUT/rl --tasks TASK --reward verify --k 8 ...`` runs.

   For each prompt, k sampled outputs; each is scored 0 or 1 by the verifier, and
   the ones that beat the mean of the other k-1 samples are made more likely (RLOO);
   a KL penalty to the SFT model keeps the policy near it. ``--algo grpo``: TRL's
   GRPO (the advantage divided by the group's std, the KL per token in the loss);
   ``--num-iterations mu``: mu clipped updates on each batch of samples.
3. The held-out figures, before and after: mean reward of greedy decoding (what a
   user of the model gets), of one sample per prompt, and KL(pi || pi_ref) in nats.

``--compare``: from the same SFT model, the three runs of ``--runs`` (default RLOO
mu=1, RLOO mu=4, GRPO), each for ``--seconds`` of training (the sum of its steps'
seconds: sampling, scoring and updates; evaluations not counted). Each run is cut
into chunks of ``--stop-after`` and ``--resume`` (bit for bit the uninterrupted run)
with a held-out evaluation at each chunk's end, sized from a 3-step calibration run
so that about ``--evals`` of them fall in the budget; the last chunk is sized from
the run's mean step time and ends the run (``--steps``) with its final evaluation.
It prints a table and writes ``OUT/reward_vs_seconds.svg`` (held-out greedy reward
and KL against seconds) and ``OUT/curves.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time

# The model's matrices are small: BLAS threads cost more than they save, notably in
# token-by-token sampling. Set before NumPy loads (export the variable to override).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import minillm  # noqa: E402
from minillm import seeds  # noqa: E402
from minillm.backend import keep_freed_memory  # noqa: E402
from minillm.data import encode_examples  # noqa: E402
from minillm.data.tasks import TASKS, builtin_dataset  # noqa: E402
from minillm.data.tokenizer import Tokenizer  # noqa: E402
from minillm.parallel import quiet  # noqa: E402
from minillm.plots.svg import COLORS, Axis, Series, line_chart  # noqa: E402
from minillm.runfolder.metrics import read_metrics  # noqa: E402
from minillm.training import TrainConfig, fit  # noqa: E402
from minillm.workflows import RLSettings, rl  # noqa: E402
from minillm.workflows.presets import PRESETS  # noqa: E402

# --compare's runs: name -> the RLSettings fields that differ between them
RUNS = {
    "rloo1": {"algo": "rloo", "num_iterations": 1},
    "rloo4": {"algo": "rloo", "num_iterations": 4},
    "grpo": {"algo": "grpo", "num_iterations": 1},
    "grpo4": {"algo": "grpo", "num_iterations": 4},
}
LABELS = {"rloo1": "RLOO mu=1", "rloo4": "RLOO mu=4", "grpo": "GRPO mu=1", "grpo4": "GRPO mu=4"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sort_words", choices=list(TASKS), help="the built-in task")
    p.add_argument("--sft", default=None, help="start from this SFT model folder (skips step 1)")
    p.add_argument("--sft-steps", type=int, default=60, help="SFT steps of the weak model")
    p.add_argument("--steps", type=int, default=150, help="REINFORCE steps")
    p.add_argument("--k", type=int, default=8, help="samples per prompt")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per REINFORCE step")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--kl-coef", type=float, default=0.1, help="rloo: the KL in the reward")
    p.add_argument("--algo", choices=("rloo", "grpo"), default="rloo")
    p.add_argument("--num-iterations", type=int, default=1, help="updates per batch of samples")
    p.add_argument("--beta", type=float, default=0.04, help="grpo: the per-token KL in the loss")
    p.add_argument("--epsilon", type=float, default=0.2, help="the ratio's clip range")
    p.add_argument("--n-eval", type=int, default=200, help="held-out prompts")
    p.add_argument("--compare", action="store_true",
                   help="the runs of --runs at equal training time (--seconds each)")
    p.add_argument("--runs", default="rloo1,rloo4,grpo",
                   help=f"--compare's runs, comma-separated, of {', '.join(RUNS)}")
    p.add_argument("--seconds", type=float, default=300.0, help="--compare: training seconds a run")
    p.add_argument("--evals", type=int, default=12, help="--compare: evaluations a run, about")
    p.add_argument("--out", default=os.path.join("runs", "rl_experiment"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args()


def train_weak_model(task: str, steps: int, out: str, seed: int) -> str:
    """Step 1: a brief SFT run of the small preset on ``task``; returns the model folder."""
    train = builtin_dataset(4000, seed=seed, tasks=[task])
    phrasings = list(TASKS[task].instructions + TASKS[task].heldout_instructions)
    tok = Tokenizer.train([e.prompt for e in train] + [e.target for e in train] + phrasings,
                          vocab_size=400)
    config = minillm.T5Config(vocab_size=tok.vocab_size, **PRESETS["small"].model)
    model = minillm.T5.init(config, seeds.generator(seed, "init"))
    enc, _ = encode_examples(train, tok, 64, 32)
    cfg = TrainConfig(steps=steps, batch_size=32, lr=2e-3, warmup_steps=min(20, steps // 3),
                      eval_every=0, seed=seed)
    print(f"1. SFT: {model.num_parameters():,} parameters, {steps} steps of 32 {task} examples")
    keep_freed_memory()  # reuse each step's large arrays (see the README's performance notes)
    fit(model, tok, enc, cfg, out, progress=False, plot=False)
    return out


def base_settings(args, sft: str, out: str, **given) -> RLSettings:
    """The RLSettings of a run from ``sft`` into ``out``: the flags, then ``given``."""
    fields = dict(dir=sft, out=out, tasks=args.task, reward="verify", k=args.k,
                  batch_size=args.batch_size, steps=args.steps, lr=args.lr, n_eval=args.n_eval,
                  eval_every=max(1, args.steps // 3), seed=args.seed, max_new_tokens=24,
                  overwrite=True, no_progress=args.no_progress, algo=args.algo,
                  num_iterations=args.num_iterations, epsilon=args.epsilon)
    fields.update(given)
    if fields["algo"] == "grpo":
        fields["beta"] = args.beta
    else:
        fields["kl_coef"] = args.kl_coef
    return RLSettings(**fields)


def one_run(args, sft: str, t0: float) -> int:
    """Step 2 and 3 for one algorithm: the run, then the table of before and after."""
    settings = base_settings(args, sft, os.path.join(args.out, "rl"))
    given = [f"{f.name}={getattr(settings, f.name)!r}" for f in dataclasses.fields(settings)
             if getattr(settings, f.name) != f.default]
    print(f"2. REINFORCE: rl(RLSettings({', '.join(given)}))")
    result = rl(settings)
    before, after = result.initial_eval, result.final_eval
    print(f"\n3. held-out {args.task}, {after['n']} prompts (reward: the task's verifier, 0-1)")
    print(f"{'':>8} {'greedy':>8} {'sampled':>8} {'KL to SFT':>10}")
    for name, r in (("before", before), ("after", after)):
        print(f"{name:>8} {r['reward']:>8.3f} {r['sampled_reward']:>8.3f} {r['kl']:>10.3f}")
    gain = after["reward"] - before["reward"]
    print(f"greedy reward {before['reward']:.3f} -> {after['reward']:.3f} ({gain:+.3f}); "
          f"KL to the SFT model {after['kl']:.3f} nats; {time.perf_counter() - t0:.0f} s in all")
    return 0


# --------------------------------------------------------------------------- --compare


def curve(folder: str) -> dict:
    """A run's held-out curve from its metrics.jsonl: training seconds, steps, greedy reward, KL."""
    records = read_metrics(os.path.join(folder, "metrics.jsonl"))
    seconds, at_step = 0.0, {0: 0.0}
    for r in records:
        if r["kind"] == "train":
            seconds += r["step_s"]
            at_step[r["step"]] = seconds
    evals = [r for r in records if r["kind"] in ("initial_eval", "eval", "final_eval")]
    return {"seconds": [at_step[r["step"]] for r in evals], "step": [r["step"] for r in evals],
            "reward": [r["reward"] for r in evals], "sampled": [r["sampled_reward"] for r in evals],
            "kl": [r.get("kl", 0.0) for r in evals], "train_seconds": seconds}


def timed_run(args, sft: str, name: str, quiet) -> dict:
    """One --compare run: calibrate its step time, then train in evaluated chunks to --seconds."""
    extra = RUNS[name]
    calib = os.path.join(args.out, f"calibrate_{name}")
    rl(base_settings(args, sft, calib, steps=3, eval_every=0, n_eval=1, no_progress=True, **extra),
       log=quiet)
    step_s = curve(calib)["train_seconds"] / 3
    shutil.rmtree(calib)
    chunk = max(1, round(args.seconds / args.evals / step_s))
    out = os.path.join(args.out, name)
    print(f"  {LABELS[name]}: {step_s:.2f} s a step (calibration), evaluating every {chunk} steps")
    settings = base_settings(args, sft, out, steps=100_000, eval_every=chunk, stop_after=chunk,
                             no_progress=True, **extra)
    rl(settings, log=quiet)
    step = chunk
    while (trained := curve(out)["train_seconds"]) < args.seconds:
        left = math.ceil((args.seconds - trained) / (trained / step))  # steps, at the mean so far
        if left <= chunk:  # the last chunk: the run ends there, with its final evaluation
            rl(RLSettings(out=out, resume=True, steps=step + left, no_progress=True), log=quiet)
            break
        step += chunk
        rl(RLSettings(out=out, resume=True, stop_after=step, no_progress=True), log=quiet)
    return curve(out)


def first_time(c: dict, level: float) -> tuple[float, float] | None:
    """(training seconds, KL) of the first evaluation at or above ``level`` (None: never)."""
    return next(((s, kl) for s, r, kl in zip(c["seconds"], c["reward"], c["kl"], strict=True)
                 if r >= level), None)


def at_time(c: dict, t: float) -> tuple[float, float]:
    """(greedy reward, KL) of the last evaluation at or before ``t`` training seconds."""
    i = max(j for j, s in enumerate(c["seconds"]) if s <= t + 1e-9)
    return c["reward"][i], c["kl"][i]


def chart(curves: dict[str, dict], title: str) -> str:
    series = []
    for i, (name, c) in enumerate(curves.items()):
        series.append(Series(f"{LABELS[name]} reward", c["seconds"], c["reward"], COLORS[i],
                             markers=True))
        series.append(Series(f"{LABELS[name]} KL", c["seconds"], c["kl"], COLORS[i], right=True,
                             dashed=True, width=1.0))
    return line_chart(series, "training seconds (sampling, scoring, updates; 1 thread)",
                      Axis("held-out greedy reward", lo=0.0, hi=1.0), Axis("KL to the start (nats)"),
                      title=title, note="solid: greedy reward (left); dashed: KL(pi || SFT) (right)")


def compare(args, sft: str, t0: float) -> int:
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    bad = [n for n in names if n not in RUNS]
    if bad:
        raise SystemExit(f"--runs: unknown run(s) {', '.join(bad)} (choose from {', '.join(RUNS)})")
    print(f"2. {len(names)} runs from {sft}, {args.seconds:.0f} training seconds each "
          f"(k {args.k}, {args.batch_size} prompts a step, lr {args.lr}, kl_coef {args.kl_coef} "
          f"(rloo), beta {args.beta} (grpo), epsilon {args.epsilon})")
    curves = {name: timed_run(args, sft, name, quiet) for name in names}
    T = min(c["seconds"][-1] for c in curves.values())  # every run has trained this long
    base = curves.get("rloo1")
    target = base["reward"][-1] if base else None
    print(f"\n3. held-out {args.task}, {args.n_eval} prompts, greedy reward of the verifier "
          f"(start {next(iter(curves.values()))['reward'][0]:.3f})")
    print(f"{'run':>10} {'steps':>6} {'seconds':>8} {'final':>7} {'KL':>6} {'best':>6} "
          f"{f'at {T:.0f} s':>9} {'to 0.90 (KL)':>14} {'to RLOO1 final':>15}")
    for name, c in curves.items():
        reach = first_time(c, 0.90)
        to_base = first_time(c, target) if target is not None else None
        print(f"{LABELS[name]:>10} {c['step'][-1]:>6} {c['seconds'][-1]:>8.0f} {c['reward'][-1]:>7.3f} "
              f"{c['kl'][-1]:>6.2f} {max(c['reward']):>6.3f} {at_time(c, T)[0]:>9.3f} "
              f"{'-' if reach is None else f'{reach[0]:.0f} s ({reach[1]:.2f})':>14} "
              f"{'-' if to_base is None else f'{to_base[0]:.0f} s':>15}")
    path = os.path.join(args.out, "reward_vs_seconds.svg")
    with open(path, "w", encoding="utf-8") as f:
        f.write(chart(curves, f"held-out {args.task} against training seconds"))
    with open(os.path.join(args.out, "curves.json"), "w", encoding="utf-8") as f:
        json.dump({"settings": {k: v for k, v in vars(args).items()}, "curves": curves}, f, indent=1)
    print(f"wrote {path} and curves.json; {time.perf_counter() - t0:.0f} s in all")
    return 0


def main() -> int:
    args = parse_args()
    t0 = time.perf_counter()
    sft = args.sft or train_weak_model(args.task, args.sft_steps, os.path.join(args.out, "sft"),
                                       args.seed)
    return compare(args, sft, t0) if args.compare else one_run(args, sft, t0)


if __name__ == "__main__":
    sys.exit(main())
