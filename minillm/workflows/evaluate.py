"""``minillm eval`` as one call: loss, perplexity, BLEU, ROUGE and exact match of a model folder.

    from minillm.workflows import EvalSettings, evaluate
    result = evaluate(EvalSettings(dir="runs/sft"))          # the run's own held-out prompts
    result["exact_match"], result["per_task"]["qa"]["exact_match"]

The result is the JSON object ``minillm eval`` prints:
:func:`minillm.evaluation.evaluate_model`'s metrics (loss, perplexity, bleu,
rouge1/2/L, exact_match, overall and per task, the decoding settings), plus
``data`` (what was evaluated: "run:heldout", "builtin:eval" or the file),
``max_source_len`` / ``max_target_len``, ``run`` (for a run folder: the folder,
its kind and the step of the model evaluated) and ``predictions`` (the file
written, when asked). The folder needs config.json, model.safetensors and
tokenizer.json.

One number per model. When ``dir`` is a run folder of ``minillm train`` or
``minillm rl`` (it holds trainer_state.json), or the ``best/`` folder of one, the
settings left at None are the run's: with no ``data``, ``n`` or ``seed`` the
examples are the run's held-out examples, the ones its final evaluation scored
(read again by :func:`minillm.workflows.run_data.load_run_data`, the resume's
reader: a ``--data`` file the run names is read only when its sha256 is the one
saved), ``tasks`` keeping only those tasks of them; the length limits, the batch
size, ``max_new_tokens`` and the dtype are the run's. So ``evaluate(EvalSettings(dir=run))``
of a finished SFT run gives its trainer's final exact match, overall and per
task. Given settings override the run's. Any other folder gets the plain
defaults (:data:`PLAIN`): ``n`` examples of the built-in suite's eval split,
drawn on the "eval_data" stream of :mod:`minillm.seeds` as ``minillm train``
draws its held-out split under the same seed; ``do_sample`` draws on the
"generate" stream.

Under ``mpiexec -n N`` (:mod:`minillm.parallel`) every rank loads the model and
the data, decodes every N-th length-sorted batch (the batches one process
decodes), and the outputs and loss terms are gathered: the result equals one
process's. Rank 0 alone writes ``predictions``. Sampled decoding (one stream
across the batches) is not split: it is refused under N > 1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import minillm.seeds as seeds
from minillm.data import load_jsonl
from minillm.evaluation import evaluate_model
from minillm.generation import check_options
from minillm.parallel import Single, get_world
from minillm.runfolder import checkpoint
from minillm.storage.fileio import atomic_path
from minillm.training import RLConfig, TrainConfig
from minillm.workflows.checks import (
    MAX_INT,
    apply_threads,
    check_at_most,
    check_device,
    check_folder,
    check_positive,
)
from minillm.workflows.run_data import RL_MAX_TARGET_LEN, builtin_verifiers, load_run_data
from minillm.workflows.runs import check_run_files

# What a setting left at None means for a folder that is not a run folder.
PLAIN = {"n": 500, "seed": 0, "batch_size": 64, "max_source_len": 256, "max_new_tokens": 64,
         "dtype": "float32"}


@dataclass(frozen=True)
class EvalSettings:
    """One field per ``minillm eval`` flag (``dir`` is the positional DIR).

    None: the run's value when ``dir`` is a run folder (see the module docstring),
    else the one in :data:`PLAIN`.
    """

    dir: str
    data: str | None = None
    n: int | None = None
    tasks: Sequence[str] | None = None
    seed: int | None = None
    predictions: str | None = None
    batch_size: int | None = None
    max_source_len: int | None = None
    max_new_tokens: int | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    dtype: str | None = None
    device: str = "cpu"
    threads: int | str | None = None  # BLAS threads: a count, "auto" (the idle cores) or None
    no_progress: bool = False


@dataclass(frozen=True)
class RunFolder:
    """The run a model folder belongs to: its folder, trainer state, and the step of the model."""

    folder: str
    state: dict[str, Any]
    step: int | None

    @property
    def kind(self) -> str:
        return self.state.get("kind") or "sft"

    @property
    def config(self) -> dict[str, Any]:
        return self.state["rl_config" if self.kind == "rl" else "train_config"]

    def defaults(self) -> dict[str, Any]:
        """The settings the run's own evaluation used (``n``: its held-out size, when built-in)."""
        info = self.state["run"]
        return {"n": info.get("n_eval") or PLAIN["n"], "seed": info["seed"],
                "batch_size": self.config["eval_batch_size"],
                "max_source_len": info["max_source_len"],
                "max_new_tokens": self.config["max_new_tokens"], "dtype": self.state["dtype"]}

    def max_target_len(self) -> int:
        """The run's target truncation (REINFORCE keeps the workflow's fixed one)."""
        return RL_MAX_TARGET_LEN if self.kind == "rl" else self.state["run"]["max_target_len"]


