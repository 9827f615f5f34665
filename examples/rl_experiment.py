"""REINFORCE lifts a weak model: held-out reward before and after, with the KL to where it started.

    python examples/rl_experiment.py                        # a few minutes on 2 CPU cores
    python examples/rl_experiment.py --sft runs/my_sft      # start from your own SFT checkpoint

1. SFT (skipped with --sft): the "small" preset's T5 is trained on one built-in task
   for only --sft-steps steps, so it is weak: it gets some held-out prompts right.
2. REINFORCE with that task's verifier as the reward: the ``minillm rl`` workflow,

       rl(RLSettings(dir="OUT/sft", out="OUT/rl", tasks=TASK, reward="verify", k=8, ...))

   which is what ``minillm rl OUT/sft --out OUT/rl --tasks TASK --reward verify --k 8 ...`` runs.

   For each prompt, k sampled outputs; each is scored 0 or 1 by the verifier, and
   the ones that beat the mean of the other k-1 samples are made more likely (RLOO);
   a KL penalty to the SFT model keeps the policy near it.
3. The held-out figures, before and after: mean reward of greedy decoding (what a
   user of the model gets), of one sample per prompt, and KL(pi || pi_ref) in nats.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
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
from minillm.training import TrainConfig, fit  # noqa: E402
from minillm.workflows import RLSettings, rl  # noqa: E402
from minillm.workflows.presets import PRESETS  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sort_words", choices=list(TASKS), help="the built-in task")
    p.add_argument("--sft", default=None, help="start from this SFT model folder (skips step 1)")
    p.add_argument("--sft-steps", type=int, default=60, help="SFT steps of the weak model")
    p.add_argument("--steps", type=int, default=150, help="REINFORCE steps")
    p.add_argument("--k", type=int, default=8, help="samples per prompt")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per REINFORCE step")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--kl-coef", type=float, default=0.1)
    p.add_argument("--n-eval", type=int, default=200, help="held-out prompts")
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


def main() -> int:
    args = parse_args()
    t0 = time.perf_counter()
    sft = args.sft or train_weak_model(args.task, args.sft_steps, os.path.join(args.out, "sft"),
                                       args.seed)
    settings = RLSettings(dir=sft, out=os.path.join(args.out, "rl"), tasks=args.task,
                          reward="verify", k=args.k, batch_size=args.batch_size, steps=args.steps,
                          lr=args.lr, kl_coef=args.kl_coef, n_eval=args.n_eval,
                          eval_every=max(1, args.steps // 3), seed=args.seed, max_new_tokens=24,
                          overwrite=True, no_progress=args.no_progress)
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


if __name__ == "__main__":
    sys.exit(main())
