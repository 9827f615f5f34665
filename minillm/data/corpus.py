"""Raw text for pretraining: the built-in corpus, and text files.

    docs = builtin_documents()                       # the running Python's standard library
    docs = read_text_files(["notes.txt", "web.jsonl"])
    train, held = split_documents(docs)              # 1 document in 10 held out, by its text

The built-in corpus is real text that exists offline wherever Python runs and that
minillm does not copy into its repository: the standard library of the Python that
is running, read at run time.

- every docstring of a module, class, function or method in the standard library's
  ``.py`` files, parsed with :mod:`ast` (nothing is imported, so no module runs),
  one document each: the dotted name on the first line, then the docstring
  (``posixpath.isdir`` / ``Return true if the pathname refers to an existing directory.``),
  its indentation and runs of spaces tidied away (:func:`tidy`);
  tests, demos, site-packages and bundled wheels are left out; a docstring met
  again (``_pyio`` repeats ``io``'s) is kept once, where the sorted walk meets it first;
- the language reference's sections that ``help()`` shows (``pydoc_data.topics``),
  one document per topic.

On CPython 3.11 that is about 1.5 MB of docstrings in 6,000 documents and 0.47 MB
of reference text: English prose about programs, with code in it, the register the
built-in tasks and their prompts are written in. Another Python version gives a
slightly different corpus; a run records its digest (:func:`corpus_digest`) and a
resume checks it.

Held-out documents follow a stable rule, the same on every machine and for every
seed: a document is held out when the sha256 of its text (the docstring alone for
the built-in corpus) is 0 modulo 10. Plain text files are cut into documents at blank
lines (paragraphs); JSONL files give one document per line, from its ``text`` field.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from minillm.storage.fileio import parse_json
from minillm.storage.reading import MiB, open_input, read_input, read_lines

HELD_OUT_EVERY = 10  # one document in 10 is held out
SOURCE_LIMIT = 8 * MiB  # a standard-library source file (the largest are a few hundred KB)
SKIPPED_FOLDERS = {"test", "tests", "idle_test", "turtledemo", "site-packages", "dist-packages",
                   "__pycache__", "_bundled"}


@dataclass(frozen=True)
class Document:
    """One document of raw text. ``name`` says where it came from ("posixpath.isdir",
    "notes.txt, paragraph 3"); ``key`` is the text its held-out rule hashes; ``defines``
    is the bare name a built-in docstring documents (a class, function or method;
    None for modules, topics and text files)."""

    name: str
    text: str
    key: str
    defines: str | None = None


# --------------------------------------------------------------------------- the built-in corpus


def stdlib_files(root: str | None = None) -> Iterator[tuple[str, str]]:
    """(path, dotted module name) of the standard library's ``.py`` files, sorted, tests left out."""
    root = root or sysconfig.get_paths()["stdlib"]
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders
                               if d not in SKIPPED_FOLDERS and not d.startswith("config-"))
        package = os.path.relpath(folder, root).replace(os.sep, ".")
        for f in sorted(files):
            if f.endswith(".py"):
                module = f[:-3] if package == "." else f"{package}.{f[:-3]}"
                yield os.path.join(folder, f), module.removesuffix(".__init__")


def docstrings(source: str, module: str) -> Iterator[tuple[str, str | None, str]]:
    """(dotted name, the bare name it defines or None for the module, docstring) of a module's source."""
    tree = ast.parse(source)
    todo: list[tuple[ast.AST, str]] = [(tree, module)]
    while todo:
        node, name = todo.pop(0)
        doc = ast.get_docstring(node)
        if doc:
            yield name, (None if node is tree else node.name), doc
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                todo.append((child, f"{name}.{child.name}"))


