"""The whole lifecycle on one machine: a tokenizer, pretraining, SFT, REINFORCE; and what pretraining buys.

    python examples/lifecycle.py                   # about 24 minutes on 2 quiet cores (docs/pretraining.md)
    python examples/lifecycle.py --quick           # a smoke run of a few minutes (tiny shapes)

1. tokenizer   a Unigram tokenizer in T5's layout, trained on the built-in corpus's training
               documents (the running Python's standard library: minillm.data.corpus)
2. pretrain    T5's span corruption on that corpus
                   minillm pretrain --tokenizer OUT/tokenizer/tokenizer.json --steps P --out OUT/pretrain
3. SFT         the docstring-names task (a docstring's summary -> the name it documents; real text
               minillm did not write, its held-out instances absent from the pretraining text)
                   minillm train --init OUT/pretrain --data OUT/names/train.jsonl
                                 --eval-data OUT/names/eval.jsonl --steps S --out OUT/names-pretrained
4. REINFORCE   exact match of the name as the reward
                   minillm rl OUT/names-pretrained --out OUT/names-rl --data OUT/names/train.jsonl
                              --eval-data OUT/names/eval.jsonl --reward exact_match

and the comparison: SFT from scratch, from the pretraining's own step 0 (the same tokenizer,
shape and initial weights; OUT/scratch), given the wall time the pretrained arm spent
pretraining and fine-tuning (its steps: that time over the pretrained arm's measured SFT step
time), on the docstring-names task and on the built-in suite (``minillm train --init ...``
without --data). Written: OUT/lifecycle.svg (held-out exact match against wall time, both arms,
both tasks), OUT/lifecycle.json (the curves and the table) and the table on stdout.

Each step is one call of :mod:`minillm.workflows`, the call its command makes. Periodic
evaluations score the first 270 held-out examples (OUT/names/eval.jsonl is shuffled, so they
are a random 270 of them), the final one all of them.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from minillm.data.corpus import builtin_documents, split_documents
from minillm.data.docstring_names import name_examples
from minillm.data.examples import write_jsonl
from minillm.data.t5_tokenizer import train_t5_tokenizer
from minillm.plots.svg import COLORS, Axis, Series, line_chart
from minillm.runfolder.checkpoint import save_model
from minillm.runfolder.metrics import read_metrics
from minillm.storage.fileio import write_json, write_text
from minillm.workflows import PretrainSettings, RLSettings, TrainSettings, pretrain, rl, train
from minillm.workflows.pretrain_data import start_model

FULL = dict(preset="pretrain", vocab_size=4000, pretrain_steps=500, names_steps=600, suite_steps=1000,
            rl_steps=40, n_train=20_000)
QUICK = dict(preset="tiny", vocab_size=600, pretrain_steps=40, names_steps=60, suite_steps=60,
             rl_steps=3, n_train=2000)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join("runs", "lifecycle"), help="where everything goes")
    p.add_argument("--quick", action="store_true", help="tiny shapes and few steps: a smoke run")
    for name in FULL:
        p.add_argument("--" + name.replace("_", "-"), type=type(FULL[name]), default=None,
                       help=f"(default: {FULL[name]}; --quick: {QUICK[name]})")
    p.add_argument("--threads", default=None, help="BLAS threads of every step (default: OpenBLAS's)")
    args = p.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def prepare(args) -> dict[str, str]:
    """Step 1, the task files, and the scratch arm's start; the paths of what it wrote."""
    out = args.out
    paths = {"tokenizer": os.path.join(out, "tokenizer", "tokenizer.json"),
             "train": os.path.join(out, "names", "train.jsonl"),
             "eval": os.path.join(out, "names", "eval.jsonl"), "scratch": os.path.join(out, "scratch")}
    docs = builtin_documents()
    train_docs, _ = split_documents(docs)
    t0 = time.perf_counter()
    tokenizer = train_t5_tokenizer((d.text for d in train_docs), vocab_size=args.vocab_size)
    os.makedirs(os.path.dirname(paths["tokenizer"]), exist_ok=True)
    tokenizer.save(paths["tokenizer"])
    print(f"1. tokenizer: {tokenizer.vocab_size} ids in T5's layout ({time.perf_counter() - t0:.0f} s)")
    train_ex, held = name_examples(docs)
    random.Random(0).shuffle(held)  # the periodic evaluations' first 270: a random subset
    os.makedirs(os.path.dirname(paths["train"]), exist_ok=True)
    write_jsonl(train_ex, paths["train"])
    write_jsonl(held, paths["eval"])
    print(f"   docstring names: {len(train_ex)} training and {len(held)} held-out examples")
    start = PretrainSettings(preset=args.preset, tokenizer=paths["tokenizer"])
    save_model(paths["scratch"], start_model(start, tokenizer), tokenizer)  # the pretraining's step 0
    return paths