def run_of(folder: str) -> RunFolder | None:
    """The run whose model ``folder`` is: a run folder itself, or its ``best/``; else None.

    Read only (an interrupted checkpoint is not recovered here: a run may be
    training in the folder); the trainer state through its one checked reader
    (ValueError naming the file and the field). A state without the workflow's
    ``run`` dict (a library ``fit``) does not name its data: None.
    """
    folder = os.path.normpath(folder)
    step_of = None
    if os.path.isfile(os.path.join(folder, checkpoint.STATE_NAME)):
        run_dir = folder
    elif (os.path.basename(folder) == checkpoint.BEST_DIR and not os.path.islink(folder)
          and os.path.isfile(os.path.join(folder, checkpoint.BEST_STEP_NAME))
          and os.path.isfile(os.path.join(os.path.dirname(folder), checkpoint.STATE_NAME))):
        run_dir = os.path.dirname(folder)
        step_of = checkpoint.best_step(run_dir)
    else:
        return None
    state = checkpoint.read_state(run_dir, {"train_config": TrainConfig, "rl_config": RLConfig})
    if not state.get("run"):
        return None
    return RunFolder(run_dir, state, state["step"] if step_of is None else step_of)


def check_settings(s: EvalSettings) -> None:
    """ValueError naming the flag, before anything is read or written."""
    check_positive(s, ("n", "batch_size", "max_new_tokens", "num_beams"))
    if s.max_source_len is not None and s.max_source_len < 2:
        raise ValueError(f"--max-source-len must be at least 2, got {s.max_source_len}")
    check_at_most("max_source_len", s.max_source_len)
    if s.seed is not None and not 0 <= s.seed <= MAX_INT:
        raise ValueError(f"--seed must be in [0, 2**53], got {s.seed}")
    if s.predictions is not None:
        folder = os.path.dirname(os.path.abspath(s.predictions))
        if os.path.isdir(s.predictions) or s.predictions.endswith(os.sep):
            raise ValueError(f"--predictions {s.predictions}: a folder; give a file to write "
                             "(e.g. predictions.jsonl)")
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--predictions {s.predictions}: no folder {folder} to write it in")


def resolved(s: EvalSettings, run: RunFolder | None) -> EvalSettings:
    """``s`` with every None setting filled in: the run's value, else :data:`PLAIN`'s."""
    defaults = run.defaults() if run is not None else PLAIN
    return replace(s, **{k: v for k, v in defaults.items() if getattr(s, k) is None})


def run_held_out(run: RunFolder, tasks: Sequence[str] | None):
    """(examples, verifiers): the run's held-out examples (only ``tasks``'), as its evaluation had them."""
    info = run.state["run"]
    check_run_files(info, f"of the run in {run.folder}; give --data FILE.jsonl to evaluate on "
                    "other data")
    _, held = load_run_data(info, "rl_data" if run.kind == "rl" else "sft_data")
    if tasks is not None:
        have = sorted({str(ex.task) for ex in held})
        missing = [t for t in tasks if t not in have]
        if missing:
            raise ValueError(f"--tasks {' '.join(missing)}: no held-out example of the run in "
                             f"{run.folder} has that task (its tasks: {', '.join(have)})")
        held = [ex for ex in held if ex.task in tasks]
    return held, builtin_verifiers() if info["data"] is None else None


