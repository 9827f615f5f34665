"""Slow end-to-end runs of pretraining: ``minillm pretrain`` on the built-in corpus, and
examples/lifecycle.py --quick (tokenizer, pretraining, SFT from it and from scratch, REINFORCE)."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

import minillm
from minillm.cli import main
from minillm.data.corpus import builtin_documents, corpus_digest, split_documents

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "lifecycle.py"


@pytest.mark.slow
def test_pretrain_on_the_builtin_corpus(tmp_path):
    out = tmp_path / "pt"
    assert main(["pretrain", "--preset", "tiny", "--vocab-size", "600", "--steps", "3", "--eval-every", "0",
                 "--input-length", "64", "--out", str(out), "--no-progress", "--no-plot",
                 "--threads", "1"]) == 0
    run = json.loads((out / "trainer_state.json").read_text())["run"]
    train_docs, held_docs = split_documents(builtin_documents())  # the digest: training, then held out
    assert run["text"] is None and run["corpus_sha256"] == corpus_digest(train_docs + held_docs)
    assert run["n_train"] > 5 * run["n_eval"] > 0
    assert minillm.from_pretrained(out).config.vocab_size == 600


@pytest.mark.slow
def test_lifecycle_example_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("lifecycle", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "lc"
    assert module.main(["--quick", "--out", str(out), "--threads", "1"]) == 0
    results = json.loads((out / "lifecycle.json").read_text())
    for task in ("names", "suite"):
        r = results[task]
        assert r["scratch_steps"] > r["pretrained_steps"]  # the scratch arm gets the pretraining's time too
        assert r["pretrained"]["seconds"][0] > r["scratch"]["seconds"][0]  # it starts after pretraining
    assert (out / "lifecycle.svg").read_text().startswith("<svg")
    assert (out / "names-rl" / "trainer_state.json").exists()
