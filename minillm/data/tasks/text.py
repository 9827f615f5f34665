"""Text transformations over short lists of common words and small numbers.

reverse_words, sort_words (alphabetical), uppercase, count_words, largest_number.
Words come from a fixed pool of short English words, so every word is a single
token or two and the tasks test the transformation, not spelling.
"""

from __future__ import annotations

import numpy as np

from minillm.data.tasks.base import Instance, Task, pick

WORDS = (
    "red blue green black white pink cat dog bird fish cow fox owl bee "
    "box cup hat key pen book lamp ball tree star"
).split()
WORDS = tuple(WORDS)


class ReverseWords(Task):
    name = "reverse_words"
    description = "reverse the order of 2-5 words"
    instructions = (
        "Reverse the order of the words.",
        "Write the words in reverse order.",
        "List these words backwards, last word first.",
        "Put the words in the opposite order.",
        "Reverse this list of words.",
    )
    heldout_instructions = ("Give the words in reverse order.",)

    def instance(self, rng: np.random.Generator) -> Instance:
        words = pick(rng, WORDS, int(rng.integers(2, 6)))
        text = " ".join(words)
        return Instance(key=text, input=text, target=" ".join(reversed(words)))


class SortWords(Task):
    name = "sort_words"
    description = "sort 2-4 words alphabetically"
    instructions = (
        "Sort the words in alphabetical order.",
        "Put these words in alphabetical order.",
        "Arrange the words alphabetically.",
        "Write the words sorted from A to Z.",
        "Order the words alphabetically.",
    )
    heldout_instructions = ("Sort this list of words alphabetically.",)

    def instance(self, rng: np.random.Generator) -> Instance:
        words = pick(rng, WORDS, int(rng.integers(2, 5)))
        text = " ".join(words)
        return Instance(key=text, input=text, target=" ".join(sorted(words)))


class Uppercase(Task):
    name = "uppercase"
    description = "write 1-4 words in capital letters"
    instructions = (
        "Write the words in capital letters.",
        "Convert the text to uppercase.",
        "Rewrite these words in upper case.",
        "Make every letter a capital letter.",
        "Write this in all caps.",
    )
    heldout_instructions = ("Change the words to uppercase.",)

    def instance(self, rng: np.random.Generator) -> Instance:
        words = pick(rng, WORDS, int(rng.integers(1, 5)))
        text = " ".join(words)
        return Instance(key=text, input=text, target=text.upper())


class CountWords(Task):
    name = "count_words"
    description = "count the items of a list of 2-6 words"
    instructions = (
        "How many words are in the list?",
        "Count the items in this list.",
        "Say how many items the list has.",
        "Count the words.",
        "Give the number of items in the list.",
    )

    def instance(self, rng: np.random.Generator) -> Instance:
        words = [WORDS[i] for i in rng.integers(len(WORDS), size=int(rng.integers(2, 7)))]
        text = ", ".join(words)
        return Instance(key=text, input=text, target=str(len(words)))


class LargestNumber(Task):
    name = "largest_number"
    description = "name the largest of 2-4 numbers below 100"
    instructions = (
        "What is the largest number in the list?",
        "Name the largest number.",
        "Which number in the list is the biggest?",
        "Find the maximum of these numbers.",
        "Give the largest of these numbers.",
    )
    heldout_instructions = ("Which is the highest number in the list?",)

    def instance(self, rng: np.random.Generator) -> Instance:
        numbers = [int(v) for v in rng.permutation(100)[: int(rng.integers(2, 5))]]
        text = ", ".join(map(str, numbers))
        return Instance(key=text, input=text, target=str(max(numbers)))
