"""``minillm rl``: tune a T5 with REINFORCE (RLOO, or GRPO) against a reward function.

    minillm rl runs/sft --out runs/rl                        # built-in suite, each task's verifier
    minillm rl runs/sft --out runs/rl --tasks sort_words --steps 150 --kl-coef 0.1
    minillm rl runs/sft --out runs/rl --data train.jsonl --reward rouge_l
    minillm rl runs/sft --out runs/rl --algo grpo --beta 0.04 --num-iterations 4
    minillm rl runs/sft --out runs/rl --data train.jsonl --reward myreward:score
    minillm rl --out runs/rl --resume                        # continue, bit for bit

DIR is the starting model (a Hugging Face T5 folder with tokenizer.json, e.g. an
SFT run folder); it is also the frozen reference of the KL penalty, copied into
``OUT/reference``. The run folder is that of ``minillm train`` (see
:mod:`minillm.runfolder`). The work is :func:`minillm.workflows.rl`
(``RLSettings`` has a field per flag); this module parses the flags and prints
the evaluations before and after.
"""

from __future__ import annotations

import argparse

from minillm.cli.flags import add_threads_flag, say, settings_from
from minillm.runfolder.checkpoint import SAVE_DTYPES
from minillm.workflows import RLSettings, format_policy_eval, rl
from minillm.workflows.rl import ALGOS, BASELINES, DEFAULT_OUT, DEFAULTS, LOSS_TYPES, SCALE_REWARDS


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``rl`` subcommand."""
    p = subparsers.add_parser(
        "rl", help="tune a T5 with REINFORCE (RLOO or GRPO) against a reward function",
        description="REINFORCE with a leave-one-out baseline: sample k outputs per prompt, score "
        "them, push up the log-probability of the better ones; a KL penalty keeps the policy near "
        "the starting model. --algo grpo: TRL's GRPO (group-normalised advantages, a per-token "
        "KL in the loss); --num-iterations: clipped updates that reuse each batch of samples.")
    p.add_argument("dir", metavar="DIR", nargs="?", default=None,
                   help="the starting Hugging Face T5 folder, with tokenizer.json (not needed "
                   "with --resume)")
    _data_flags(p.add_argument_group("data, reward and run folder"))
    _training_flags(p.add_argument_group("REINFORCE ([default])"))
    p.set_defaults(func=run)
    return p


def _data_flags(g) -> None:
    """The data, reward, model and run folder flags."""
    g.add_argument("--out", metavar="DIR2", default=DEFAULT_OUT, help=f"the run folder [{DEFAULT_OUT}]")
    g.add_argument("--data", metavar="FILE.jsonl",
                   help="prompts (and references) to train on, JSONL as for minillm train "
                   "(default: the built-in task suite)")
    g.add_argument("--eval-data", metavar="FILE.jsonl", default=None,
                   help="held-out prompts (default: the built-in eval split, or 5%% of --data)")
    g.add_argument("--tasks", default=None,
                   help="built-in suite only: comma-separated task names (default: all)")
    g.add_argument("--reward", default=None,
                   help="exact_match, bleu, rouge_l, verify (the built-in task verifiers), "
                   "task:NAME, or module:function taking (prompt, output, reference) -> float "
                   "[verify for the built-in suite; required with --data]")
    g.add_argument("--n-train", type=int, default=2000, help="built-in suite: training prompts [2000]")
    g.add_argument("--n-eval", type=int, default=200, help="held-out prompts evaluated [200]")
    g.add_argument("--max-source-len", type=int, default=64, help="prompt tokens kept [64]")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="parameter dtype [float32]")
    g.add_argument("--save-dtype", choices=SAVE_DTYPES, default=None,
                   help="store best/ in this dtype when the run stops (bfloat16: rounded to nearest "
                   "even from float32); the last checkpoint and reference/ keep --dtype, so --resume "
                   "continues exactly. Not saved with the run [--dtype]")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the policy, the frozen reference and the AdamW moments live; cuda "
                   "runs on a GPU through CuPy (the gpu extra). Not saved with the run: --resume "
                   "continues on the device given here [cpu]")
    add_threads_flag(g)
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (same settings)")
    g.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that already holds one")


def _training_flags(t) -> None:
    """The REINFORCE settings: None by default, so that --resume can tell which were given."""
    d = DEFAULTS
    t.add_argument("--steps", type=int,
                   help=f"steps, each a batch of samples and --num-iterations updates [{d.steps}]")
    t.add_argument("--batch-size", type=int,
                   help=f"prompts per micro-batch (per rank under mpiexec) [{d.batch_size}]")
    t.add_argument("--grad-accum", type=int,
                   help=f"micro-batches per optimizer step (on each rank) [{d.grad_accum}]")
    t.add_argument("--k", type=int, help=f"samples per prompt [{d.k}]")
    t.add_argument("--algo", choices=ALGOS,
                   help="rloo: leave-one-out advantages, the KL in the reward (--kl-coef); grpo: "
                   "group-normalised advantages, the per-token KL in the loss (--beta), as TRL's "
                   f"trainers [{d.algo}]")
    t.add_argument("--num-iterations", type=int,
                   help="updates on each step's samples (mu), the ratio pi/pi_old clipped "
                   f"PPO-style [{d.num_iterations}]")
    t.add_argument("--epsilon", type=float,
                   help=f"clip the ratio to [1 - epsilon, 1 + epsilon-high] [{d.epsilon}]")
    t.add_argument("--epsilon-high", type=float, help="the upper clip [--epsilon]")
    t.add_argument("--beta", type=float,
                   help=f"grpo: beta * the k3 KL exp(r) - r - 1 per token in the loss [{d.beta}]")
    t.add_argument("--scale-rewards", choices=SCALE_REWARDS,
                   help="grpo: divide (r - the group's mean) by the std of the group, of the batch, "
                   f"or none [{d.scale_rewards}]")
    t.add_argument("--loss-type", choices=LOSS_TYPES,
                   help="grpo: average token losses per sequence then over sequences (grpo), over "
                   f"N * max-new-tokens (dr_grpo) or over every token (dapo) [{d.loss_type}]")
    t.add_argument("--baseline", choices=BASELINES,
                   help="rloo: mean reward of the prompt's other k-1 samples; ema: moving "
                   f"average of batch means; none [{d.baseline}]")
    t.add_argument("--ema-decay", type=float, help=f"for --baseline ema [{d.ema_decay}]")
    t.add_argument("--whiten", action="store_true", default=None,
                   help="normalise the advantages to mean 0, std 1 over each batch")
    t.add_argument("--kl-coef", type=float,
                   help=f"rloo: c in reward - c * sum_t log(pi/pi_ref), per sequence [{d.kl_coef}]")
    t.add_argument("--entropy-coef", type=float,
                   help=f"bonus on the mean per-token entropy [{d.entropy_coef}]")
    t.add_argument("--lr", type=float, help=f"peak learning rate, AdamW [{d.lr}]")
    t.add_argument("--warmup-steps", type=int, help=f"linear warmup [{d.warmup_steps}]")
    t.add_argument("--schedule", choices=("constant", "cosine", "linear"), help=f"[{d.schedule}]")
    t.add_argument("--weight-decay", type=float, help=f"[{d.weight_decay}]")
    t.add_argument("--max-grad-norm", type=float, help=f"clipping [{d.max_grad_norm}]")
    t.add_argument("--temperature", type=float,
                   help=f"sampling temperature; 1 samples the policy itself [{d.temperature}]")
    t.add_argument("--top-k", type=int, help=f"sampling top-k; 0: off [{d.top_k}]")
    t.add_argument("--top-p", type=float, help=f"sampling top-p; 1: off [{d.top_p}]")
    t.add_argument("--max-new-tokens", type=int, help=f"output tokens sampled [{d.max_new_tokens}]")
    t.add_argument("--seed", type=int, help=f"seed of the data, prompt order and sampling [{d.seed}]")
    t.add_argument("--eval-every", type=int,
                   help=f"evaluate every this many steps; 0: only at the end [{d.eval_every}]")
    t.add_argument("--save-every", type=int,
                   help="checkpoint every this many steps [with each evaluation]")
    t.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="checkpoint and stop at this step; continue later with --resume")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Tune as the flags say (:func:`minillm.workflows.rl`); print the before/after evaluation."""
    result = rl(settings_from(RLSettings, args), log=say)
    if result.initial_eval is not None:
        print("held-out evaluation at step 0 (the starting model):")
        print(format_policy_eval(result.initial_eval))
    if result.final_eval is not None:
        print(f"held-out evaluation at step {result.step}:")
        print(format_policy_eval(result.final_eval))
        print(f"reward {result.final_eval['reward']:.4f}")
    elif result.stopped_early:
        print(f"stopped at step {result.step} of {result.steps}; continue with "
              f"minillm rl --out {result.out} --resume")
    print(f"last checkpoint: step {result.step} -> {result.out}   ({result.seconds:.0f} s)")
    return 0
