"""An instruction task of real text that minillm did not write: a docstring's summary -> the name.

    train, held = name_examples(builtin_documents())
    train[0].prompt   # "Name the Python function, class or method this docstring summarises.\n
                      #  Return true if the pathname refers to an existing directory."
    train[0].target   # "isdir"

From the built-in pretraining corpus (:mod:`minillm.data.corpus`): each docstring of
a class, function or method gives one example, its summary line (PEP 257: the first
line) as the input and the bare name it documents as the output. Kept only when

- the summary has at least 3 words and does not contain the name (its letters,
  underscores stripped, in any case): "Return repr(self)." -> ``__repr__`` is copying,
  not naming;
- no other docstring of the library has the same summary (it would name two things).

Training examples come from the corpus's training documents, held-out examples from
its held-out documents (the same stable rule), and a held-out example is dropped
when its summary appears anywhere in the training documents' text: no held-out
instance is in the pretraining text verbatim. Exact match of the name is the score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from minillm.data.corpus import Document, is_held_out
from minillm.data.examples import Example, format_prompt

TASK = "docstring_names"
INSTRUCTION = "Name the Python function, class or method this docstring summarises."


def summary(docstring: str) -> str:
    """The summary line of a docstring: its first line, stripped."""
    return docstring.strip().splitlines()[0].strip()


def usable(doc: Document) -> bool:
    """A class, function or method docstring whose summary has 3+ words and does not hold the name."""
    if doc.defines is None:
        return False
    line = summary(doc.key)
    bare = doc.defines.strip("_").lower()
    return len(line.split()) >= 3 and bool(bare) and bare not in line.lower()


def name_examples(docs: Sequence[Document]) -> tuple[list[Example], list[Example]]:
    """(training examples, held-out examples) of the task (module docstring), in corpus order."""
    candidates = [d for d in docs if usable(d)]
    once = Counter(summary(d.key) for d in docs if d.defines is not None)
    candidates = [d for d in candidates if once[summary(d.key)] == 1]
    training_text = "\n".join(d.text for d in docs if not is_held_out(d))
    train, held = [], []
    for d in candidates:
        line = summary(d.key)
        ex = Example(format_prompt(INSTRUCTION, line), d.defines, task=TASK, origin=d.name)
        if not is_held_out(d):
            train.append(ex)
        elif line not in training_text:
            held.append(ex)
    return train, held
