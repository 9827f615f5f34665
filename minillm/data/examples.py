"""Instruction examples and their JSONL files.

    examples = load_jsonl("train.jsonl")          # Alpaca or prompt/completion lines
    write_jsonl(examples, "copy.jsonl")           # Alpaca lines with a task field
    groups = group_by_task(examples)              # {task: [indices]}, for per-task figures
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from minillm.storage.fileio import atomic_path, parse_json
from minillm.storage.reading import open_input, read_lines

BLANK = b" \t\r\n"  # JSON's whitespace: a line of only these is blank (skipped)
# Alpaca prompt template: the instruction alone when ``input`` is empty, else
# instruction, newline, input. The built-in tasks use the same template.
PROMPT_TEMPLATE = "{instruction}\n{input}"


@dataclass(frozen=True)
class Example:
    """One instruction example: the model reads ``prompt`` and should write ``target``.

    ``task`` names the built-in task (or any label from the JSONL ``task`` field);
    ``reference`` is optional extra information a verifier may use; ``origin``
    says where the example came from ("train.jsonl, line 12"), for error messages.
    """

    prompt: str
    target: str
    task: str | None = None
    reference: Any = field(default=None, compare=False)
    origin: str | None = field(default=None, compare=False)


def format_prompt(instruction: str, input: str | None = None) -> str:
    """Apply :data:`PROMPT_TEMPLATE`; an empty or missing ``input`` gives the instruction."""
    if not input:
        return instruction
    return PROMPT_TEMPLATE.format(instruction=instruction, input=input)



def group_by_task(examples: Sequence[Example]) -> dict[str, list[int]]:
    """{task: indices of its examples}, tasks sorted; examples without a task are under "all"."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.task or "all", []).append(i)
    return {task: groups[task] for task in sorted(groups)}


# ----------------------------------------------------------------------------- JSONL


def _check_text(key: str, value: Any) -> None:
    """A field's value is text: a string that is valid Unicode (JSON's \\ud800 escape can write a
    lone surrogate, which no tokenizer encodes)."""
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{key!r} holds a lone surrogate ({value[e.start]!r} at character "
                         f"{e.start}), not text") from None


def _parse_record(obj: Any) -> Example:
    """Turn one decoded JSON line into an Example; ValueError says what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    alpaca = "instruction" in obj or "output" in obj
    plain = "prompt" in obj or "completion" in obj
    if alpaca and plain:
        raise ValueError(
            "mixes the Alpaca fields (instruction/output) with prompt/completion; use one format"
        )
    if not alpaca and not plain:
        raise ValueError(
            "needs either 'instruction' and 'output' (Alpaca) or 'prompt' and 'completion'; "
            f"found keys {sorted(obj)}"
        )
    required = ("instruction", "output") if alpaca else ("prompt", "completion")
    optional = ("input", "task") if alpaca else ("task",)
    for key in required:
        if key not in obj:
            raise ValueError(f"missing {key!r}")
        _check_text(key, obj[key])
    for key in optional:
        if obj.get(key) is not None:
            _check_text(key, obj[key])
    if alpaca:
        prompt, target = format_prompt(obj["instruction"], obj.get("input")), obj["output"]
    else:
        prompt, target = obj["prompt"], obj["completion"]
    return Example(prompt, target, task=obj.get("task"))


def load_jsonl(path: str | os.PathLike) -> list[Example]:
    """Read examples from a JSONL file, one JSON object per line; blank lines are skipped.

    Each line is either Alpaca (``instruction``, optional ``input``, ``output``) or
    ``prompt`` + ``completion``; both may carry a ``task`` string. Any bad line
    raises ValueError naming the file and the 1-based line number; a file without
    examples is an error too. A blank line holds only JSON's whitespace (:data:`BLANK`).
    The file is read by the one rule of :mod:`minillm.storage.reading` (a regular file:
    no FIFO, no device) as a stream of lines of at most 1 MiB, so memory holds the
    examples, not the file.
    """
    path = os.fspath(path)
    with open_input(path) as f:
        examples = [ex for _, ex in iter_jsonl(f, path)]
    if not examples:
        raise ValueError(f"{path}: no examples (the file is empty or has only blank lines)")
    return examples


def iter_jsonl(stream: BinaryIO, name: str) -> Iterator[tuple[int, Example]]:
    """(line number, Example) of each non-blank line of a binary JSONL stream, lazily; a bad line
    is a ValueError naming ``name`` and the line."""
    for lineno, raw in read_lines(stream, name):
        example = parse_line(raw, f"{name}, line {lineno}")
        if example is not None:
            yield lineno, example


def parse_line(raw: bytes, where: str) -> Example | None:
    """The Example of one JSONL line (bytes), None for a blank one; ValueError prefixed with
    ``where`` for a bad one."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not UTF-8 text (byte {e.start} of the line)") from None
    if not line.strip(BLANK.decode("ascii")):
        return None
    try:
        obj = parse_json(line)
    except ValueError as e:
        raise ValueError(f"{where}: malformed JSON: {e}") from None
    try:
        return dataclasses.replace(_parse_record(obj), origin=where)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def to_jsonl_lines(examples: Iterable[Example]) -> Iterator[str]:
    """One Alpaca JSON line (no newline) per example: instruction = prompt, empty input."""
    for ex in examples:
        record = {"instruction": ex.prompt, "input": "", "output": ex.target, "task": ex.task}
        yield json.dumps(record, ensure_ascii=False)


def write_jsonl(examples: Iterable[Example], path: str | os.PathLike) -> None:
    """Write examples as Alpaca JSONL with a ``task`` field (atomically: temp file + rename).

    :func:`load_jsonl` reads the file back to the same prompts, targets and tasks.
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for line in to_jsonl_lines(examples):
            f.write(line + "\n")
