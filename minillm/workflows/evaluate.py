"""``minillm eval`` as one call: loss, perplexity, BLEU, ROUGE and exact match of a model folder.

    from minillm.workflows import EvalSettings, evaluate
    result = evaluate(EvalSettings(dir="runs/sft", n=100))
    result["exact_match"], result["per_task"]["qa"]["exact_match"]

The result is the JSON object ``minillm eval`` prints:
:func:`minillm.evaluation.evaluate_model`'s metrics (loss, perplexity, bleu,
rouge1/2/L, exact_match, overall and per task, the decoding settings), plus
``data`` (the file, or "builtin:eval") and ``predictions`` (the file written,
when asked). The folder needs config.json, model.safetensors and tokenizer.json.

The built-in suite's eval split is drawn on the "eval_data" stream of
:mod:`minillm.seeds`, as ``minillm train`` draws its held-out split under the
same seed (the sizes differ: ``n`` here, the preset's ``n_eval`` there);
``do_sample`` draws on the "generate" stream.

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
from dataclasses import dataclass
from typing import Any

from minillm import seeds
from minillm.data import load_jsonl
from minillm.evaluation import evaluate_model
from minillm.parallel import Single, get_world
from minillm.storage.fileio import atomic_path
from minillm.workflows.common import builtin_verifiers, check_device, check_folder


@dataclass(frozen=True)
class EvalSettings:
    """One field per ``minillm eval`` flag (``dir`` is the positional DIR)."""

    dir: str
    data: str | None = None
    n: int = 500
    tasks: Sequence[str] | None = None
    seed: int = 0
    predictions: str | None = None
    batch_size: int = 64
    max_source_len: int = 256
    max_new_tokens: int = 64
    num_beams: int = 1
    length_penalty: float = 1.0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    dtype: str = "float32"
    device: str = "cpu"
    no_progress: bool = False


def check_settings(s: EvalSettings) -> None:
    """ValueError naming the flag, before anything is read or written."""
    for name in ("n", "batch_size", "max_new_tokens", "num_beams"):
        if getattr(s, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(s, name)}")
    if s.max_source_len < 2:
        raise ValueError(f"--max-source-len must be at least 2, got {s.max_source_len}")
    if s.predictions is not None:
        folder = os.path.dirname(os.path.abspath(s.predictions))
        if os.path.isdir(s.predictions) or s.predictions.endswith(os.sep):
            raise ValueError(f"--predictions {s.predictions}: a folder; give a file to write "
                             "(e.g. predictions.jsonl)")
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--predictions {s.predictions}: no folder {folder} to write it in")


def evaluate(settings: EvalSettings, world: Single | None = None) -> dict[str, Any]:
    """Evaluate the folder ``settings.dir``; write ``settings.predictions`` (JSONL) when given.

    ValueError / FileNotFoundError (one line) for a bad folder, data or device.
    ``world`` (default :func:`minillm.parallel.get_world`): the ranks split the
    decoding; each returns the whole result.
    """
    world = get_world() if world is None else world
    s = settings
    model, tokenizer, examples, verifiers, gen = world.check(_load, s, world)
    result = evaluate_model(model, tokenizer, examples, max_source_len=s.max_source_len,
                            max_target_len=s.max_new_tokens, batch_size=s.batch_size,
                            progress=not s.no_progress, verifiers=verifiers, world=world, **gen)
    outputs = result.pop("outputs")
    if s.predictions:
        world.check(write_predictions if world.is_root else (lambda *a: None), s.predictions,
                    examples, outputs)
        result["predictions"] = s.predictions
    result["data"] = s.data or "builtin:eval"
    return result


def _load(s: EvalSettings, world: Single):
    """(model, tokenizer, examples, verifiers, generation settings), everything checked."""
    from minillm.data.tasks import builtin_dataset
    from minillm.data.tokenizer import Tokenizer, check_vocab
    from minillm.model import T5

    check_settings(s)
    if s.do_sample and world.size > 1:
        raise ValueError("--do-sample draws one stream across the batches: it is not split over "
                         "ranks; run it without mpiexec")
    check_device(s.device, world)
    tok_path = check_folder(s.dir, "", "minillm eval needs the folder's tokenizer")
    if s.data is not None:
        examples, verifiers = load_jsonl(s.data), None
    else:
        examples = builtin_dataset(s.n, seed=s.seed, split="eval", tasks=s.tasks)
        verifiers = builtin_verifiers()
    model = T5.from_pretrained(s.dir, dtype=s.dtype, device=s.device)
    tokenizer = Tokenizer.from_file(tok_path)
    check_vocab(tokenizer, model.config.vocab_size)
    gen: dict[str, Any] = dict(max_new_tokens=s.max_new_tokens, num_beams=s.num_beams,
                               length_penalty=s.length_penalty, do_sample=s.do_sample)
    if s.do_sample:
        gen.update(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                   rng=seeds.generator(s.seed, "generate"))
    return model, tokenizer, examples, verifiers, gen


def write_predictions(path: str, examples, outputs: Sequence[str]) -> None:
    """One JSON line per example (prompt, target, output, task), written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for ex, out in zip(examples, outputs, strict=True):
            f.write(json.dumps({"prompt": ex.prompt, "target": ex.target, "output": out,
                                "task": ex.task}, ensure_ascii=False) + "\n")
