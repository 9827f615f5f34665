"""The built-in instruction task suite: minillm's default data, generated from a seed.

Four applications, every answer checkable exactly; the default suite
(``DEFAULT_SUITE``, what ``minillm train`` learns) is these nine tasks:

- translation: ``number_to_english``, ``number_to_french``
- question answering: ``qa`` (a fact looked up by the key the question names)
- code generation: ``code_expression`` (checked by semantic equivalence)
- text transformations: ``reverse_words``, ``sort_words``, ``uppercase``,
  ``count_words``, ``largest_number``

``TASKS`` also holds ``qa_who`` (the name as the answer), a built-in task outside the
default suite: an open problem, see :mod:`minillm.data.tasks.qa` and docs/main-job.md.

Each task has train instruction phrasings, eval-only phrasings, and an eval split
of instances disjoint from train (see :mod:`minillm.data.tasks.base`). Inputs stay
under about 40 tokens and answers under about 16, so a small T5 learns the suite
on a laptop CPU in minutes.

    from minillm.data.tasks import TASKS, builtin_dataset
    train = builtin_dataset(20_000, seed=0)                 # the default suite, "sft_data" stream
    heldout = builtin_dataset(900, seed=0, split="eval")    # the "eval_data" stream
    tok = train_tokenizer(vocab_size=1000)          # a Tokenizer for the suite
    score = TASKS[ex.task].verify(ex, model_output)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import minillm.seeds as seeds
from minillm.data.examples import Example
from minillm.data.tasks.base import SPLITS, Task, instance_split
from minillm.data.tasks.codegen import CodeExpression
from minillm.data.tasks.number_words import NumberToEnglish, NumberToFrench, english_words, french_words
from minillm.data.tasks.qa import KeyedQA, WhoQA
from minillm.data.tasks.text import CountWords, LargestNumber, ReverseWords, SortWords, Uppercase

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        NumberToEnglish(),
        NumberToFrench(),
        KeyedQA(),
        CodeExpression(),
        ReverseWords(),
        SortWords(),
        Uppercase(),
        CountWords(),
        LargestNumber(),
        WhoQA(),
    )
}

# the tasks the main job learns (and "all" names): every built-in task but the open problem qa_who
DEFAULT_SUITE: tuple[str, ...] = tuple(t for t in TASKS if t != "qa_who")

# the random stream (minillm.seeds) each split draws from unless told otherwise
DEFAULT_STREAM = {"train": "sft_data", "eval": "eval_data"}


def resolve_tasks(tasks: Sequence[str] | str | None) -> list[str]:
    """Task names to use: the default suite for None or "all"; a string may list names with commas
    ("all,qa_who": the default suite and qa_who); ValueError for unknown names."""
    if tasks is None:
        return list(DEFAULT_SUITE)
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    tasks = [t for name in tasks for t in (DEFAULT_SUITE if name == "all" else [name])]
    tasks = list(dict.fromkeys(tasks))  # each once, in order
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known tasks: {', '.join(TASKS)}")
    if not tasks:
        raise ValueError("no tasks given")
    return list(tasks)


def builtin_dataset(
    n: int, seed: int = 0, split: str = "train", tasks: Sequence[str] | str | None = None,
    stream: str | None = None, weights: Mapping[str, float] | None = None,
    instruction_dropout: float = 0.0,
) -> list[Example]:
    """``n`` examples of ``split``, balanced over ``tasks`` (the default suite by default), shuffled.

    Task ``i`` gets ``n // k`` examples, plus one for the first ``n % k`` tasks;
    with ``weights`` (task -> relative weight, 1 for a task not named), task ``t``
    gets ``n * w_t / sum(w)`` examples, rounded by largest remainder (see
    :func:`task_counts`). The examples are drawn from ``seeds.generator(seed, stream)``; ``stream``
    defaults to the split's: "sft_data" for train, "eval_data" for eval
    (REINFORCE draws its training prompts from "rl_data"). Deterministic in
    ``(n, seed, split, tasks, stream, weights, instruction_dropout)``; train and eval never
    share an instance, whatever the seeds and streams. ``instruction_dropout`` (train split
    only): each word of a training instruction is left out with this probability
    (:func:`minillm.data.tasks.base.drop_words`); 0 draws nothing, so the examples are those
    of a call without it.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if isinstance(instruction_dropout, bool) or not 0.0 <= instruction_dropout < 1.0:
        raise ValueError(f"instruction_dropout must be a number in [0, 1), got {instruction_dropout!r}")
    names = resolve_tasks(tasks)
    counts = task_counts(n, names, weights)
    # the tasks in rounds (one example of each task that still has one to draw): with equal
    # weights this is names[i % k], the order of the balanced suite
    order = [t for r in range(max(counts.values(), default=0)) for t in names if counts[t] > r]
    rng = seeds.generator(seed, stream or DEFAULT_STREAM[split])
    examples = [TASKS[t].sample(rng, split, instruction_dropout) for t in order]
    return [examples[i] for i in rng.permutation(n)]


def task_counts(n: int, names: Sequence[str], weights: Mapping[str, float] | None = None) -> dict[str, int]:
    """How many of ``n`` examples each task of ``names`` gets: ``n * w_t / sum(w)``, summing to ``n``.

    The integer parts first, then one more for the largest remainders (ties to the
    earlier task). Without ``weights``: ``n // k``, plus one for the first ``n % k``.
    ValueError for a weight of an unknown task or one that is not a positive number.
    """
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"task weights name task(s) {unknown} that are not in {list(names)}")
    for t, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 < w < float("inf"):
            raise ValueError(f"task weight of {t!r} must be a positive number, got {w!r}")
    w = [float(weights.get(t, 1.0)) for t in names]
    total = sum(w)
    exact = [n * wi / total for wi in w]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(len(names)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return dict(zip(names, counts, strict=True))


def train_tokenizer(vocab_size: int = 1000, n: int = 20_000, seed: int = 0):
    """A :class:`minillm.data.tokenizer.Tokenizer` trained on ``n`` train examples of the suite.

    Prompts, targets and every instruction phrasing (eval-only ones included, so
    they tokenize into words rather than letters) make up the corpus.
    """
    from minillm.data.tokenizer import Tokenizer

    examples = builtin_dataset(n, seed=seed, split="train")
    phrasings = [p for t in TASKS.values() for p in t.instructions + t.heldout_instructions]
    texts = [ex.prompt for ex in examples] + [ex.target for ex in examples] + phrasings
    return Tokenizer.train(texts, vocab_size=vocab_size)


def verify(example: Example, output: str) -> float:
    """Score ``output`` for a built-in example with its task's verifier."""
    if example.task not in TASKS:
        raise ValueError(f"example has no built-in task (task={example.task!r})")
    return TASKS[example.task].verify(example, output)


__all__ = [
    "DEFAULT_SUITE",
    "SPLITS",
    "TASKS",
    "Task",
    "builtin_dataset",
    "english_words",
    "french_words",
    "instance_split",
    "resolve_tasks",
    "task_counts",
    "train_tokenizer",
    "verify",
]
