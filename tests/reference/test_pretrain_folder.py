"""A ``minillm pretrain`` run folder is a Hugging Face folder: transformers loads its model and its
tokenizer, computes the same span-corruption loss, and fills in a sentinel as minillm does."""

from __future__ import annotations

import random

import numpy as np
import pytest

import minillm
from minillm.cli import main
from minillm.data.tokenizer import Tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    r = random.Random(0)
    words = "the a of to in is and for with return value list string file object path name".split()
    folder = tmp_path_factory.mktemp("pt")
    for name, n in (("train.txt", 150), ("eval.txt", 20)):
        (folder / name).write_text("".join(" ".join(r.choice(words) for _ in range(30)) + ".\n\n"
                                           for _ in range(n)))
    out = folder / "run"
    assert main(["pretrain", "--text", str(folder / "train.txt"), "--eval-text", str(folder / "eval.txt"),
                 "--preset", "tiny", "--vocab-size", "300", "--input-length", "32", "--steps", "4",
                 "--batch-size", "4", "--eval-every", "0", "--out", str(out), "--no-progress",
                 "--no-plot"]) == 0
    return out


def test_transformers_loads_the_run_folder(run_dir):
    """AutoTokenizer (the folder's tokenizer_config names PreTrainedTokenizerFast) and T5TokenizerFast
    on the file keep tokenizer.json's pipeline; (T5TokenizerFast.from_pretrained rebuilds T5's own
    whitespace pre-tokenizer in transformers 5, and so splits digits and newlines otherwise)."""
    tm = transformers.T5ForConditionalGeneration.from_pretrained(run_dir).eval()
    ours = Tokenizer.from_file(run_dir / "tokenizer.json")
    text = "the <extra_id_0> of a list <extra_id_1> value 42.\nname"
    for theirs in (transformers.AutoTokenizer.from_pretrained(run_dir),
                   transformers.T5TokenizerFast(tokenizer_file=str(run_dir / "tokenizer.json"))):
        assert theirs(text).input_ids == ours.encode(text)
        assert theirs.convert_tokens_to_ids("<extra_id_0>") == len(theirs) - 1 == ours.vocab_size - 1
        assert theirs.decode(ours.encode(text), skip_special_tokens=True) == ours.decode(ours.encode(text))
    model = minillm.from_pretrained(run_dir)
    x = np.array([ours.encode(text)])
    y = np.array([ours.encode("<extra_id_0> name <extra_id_1> is")])
    with torch.no_grad():
        loss = tm(input_ids=torch.tensor(x), labels=torch.tensor(y)).loss.item()
    assert model.loss(x, y) == pytest.approx(loss, rel=1e-5)
    ids = minillm.generate(model, x, max_new_tokens=6)
    with torch.no_grad():
        ref = tm.generate(torch.tensor(x), max_new_tokens=6, do_sample=False, num_beams=1).numpy()
    np.testing.assert_array_equal(ids[:, : ref.shape[1]], ref)