def builtin_documents(root: str | None = None) -> list[Document]:
    """The built-in corpus (module docstring): docstrings, then pydoc's topics."""
    seen: set[str] = set()
    docs = []
    for path, module in stdlib_files(root):
        try:
            found = list(docstrings(read_input(path, SOURCE_LIMIT).decode("utf-8"), module))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a file this Python cannot parse (e.g. lib2to3's deliberately broken data)
        for name, defines, doc in found:
            doc = tidy(doc)
            if doc and doc not in seen:
                seen.add(doc)
                docs.append(Document(name, f"{name}\n{doc}", key=doc, defines=defines))
    from pydoc_data.topics import topics

    for topic in sorted(topics):
        text = tidy(topics[topic])
        docs.append(Document(f"topics.{topic}", text, key=text))
    return docs


def tidy(text: str) -> str:
    """Each line's runs of spaces and tabs as one space, without its indentation; at most one
    blank line in a row. (A docstring's indentation is layout: kept, each space would be a token.)"""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --------------------------------------------------------------------------- text files


def read_text_files(paths: Sequence[str], flag: str = "--text") -> list[Document]:
    """Documents of plain text files (paragraphs) and JSONL files (``*.jsonl``: a ``text`` per line).

    Each file is read by the one rule (:mod:`minillm.storage.reading`: a regular file,
    lines of at most 1 MiB). A missing file, one that is not a regular file, text that is
    not UTF-8, a bad JSONL line or a file without text is a ValueError / FileNotFoundError
    naming the file (and line); a missing one names ``flag`` too.
    """
    docs = []
    for path in paths:
        if not os.path.lexists(path):
            raise FileNotFoundError(f"{path}: no such file ({flag} wants text files)")
        found = _jsonl_documents(path) if path.endswith(".jsonl") else _paragraphs(path)
        if not found:
            raise ValueError(f"{path}: no text ({flag})")
        docs += found
    return docs


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a text file, read by the one rule (lines of at most 1 MiB)."""
    with open_input(path) as f:
        for lineno, raw in read_lines(f, path):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}, line {lineno}: not UTF-8 text "
                                 f"(byte {e.start} of the line)") from None


def _paragraphs(path: str) -> list[Document]:
    docs, lines = [], []
    for _, line in [*_lines(path), (0, "")]:
        if line.strip():
            lines.append(line.rstrip("\r\n"))
        elif lines:
            text = "\n".join(lines)
            docs.append(Document(f"{path}, paragraph {len(docs) + 1}", text, key=text))
            lines = []
    return docs


def _jsonl_documents(path: str) -> list[Document]:
    docs = []
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = parse_json(line)
        except ValueError as e:
            raise ValueError(f"{path}, line {lineno}: malformed JSON: {e}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise ValueError(f"{path}, line {lineno}: expected an object with a 'text' string")
        if obj["text"].strip():
            docs.append(Document(f"{path}, line {lineno}", obj["text"], key=obj["text"]))
    return docs


# --------------------------------------------------------------------------- splitting


def is_held_out(doc: Document) -> bool:
    """The stable rule: sha256 of the document's key, as an integer, is 0 modulo HELD_OUT_EVERY."""
    return int(hashlib.sha256(doc.key.encode("utf-8")).hexdigest(), 16) % HELD_OUT_EVERY == 0


def split_documents(docs: Sequence[Document]) -> tuple[list[Document], list[Document]]:
    """(training documents, held-out documents), in their order, by :func:`is_held_out`."""
    held = [is_held_out(d) for d in docs]
    train = [d for d, h in zip(docs, held, strict=True) if not h]
    return train, [d for d, h in zip(docs, held, strict=True) if h]


def corpus_digest(docs: Sequence[Document]) -> str:
    """sha256 over every document's name and text (what a resumed run checks it trains on)."""
    h = hashlib.sha256()
    for d in docs:
        for part in (d.name, d.text):
            data = part.encode("utf-8")
            h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


# --------------------------------------------------------------------------- tokens


def encode_documents(docs: Sequence[Document], tokenizer, first_special: int | None = None
                     ) -> tuple[list[list[int]], int]:
    """(token ids of each document, each ending with ``</s>``; how many ids were dropped).

    Ids at or above ``first_special`` (the lowest sentinel id: T5's sentinels are the
    top of the vocabulary) are dropped: a ``<extra_id_N>`` written in the text
    would otherwise look like span corruption's own sentinels.
    """
    out, dropped = [], 0
    for ids in tokenizer.encode_batch([d.text for d in docs]):
        if first_special is not None:
            kept = [t for t in ids if t < first_special]
            dropped += len(ids) - len(kept)
            ids = kept
        out.append(ids)
    return out, dropped
