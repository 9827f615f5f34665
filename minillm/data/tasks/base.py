"""The task interface and the train/eval split shared by every built-in task.

A task turns a random *instance* (a number, a word list, a small story...) into
an :class:`~minillm.data.Example`: ``prompt = instruction + "\\n" + input`` (the
Alpaca template of :mod:`minillm.data`), ``target`` = the exact answer.

Train and eval never share an instance: an instance belongs to the eval split
when a deterministic hash of ``(task name, instance key)`` falls in the lowest
``EVAL_PERMILLE`` of 1000 buckets. Sampling a split draws instances until one
falls on the right side, so the split is a property of the instance, not of the
seed. Eval prompts may also use ``heldout_instructions``, phrasings the train
split never shows.

Instruction word dropout (train split only, ``instruction_dropout`` p): each word of the
drawn phrasing is left out with probability p (at least one stays), so that training
shows each task under many partial phrasings and a model learns to read the task from
any of its cue words rather than from one whole template: the held-out phrasings
(which share cue words with the training ones, e.g. "Sort this list of words
alphabetically." against "Reverse this list of words.") stay unseen.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import NamedTuple

import numpy as np

from minillm.data.examples import Example, format_prompt

SPLITS = ("train", "eval")
EVAL_PERMILLE = 100  # 10% of instances are held out for eval
MAX_DRAWS = 100_000  # rejection-sampling bound (never reached for the built-in tasks)


def instance_split(task: str, key: str) -> str:
    """'eval' or 'train' for an instance, by a stable hash (not Python's salted hash)."""
    digest = hashlib.blake2b(f"{task}\x1f{key}".encode(), digest_size=8).digest()
    return "eval" if int.from_bytes(digest, "little") % 1000 < EVAL_PERMILLE else "train"


class Instance(NamedTuple):
    """One problem: ``key`` identifies it for the split; ``input`` goes in the prompt."""

    key: str
    input: str
    target: str


class Task(ABC):
    """A generated instruction task with an exact (or semantic) verifier.

    Subclasses set ``name``, ``description``, ``instructions`` (train phrasings),
    ``heldout_instructions`` (eval-only phrasings, possibly empty) and implement
    :meth:`instance`.
    """

    name: str
    description: str
    instructions: tuple[str, ...]
    heldout_instructions: tuple[str, ...] = ()

    @abstractmethod
    def instance(self, rng: np.random.Generator) -> Instance:
        """Draw one random problem instance (either split)."""

    def sample(self, rng: np.random.Generator, split: str = "train",
               instruction_dropout: float = 0.0) -> Example:
        """Draw an example of ``split`` ("train" or "eval").

        Eval examples use an instruction from ``instructions + heldout_instructions``;
        train examples only from ``instructions``, each word left out with probability
        ``instruction_dropout`` (:func:`drop_words`; 0: the phrasing whole, and no draw).
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if instruction_dropout and split != "train":
            raise ValueError("instruction_dropout applies to the train split only")
        for _ in range(MAX_DRAWS):
            inst = self.instance(rng)
            if instance_split(self.name, inst.key) == split:
                break
        else:  # pragma: no cover - would need an almost-empty instance space
            raise RuntimeError(f"task {self.name!r}: no {split} instance in {MAX_DRAWS} draws")
        phrasings = self.instructions
        if split == "eval":
            phrasings = phrasings + self.heldout_instructions
        instruction = phrasings[int(rng.integers(len(phrasings)))]
        if instruction_dropout:
            instruction = drop_words(instruction, instruction_dropout, rng)
        return Example(format_prompt(instruction, inst.input), inst.target, task=self.name)

    def verify(self, example: Example, output: str) -> float:
        """1.0 when ``output`` (stripped) equals the target exactly, else 0.0."""
        return float(output.strip() == example.target.strip())

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


def pick(rng: np.random.Generator, pool: tuple[str, ...], k: int) -> list[str]:
    """``k`` distinct items of ``pool`` in random order."""
    return [pool[i] for i in rng.permutation(len(pool))[:k]]


def drop_words(text: str, p: float, rng: np.random.Generator) -> str:
    """``text``'s words (split at spaces), each left out with probability ``p``; at least one stays.

    keep_i = u_i >= p with u ~ U[0, 1) per word; when no word is kept, word j (drawn
    uniformly) is. The kept words keep their order.
    """
    words = text.split(" ")
    keep = rng.random(len(words)) >= p  # (n_words,)
    if not keep.any():
        keep[int(rng.integers(len(words)))] = True
    return " ".join(w for w, k in zip(words, keep, strict=True) if k)
