"""The model and tokenizer a new ``minillm train`` run starts from, and a model described in one line.

    model, tokenizer = build_model(settings, preset, train_examples, seed)

From ``--init`` (a Hugging Face T5 folder with its tokenizer.json), or new: a
tokenizer trained on the data (for the built-in suite, every instruction
phrasing too) and the preset's T5 with weights drawn on the "init" stream of
:mod:`minillm.seeds`.
"""

from __future__ import annotations

import minillm.seeds as seeds
from minillm.data import Example
from minillm.workflows.checks import check_folder
from minillm.workflows.presets import Preset


def build_model(s, preset: Preset, train_ex: list[Example], seed: int):
    """(model, tokenizer) of ``s`` (a TrainSettings): from ``init``, or new with a tokenizer trained
    on the data."""
    from minillm.config import T5Config
    from minillm.data.tasks import TASKS
    from minillm.data.tokenizer import Tokenizer, check_vocab
    from minillm.model import T5

    dtype = s.dtype or "float32"
    if s.init:
        tok_path = check_folder(s.init, "--init wants a Hugging Face T5 folder",
                                "--init needs the model's tokenizer.json")
        tokenizer = Tokenizer.from_file(tok_path, folder=s.init)
        model = T5.from_pretrained(s.init, dtype=dtype, device=s.device)
        if s.dropout is not None:
            model = T5(model.config.replace(dropout_rate=s.dropout), model.params)
        check_vocab(tokenizer, model.config.vocab_size)
        return model, tokenizer
    # the built-in suite: every instruction phrasing too (eval-only ones tokenize into words)
    phrasings = ([p for t in TASKS.values() for p in t.instructions + t.heldout_instructions]
                 if s.data is None else [])
    texts = [ex.prompt for ex in train_ex] + [ex.target for ex in train_ex] + phrasings
    tokenizer = Tokenizer.train(texts, vocab_size=s.vocab_size or preset.vocab_size)
    model_cfg = dict(preset.model)
    if s.dropout is not None:
        model_cfg["dropout_rate"] = s.dropout
    config = T5Config(vocab_size=tokenizer.vocab_size, **model_cfg)
    check_vocab(tokenizer, config.vocab_size)
    model = T5.init(config, seeds.generator(seed, "init"), dtype=dtype, device=s.device)
    return model, tokenizer


def describe(c) -> str:
    """A T5Config in one line: widths, heads, layers, FFN."""
    return (f"d_model {c.d_model}, {c.num_heads} heads x {c.d_kv}, d_ff {c.d_ff}, "
            f"{c.num_layers}+{c.num_decoder_layers} layers, {c.feed_forward_proj}")
