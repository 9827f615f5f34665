"""A thin wrapper over a Hugging Face ``tokenizers.Tokenizer`` with T5's conventions.

Special tokens as in T5: id 0 ``<pad>`` (also the decoder start token), id 1
``</s>`` (appended to every encoder input and every target), id 2 ``<unk>``.

:meth:`Tokenizer.train` builds a BPE tokenizer (on the small built-in corpus,
``tokenizers``' Unigram trainer leaves common words in single letters; BPE gives
whole words), without T5's lossy normaliser so decoding gives the exact text back:

- normaliser: one space inserted after each newline, so the word after it gets the
  same ``▁word`` piece as anywhere else (the decoder removes that space again);
- pre-tokenizer: ``Metaspace`` (spaces become ``▁`` and start a piece), newline
  split off as its own piece, ``Digits(individual_digits=True)`` so every digit
  is its own token, and punctuation isolated (``quarante-neuf`` -> ``▁quarante - neuf``);
- the initial alphabet holds printable ASCII, newline and French accented letters,
  so unseen text rarely needs ``<unk>``;
- post-processor: ``$A </s>`` (as in Hugging Face T5); decoder: ``▁`` -> space,
  join, drop the inserted spaces (like Llama's tokenizer.json decoder).

:meth:`Tokenizer.from_file` loads any ``tokenizer.json``, including Google's T5 ones
(Unigram, Metaspace, ``</s>`` appended by the post-processor, the 100 ``<extra_id_N>``
sentinels at the top of the vocabulary), and reads the ``tokenizer_config.json`` and
``special_tokens_map.json`` that transformers writes beside it. It then encodes and
decodes as transformers' ``T5TokenizerFast`` on the same folder does:

- pad, eos and unk (named by the config, else ``<pad>``, ``</s>``, ``<unk>``), every
  ``<extra_id_N>`` of the vocabulary and the config's additional special tokens are
  special: whole in any text, skipped by ``decode(skip_special_tokens=True)``. Those
  that tokenizer.json does not list as added tokens are added, as transformers adds
  them (ids unchanged); an added token it lists as not special stays so, as there.
- ``encode(add_eos=True)`` ends with one ``</s>`` of its own, whether the
  post-processor appends it or not (a ``</s>`` typed in the text is kept besides).
- ``decode`` applies transformers' ``clean_up_tokenization`` (" ." -> "." ...) when
  the config sets ``clean_up_tokenization_spaces`` (not for BPE models, which
  transformers also spares); ids without a token (a model's rows beyond the
  tokenizer, 32100..32127 in T5) decode to nothing.

This module imports ``tokenizers`` at the top; ``import minillm`` does not import
this module.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from minillm.data.panics import panics_as_errors, reason
from minillm.data.tokenizer_config import read_tokenizer_config
from minillm.ops.cross_entropy import IGNORE_INDEX  # label padding; decode skips it
from minillm.storage.fileio import write_text
from minillm.storage.reading import LIMITS, read_input

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, UNK)  # ids 0, 1, 2 in a trained tokenizer
ALPHABET = sorted(set(string.printable) - set("\t\r\x0b\x0c ") | set("éèêëàâçîïôûùüœÉÈÀÇ"))
SENTINEL = re.compile(r"<extra_id_\d+>")  # T5's span-corruption sentinels: special tokens
# transformers' clean_up_tokenization, in its order
CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class Tokenizer:
    """T5-style tokenizer: ``encode`` appends ``</s>``, ``decode`` skips special tokens.

    ``extra_special_tokens``: more special tokens (a config's additional ones);
    ``clean_up_tokenization_spaces``: decode as transformers with that setting.
    """

    def __init__(
        self,
        tokenizer: HFTokenizer,
        pad_token: str = PAD,
        eos_token: str = EOS,
        unk_token: str = UNK,
        extra_special_tokens: Sequence[str] = (),
        clean_up_tokenization_spaces: bool = False,
        source: str | None = None,
    ) -> None:
        self._tok = tokenizer
        self.source = source  # the tokenizer.json read (None: trained here), for messages
        ids = {}
        for role, token in (("pad", pad_token), ("eos", eos_token), ("unk", unk_token)):
            ids[role] = tokenizer.token_to_id(token)
            if ids[role] is None:
                raise ValueError(f"tokenizer has no {role} token {token!r}")
        self._pad, self._eos, self._unk = ids["pad"], ids["eos"], ids["unk"]
        sentinels = sorted(t for t in tokenizer.get_vocab(with_added_tokens=True) if SENTINEL.fullmatch(t))
        added = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
        new = [t for t in dict.fromkeys([pad_token, eos_token, unk_token, *sentinels, *extra_special_tokens])
               if t not in added]
        if new:  # as transformers registers them: whole in any text, skipped when decoding
            tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in new])
        # whether the post-processor appends </s> itself (else encode does)
        with self._failures():
            self._post_eos = tokenizer.encode("", add_special_tokens=True).ids[-1:] == [self._eos]
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self._clean_up = self.clean_up_tokenization_spaces and type(tokenizer.model).__name__ != "BPE"

    # -- construction -------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 1000,
        *,
        max_piece_length: int = 16,
        show_progress: bool = False,
    ) -> Tokenizer:
        """Train a byte-pair-encoding tokenizer on ``texts`` (see the module docstring).

        ``vocab_size`` is an upper bound: a small corpus may yield fewer pieces.
        """
        tok = HFTokenizer(models.BPE(unk_token=UNK))
        # A space after each newline, so the next word gets its usual "▁word" piece;
        # the decoder removes exactly that space again.
        tok.normalizer = normalizers.Replace("\n", "\n ")
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
                pre_tokenizers.Split("\n", behavior="isolated"),
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.Punctuation(behavior="isolated"),
            ]
        )
        tok.decoder = decoders.Sequence(
            [
                decoders.Replace("▁", " "),
                decoders.Fuse(),
                decoders.Replace("\n ", "\n"),
                decoders.Strip(" ", 1, 0),  # the space Metaspace prepended
            ]
        )
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=ALPHABET,
            max_token_length=max_piece_length,
            show_progress=show_progress,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        eos_id = tok.token_to_id(EOS)
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
        )
        got = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
        if got != [0, 1, 2]:  # the trainer puts special tokens first, in order
            raise RuntimeError(f"special token ids {got}, expected [0, 1, 2]")
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, folder: str | os.PathLike | None = None,
                  **special_tokens: Any) -> Tokenizer:
        """Load a ``tokenizer.json`` (ours or a Hugging Face T5 one) with the configs beside it.

        Read by the one rule of :mod:`minillm.storage.reading` (a regular file of at most
        64 MiB; inside ``folder`` when it is a model folder's).

        tokenizer_config.json and special_tokens_map.json in the same folder, when
        there, name the pad/eos/unk tokens, more special tokens and
        clean_up_tokenization_spaces (:func:`read_tokenizer_config`); ``special_tokens``
        (``pad_token``, ``eos_token``, ``unk_token``, ``extra_special_tokens``,
        ``clean_up_tokenization_spaces``) override them.
        """
        path = os.fspath(path)
        if not os.path.lexists(path):
            raise FileNotFoundError(f"{path}: missing (a tokenizer.json is needed)")
        try:
            text = read_input(path, LIMITS["tokenizer"], folder).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
        try:
            with panics_as_errors(path, "reading it"):
                backend = HFTokenizer.from_str(text)
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception for a bad file
            raise ValueError(f"{path}: not a readable tokenizer.json ({reason(e)})") from None
        settings = read_tokenizer_config(os.path.dirname(os.path.abspath(path)))
        return cls(backend, **{**settings, **special_tokens}, source=path)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``tokenizer.json`` atomically (temp file in the same folder + os.replace), as
        ``tokenizers`` saves it; written by Python, so a full disk is an OSError naming the file."""
        write_text(path, self._tok.to_str(pretty=True))

    # -- encoding / decoding -----------------------------------------------------------

    def _finish(self, ids: list[int], add_eos: bool) -> list[int]:
        """Append ``</s>`` unless the post-processor already did."""
        if add_eos and not self._post_eos:
            ids = ids + [self._eos]
        return ids

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        """Token ids of ``text``, ending with ``</s>`` when ``add_eos`` (T5 convention)."""
        with self._failures():
            ids = self._tok.encode(text, add_special_tokens=add_eos).ids
        return self._finish(list(ids), add_eos)

    def encode_batch(self, texts: Sequence[str], add_eos: bool = True) -> list[list[int]]:
        """:meth:`encode` for many texts (the Rust tokenizer runs them in parallel)."""
        with self._failures():
            encs = self._tok.encode_batch(list(texts), add_special_tokens=add_eos)
        return [self._finish(list(e.ids), add_eos) for e in encs]

    def _failures(self):
        """The block's ``tokenizers`` panics as one line naming this tokenizer (:func:`panics_as_errors`)."""
        return panics_as_errors(self.source or "tokenizer")

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; skips special tokens (and -100 label padding) when asked.

        Decoding does not stop at ``</s>``; cut the ids first if that is wanted.
        """
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            ids = [i for i in ids if i != IGNORE_INDEX]
        with self._failures():
            text = self._tok.decode(ids, skip_special_tokens=skip_special_tokens)
        if self._clean_up:
            for before, after in CLEAN_UP:
                text = text.replace(before, after)
        return text

    def decode_batch(self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = True) -> list[str]:
        """:meth:`decode` for each row of ``batch``."""
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    # -- properties --------------------------------------------------------------

    @property
    def pad_token_id(self) -> int:
        return self._pad

    @property
    def eos_token_id(self) -> int:
        return self._eos

    @property
    def unk_token_id(self) -> int:
        return self._unk

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (added tokens included): the embedding rows needed."""
        return max(self._tok.get_vocab(with_added_tokens=True).values()) + 1

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(int(i))

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    @property
    def backend(self) -> HFTokenizer:
        """The wrapped ``tokenizers.Tokenizer``."""
        return self._tok

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, pad={self._pad}, eos={self._eos})"


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int) -> None:
    """Raise ValueError when the model's embedding has fewer rows than the tokenizer needs."""
    if model_vocab_size < tokenizer.vocab_size:
        raise ValueError(
            f"model vocab_size {model_vocab_size} does not cover the tokenizer, whose ids "
            f"go up to {tokenizer.vocab_size - 1} (needs vocab_size >= {tokenizer.vocab_size}); "
            "use a matching tokenizer or a model built with a larger vocab_size"
        )
