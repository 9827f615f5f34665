"""Question answering over a short generated context: look a fact up by the key the question names.

``qa`` (in the default suite): the context holds ``FACTS`` facts of one form, each
person holding a number of one kind of thing; the question names one kind (the
key), and the answer is the number copied from the one fact that holds it::

    Anna has 3 apples. Ben has 5 pears. Question: How many pears?  -> 5

Names, kinds and numbers are distinct within a context and the asked fact is drawn
uniformly, so a model that ignores the question cannot beat chance: whatever it
reads from the context alone, it is right with probability 1 / FACTS (= 1/2).

Two facts, not three: with three (chance 1/3) the small preset learned the lookup
alone (qa only) to 0.61 in 1500 steps where two facts reached 0.90 (issue 14, #9), and in the
main job's mix three facts stayed near chance (0.33-0.41) through 3500 steps
(docs/main-job.md).

``qa_who`` (a built-in task, not in the default suite): the name as the answer,
from two facts::

    Anna has 3 apples. Ben has 5 pears. Question: Who has the apples?  -> Anna

Chance is 1/2. This form is an open problem: the default model stays at chance on
it within the main job's budget (docs/main-job.md, "qa_who: an open problem").

The answer is always copied from the context (selection, not arithmetic); the
checker is exact.
"""

from __future__ import annotations

import numpy as np

from minillm.data.tasks.base import Instance, Task, pick

NAMES = ("Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jack")
ITEMS = ("apples", "pears", "books", "pens", "cards", "coins", "shells", "stamps")
COUNTS = tuple(str(c) for c in range(2, 10))  # plural nouns throughout
FACTS = 2  # facts in a qa context: chance is 1 / FACTS
WHO_FACTS = 2  # facts in a qa_who context: chance is 1 / WHO_FACTS

INSTRUCTIONS = (
    "Answer the question about the text.",
    "Read the text and answer the question.",
    "Use the text to answer the question.",
    "Answer the question using the context.",
    "Read the context, then answer the question.",
)
HELDOUT_INSTRUCTIONS = ("Answer the question from the text.",)


def context(rng: np.random.Generator, k: int) -> tuple[str, list[str], list[str], list[str]]:
    """k facts "N has C I." with distinct names N, counts C and items I: (text, names, counts, items)."""
    names, counts, items = pick(rng, NAMES, k), pick(rng, COUNTS, k), pick(rng, ITEMS, k)
    text = " ".join(f"{n} has {c} {it}." for n, c, it in zip(names, counts, items, strict=True))
    return text, names, counts, items


class KeyedQA(Task):
    """How many of the item the question names: the count of the one fact holding that item."""

    name = "qa"
    description = f"how many of the named item? (looked up among {FACTS} facts; chance 1/{FACTS})"
    instructions = INSTRUCTIONS
    heldout_instructions = HELDOUT_INSTRUCTIONS
    chance = 1 / FACTS

    def instance(self, rng: np.random.Generator) -> Instance:
        facts, _, counts, items = context(rng, FACTS)
        j = int(rng.integers(FACTS))
        text = f"{facts} Question: How many {items[j]}?"
        return Instance(key=text, input=text, target=counts[j])


class WhoQA(Task):
    """Who holds the item the question names (an open problem: not in the default suite)."""

    name = "qa_who"
    description = (f"who has the named item? (among {WHO_FACTS} facts; chance 1/{WHO_FACTS}; "
                   "not in the default suite, an open problem)")
    instructions = INSTRUCTIONS
    heldout_instructions = HELDOUT_INSTRUCTIONS
    chance = 1 / WHO_FACTS

    def instance(self, rng: np.random.Generator) -> Instance:
        facts, names, _, items = context(rng, WHO_FACTS)
        j = int(rng.integers(WHO_FACTS))
        text = f"{facts} Question: Who has the {items[j]}?"
        return Instance(key=text, input=text, target=names[j])
