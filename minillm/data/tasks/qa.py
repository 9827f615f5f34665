"""Question answering over a short generated context.

Context: two people, each holding a number of one kind of thing::

    Anna has 3 apples. Ben has 5 pears. Question: How many pears does Ben have?  -> 5
    Anna has 3 apples. Ben has 5 pears. Question: Who has the apples?           -> Anna

The answer is always copied from the context (selection, not arithmetic).
"""

from __future__ import annotations

import numpy as np

from minillm.data.tasks.base import Instance, Task, pick

NAMES = ("Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jack")
ITEMS = ("apples", "pears", "books", "pens", "cards", "coins", "shells", "stamps")
MIN_COUNT, MAX_COUNT = 2, 9  # plural nouns throughout


class ContextQA(Task):
    name = "qa"
    description = "answer a question (how many / who) about a short generated context"
    instructions = (
        "Answer the question about the text.",
        "Read the text and answer the question.",
        "Use the text to answer the question.",
        "Answer the question using the context.",
        "Read the context, then answer the question.",
    )
    heldout_instructions = ("Answer the question from the text.",)

    def instance(self, rng: np.random.Generator) -> Instance:
        k = 2
        names, items = pick(rng, NAMES, k), pick(rng, ITEMS, k)
        counts = [int(c) for c in rng.integers(MIN_COUNT, MAX_COUNT + 1, size=k)]
        facts = " ".join(f"{n} has {c} {it}." for n, c, it in zip(names, counts, items, strict=True))
        j = int(rng.integers(k))
        if rng.integers(2):
            question, answer = f"How many {items[j]} does {names[j]} have?", str(counts[j])
        else:
            question, answer = f"Who has the {items[j]}?", names[j]
        text = f"{facts} Question: {question}"
        return Instance(key=text, input=text, target=answer)
