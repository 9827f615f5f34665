"""A Unigram tokenizer in T5's layout, trained with the ``tokenizers`` library.

    tokenizer = train_t5_tokenizer(texts, vocab_size=4000)     # a minillm.data.Tokenizer
    tokenizer.save("run/tokenizer.json")                       # transformers' T5TokenizerFast reads it

T5's layout (Google's spiece models and their tokenizer.json):

    id 0  <pad>   (also the decoder's start token)
    id 1  </s>    (ends every encoder input and every target)
    id 2  <unk>
    ...   the Unigram pieces (SentencePiece's model, as T5's)
    top   <extra_id_99> ... <extra_id_0>: the span-corruption sentinels, <extra_id_0>
          the top id, the next ones counting down (V - 1, V - 2, ...)

The pieces come from ``tokenizers``' UnigramTrainer (SentencePiece's algorithm: a
large seed vocabulary pruned by the loss of the corpus likelihood) with the
normaliser and decoder of :meth:`minillm.data.Tokenizer.train` and its pre-tokenizer
but for the punctuation, which stays inside the space-separated pieces as in
SentencePiece (isolating it, as the BPE tokenizer does, made one token in six of the
built-in corpus a lone ``▁``). The text comes back exactly (newlines and repeated
spaces kept, digits one by one; text right after a special token starts a new word,
as in T5's own files);
T5's own normaliser drops newlines, which code and the built-in tasks need. The
sentinels and the three specials are special added tokens: whole in any text,
skipped by ``decode``. This module imports ``tokenizers``; ``import minillm`` does not.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, models, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from minillm.data.tokenizer import ALPHABET, EOS, SPECIAL_TOKENS, UNK, Tokenizer, lossless_pipeline

NUM_SENTINELS = 100  # T5's extra_ids


def sentinel(i: int) -> str:
    """The i-th sentinel token: ``<extra_id_i>``."""
    return f"<extra_id_{i}>"


def train_t5_tokenizer(texts: Iterable[str], vocab_size: int = 4000, num_sentinels: int = NUM_SENTINELS,
                       *, max_piece_length: int = 16, show_progress: bool = False) -> Tokenizer:
    """A Unigram tokenizer of at most ``vocab_size`` ids, sentinels included (module docstring).

    ``vocab_size`` - ``num_sentinels`` ids go to the specials and the pieces (a small
    corpus may yield fewer pieces; the sentinels then sit right above them).
    """
    if num_sentinels < 1:
        raise ValueError(f"a T5 tokenizer needs sentinels for span corruption, got {num_sentinels}")
    pieces = vocab_size - num_sentinels
    least = len(SPECIAL_TOKENS) + len(ALPHABET)
    if pieces < least:
        raise ValueError(f"vocab_size {vocab_size} leaves {pieces} ids beside {num_sentinels} "
                         f"sentinels; the specials and the alphabet need {least}")
    tok = lossless_pipeline(models.Unigram(), isolate_punctuation=False)
    trainer = trainers.UnigramTrainer(vocab_size=pieces, special_tokens=list(SPECIAL_TOKENS),
                                      unk_token=UNK, initial_alphabet=ALPHABET,
                                      max_piece_length=max_piece_length, show_progress=show_progress)
    tok.train_from_iterator(texts, trainer=trainer)
    got = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if got != [0, 1, 2]:  # the trainer puts the special tokens first, in order
        raise RuntimeError(f"special token ids {got}, expected [0, 1, 2]")
    # <extra_id_{n-1}> first, so <extra_id_0> gets the top id
    tok.add_special_tokens([AddedToken(sentinel(i), special=True, normalized=False)
                            for i in reversed(range(num_sentinels))])
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, 1)])
    # The pieces' scores as every reader of tokenizer.json gets them: the first save and load
    # moves a few by one unit in the last place, and no later one does; so a run's tokenizer.json
    # is the same file however often it is saved (a checkpoint, a resume, train --init).
    return Tokenizer(HFTokenizer.from_str(tok.to_str()))


def sentinel_ids(tokenizer: Tokenizer, needed: int) -> int:
    """The id of ``<extra_id_0>``, after checking that ``<extra_id_j>`` is that id minus j for j < ``needed``.

    ValueError in one line when the tokenizer has too few sentinels or they are not
    in T5's descending layout.
    """
    top = tokenizer.token_to_id(sentinel(0))
    if top is None:
        raise ValueError("the tokenizer has no <extra_id_0>: span corruption needs T5's sentinels")
    for j in range(needed):
        if tokenizer.token_to_id(sentinel(j)) != top - j:
            have = tokenizer.token_to_id(sentinel(j))
            raise ValueError(f"span corruption needs {needed} sentinels counting down from <extra_id_0> "
                             f"(id {top}); {sentinel(j)} is {'missing' if have is None else f'id {have}'}")
    return top


def count_sentinels(tokenizer: Tokenizer) -> int:
    """How many sentinels count down from ``<extra_id_0>`` in T5's layout (0 without one)."""
    top, n = tokenizer.token_to_id(sentinel(0)), 0
    while top is not None and tokenizer.token_to_id(sentinel(n)) == top - n:
        n += 1
    return n