def sft(args, init: str, out: str, steps: int, names: dict | None):
    """One SFT arm (``minillm train --init INIT``): the names task with ``names``, else the suite."""
    # Own data: every evaluation decodes (best/ by exact match), and no early stopping, so
    # both arms run their whole wall-time budget and every point of the curve has exact match.
    data = (dict(data=names["train"], eval_data=names["eval"], best_metric="exact_match",
                 early_stopping_patience=0) if names else dict(n_train=args.n_train))
    return train(TrainSettings(init=init, out=out, overwrite=True, steps=steps, preset=args.preset,
                               eval_every=max(10, steps // 60 * 10), threads=_threads(args),
                               no_progress=True, **data))


def _threads(args):
    return None if args.threads is None else (args.threads if args.threads == "auto" else int(args.threads))


def curve(run: str, offset: float = 0.0) -> dict[str, list]:
    """The held-out exact match of a run against its step and wall time (+ ``offset`` seconds).

    An evaluation's time is the loop's elapsed time at its step (the train record of that step).
    """
    records = read_metrics(os.path.join(run, "metrics.jsonl"))
    elapsed = {r["step"]: r["elapsed_s"] for r in records if r["kind"] == "train"}
    evals = [r for r in records if r["kind"] in ("eval", "final_eval")]
    return {"step": [r["step"] for r in evals], "seconds": [offset + elapsed[r["step"]] for r in evals],
            "exact_match": [r["exact_match"] for r in evals], "n": [r["n"] for r in evals]}


def loop_seconds(run: str) -> float:
    """The run loop's wall time to its last step (its final evaluation not included)."""
    records = read_metrics(os.path.join(run, "metrics.jsonl"))
    return [r["elapsed_s"] for r in records if r["kind"] == "train"][-1]


def first_reaching(c: dict, score: float) -> int | None:
    """The first evaluated step whose exact match is at least ``score`` (None: never)."""
    return next((s for s, em in zip(c["step"], c["exact_match"], strict=True) if em >= score), None)


def compare(args, paths: dict, name: str, pretrained: str, pretrain_seconds: float, steps: int,
            names: dict | None) -> dict:
    """The pretrained arm's SFT, then SFT from scratch for the same total wall time; their curves."""
    pre = sft(args, pretrained, os.path.join(args.out, f"{name}-pretrained"), steps, names)
    per_step = loop_seconds(pre.out) / steps
    scratch_steps = round((pretrain_seconds + loop_seconds(pre.out)) / per_step)
    print(f"   {name}: pretrained arm {steps} SFT steps ({per_step * 1000:.0f} ms each); the scratch arm "
          f"gets {pretrain_seconds:.0f} + {loop_seconds(pre.out):.0f} s: {scratch_steps} steps")
    scr = sft(args, paths["scratch"], os.path.join(args.out, f"{name}-scratch"), scratch_steps, names)
    c_pre, c_scr = curve(pre.out, pretrain_seconds), curve(scr.out)
    target = c_scr["exact_match"][-1]
    reached = first_reaching(c_pre, target)
    return {"pretrained": c_pre, "scratch": c_scr, "pretrained_steps": steps, "scratch_steps": scratch_steps,
            "scratch_final": target, "pretrained_final": c_pre["exact_match"][-1],
            "pretrained_reaches_scratch_final_at_step": reached,
            "share_of_scratch_steps": None if reached is None else reached / scratch_steps}


def plot(results: dict, path: str) -> None:
    """OUT/lifecycle.svg: held-out exact match against wall time, both arms, both tasks."""
    series = []
    for i, task in enumerate(("names", "suite")):
        for arm, dashed in (("pretrained", False), ("scratch", True)):
            c = results[task][arm]
            series.append(Series(f"{task}: {arm}", [s / 60 for s in c["seconds"]], c["exact_match"],
                                 COLORS[i], dashed=dashed, markers=True))
    svg = line_chart(series, "wall time, minutes (the pretrained arms start after pretraining)",
                     Axis("held-out exact match", lo=0.0), title="SFT from the pretrained checkpoint "
                     "against SFT from scratch, at equal total wall time",
                     note="solid: pretrained then SFT; dashed: SFT from scratch (the same initial weights)")
    write_text(path, svg)


def table(results: dict) -> str:
    rows = ["| task | arm | SFT steps | wall time | final exact match | reaches scratch's final at |",
            "| --- | --- | --- | --- | --- | --- |"]
    for task in ("names", "suite"):
        r = results[task]
        for arm in ("pretrained", "scratch"):
            c = r[arm]
            at = r["pretrained_reaches_scratch_final_at_step"] if arm == "pretrained" else None
            where = ("-" if arm == "scratch" else "never" if at is None else
                     f"step {at} ({at / r['scratch_steps']:.0%} of scratch's, "
                     f"{at / r['pretrained_steps']:.0%} of its own)")
            rows.append(f"| {task} | {arm} | {r[f'{arm}_steps']} | {c['seconds'][-1] / 60:.1f} min | "
                        f"{c['exact_match'][-1]:.3f} (n={c['n'][-1]}) | {where} |")
    return "\n".join(rows)


def pretraining(args, paths: dict):
    """Step 2: ``minillm pretrain --tokenizer OUT/tokenizer/tokenizer.json --steps P``."""
    pre = pretrain(PretrainSettings(
        tokenizer=paths["tokenizer"], preset=args.preset, steps=args.pretrain_steps,
        eval_every=max(10, args.pretrain_steps // 5), out=os.path.join(args.out, "pretrain"),
        overwrite=True, threads=_threads(args), no_progress=True))
    print(f"2. pretrain: held-out span-corruption loss {pre.final_eval['loss']:.3f} after {pre.step} "
          f"steps ({pre.seconds / 60:.1f} min)")
    return pre


def reinforce(args, paths: dict) -> dict:
    """Step 4: ``minillm rl OUT/names-pretrained --reward exact_match`` on the names task."""
    tuned = rl(RLSettings(
        dir=os.path.join(args.out, "names-pretrained"), out=os.path.join(args.out, "names-rl"),
        data=paths["train"], eval_data=paths["eval"], reward="exact_match", steps=args.rl_steps,
        eval_every=0, max_new_tokens=16, overwrite=True, threads=_threads(args), no_progress=True))
    before, after = tuned.initial_eval["reward"], tuned.final_eval["reward"]  # reward: exact match
    print(f"4. REINFORCE: held-out exact match (greedy, {tuned.final_eval['n']} prompts) {before:.3f} "
          f"-> {after:.3f} ({tuned.seconds / 60:.1f} min)")
    return {"before": tuned.initial_eval, "after": tuned.final_eval, "seconds": tuned.seconds}


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    paths = prepare(args)
    pre = pretraining(args, paths)
    names = {"train": paths["train"], "eval": paths["eval"]}
    results = {"names": compare(args, paths, "names", pre.out, pre.seconds, args.names_steps, names),
               "suite": compare(args, paths, "suite", pre.out, pre.seconds, args.suite_steps, None)}
    for task in ("names", "suite"):
        r = results[task]
        print(f"3. SFT, {task}: held-out exact match from pretrained {r['pretrained_final']:.3f}, "
              f"from scratch {r['scratch_final']:.3f}")
    results["rl"] = reinforce(args, paths)
    results.update(total_minutes=(time.perf_counter() - t0) / 60, date=time.strftime("%Y-%m-%d %H:%M"),
                   load_average=os.getloadavg(), settings=vars(args))
    plot(results, os.path.join(args.out, "lifecycle.svg"))
    write_json(os.path.join(args.out, "lifecycle.json"), results)
    print(table(results))
    print(f"total {results['total_minutes']:.1f} min; {args.out}/lifecycle.svg, {args.out}/lifecycle.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