def evaluate(settings: EvalSettings, world: Single | None = None) -> dict[str, Any]:
    """Evaluate the folder ``settings.dir``; write ``settings.predictions`` (JSONL) when given.

    ValueError / FileNotFoundError (one line) for a bad folder, data or device.
    ``world`` (default :func:`minillm.parallel.get_world`): the ranks split the
    decoding; each returns the whole result.
    """
    world = get_world() if world is None else world
    s, run, model, tokenizer, examples, verifiers, data, max_target_len, gen = world.check(
        _load, settings, world)
    result = evaluate_model(model, tokenizer, examples, max_source_len=s.max_source_len,
                            max_target_len=max_target_len, batch_size=s.batch_size,
                            progress=not s.no_progress, verifiers=verifiers, world=world, **gen)
    outputs = result.pop("outputs")
    if s.predictions:
        world.on_root(write_predictions, s.predictions, examples, outputs)
        result["predictions"] = s.predictions
    result["data"] = data
    result["max_source_len"], result["max_target_len"] = s.max_source_len, max_target_len
    if run is not None:
        result["run"] = {"folder": run.folder, "kind": run.kind, "step": run.step}
    return result


def _load(settings: EvalSettings, world: Single):
    """Everything :func:`evaluate` needs, checked: (settings resolved, run folder or None, model,
    tokenizer, examples, verifiers, data name, max_target_len, generation settings)."""
    from minillm.data.tasks import builtin_dataset
    from minillm.data.tokenizer import Tokenizer, check_vocab
    from minillm.model import T5

    check_settings(settings)
    check_device(settings.device, world)
    apply_threads(settings.threads)
    tok_path = check_folder(settings.dir, "", "minillm eval needs the folder's tokenizer")
    run = run_of(settings.dir)
    s = resolved(settings, run)
    if s.do_sample and world.size > 1:
        raise ValueError("--do-sample draws one stream across the batches: it is not split over "
                         "ranks; run it without mpiexec")
    own_data = run is not None and settings.data is None and settings.n is None and settings.seed is None
    if own_data:
        examples, verifiers = run_held_out(run, s.tasks)
        data, max_target_len = "run:heldout", run.max_target_len()
    elif s.data is not None:
        examples, verifiers, data = load_jsonl(s.data), None, s.data
    else:
        examples = builtin_dataset(s.n, seed=s.seed, split="eval", tasks=s.tasks)
        verifiers, data = builtin_verifiers(), "builtin:eval"
    if settings.max_new_tokens is not None or not own_data:
        max_target_len = s.max_new_tokens  # --max-new-tokens is also the target truncation
    model = T5.from_pretrained(s.dir, dtype=s.dtype, device=s.device)
    tokenizer = Tokenizer.from_file(tok_path, folder=os.path.dirname(tok_path))
    check_vocab(tokenizer, model.config.vocab_size)
    gen: dict[str, Any] = dict(max_new_tokens=s.max_new_tokens, num_beams=s.num_beams,
                               length_penalty=s.length_penalty, do_sample=s.do_sample)
    if s.do_sample:
        gen.update(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                   rng=seeds.generator(s.seed, "generate"))
    check_options(model.config, s.batch_size, s.max_source_len, **gen)  # before the first batch
    return s, run, model, tokenizer, examples, verifiers, data, max_target_len, gen


def write_predictions(path: str, examples, outputs: Sequence[str]) -> None:
    """One JSON line per example (prompt, target, output, task), written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for ex, out in zip(examples, outputs, strict=True):
            f.write(json.dumps({"prompt": ex.prompt, "target": ex.target, "output": out,
                                "task": ex.task}, ensure_ascii=False) + "\n")
