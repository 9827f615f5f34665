"""Each ``minillm`` command as a Python call (``minillm.workflows``): settings in, results out."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from minillm import seeds
from minillm.parallel import quiet
from minillm.workflows import (
    DataSettings,
    EvalSettings,
    GenerateSettings,
    RLSettings,
    SettingsError,
    TrainSettings,
    evaluate,
    generate,
    make_data,
    rl,
    train,
)

TINY = dict(preset="tiny", steps=4, n_train=64, n_eval=9, eval_every=0, no_progress=True,
            no_plot=True)
SETTINGS = {"train": TrainSettings, "rl": RLSettings, "eval": EvalSettings,
            "generate": GenerateSettings, "data": DataSettings}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny SFT run: (its folder, the TrainResult)."""
    out = tmp_path_factory.mktemp("wf") / "sft"
    return out, train(TrainSettings(out=str(out), **TINY), log=quiet)


def _subparsers():
    import argparse

    from minillm.cli import build_parser

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", list(SETTINGS))
def test_settings_have_one_field_per_flag_with_its_default(command):
    parser = _subparsers()[command]
    # what each flag gives when not passed (a PROMPT... positional parses to [], a tuple here)
    flags = {a.dest: () if a.nargs == "*" else a.default for a in parser._actions
             if a.dest != "help"}
    flags.pop("list", None)  # minillm data --list is task_samples(), not a setting
    fields = {f.name: f.default for f in dataclasses.fields(SETTINGS[command])}
    assert set(flags) == set(fields)
    for name, default in flags.items():
        if fields[name] is not dataclasses.MISSING:  # a required positional has no default
            assert fields[name] == default, name


def test_train_returns_the_final_eval_that_evaluating_the_folder_gives(tiny_run):
    import minillm

    out, result = tiny_run
    assert (result.step, result.steps, result.stopped_early, result.resumed) == (4, 4, False, False)
    assert result.out == str(out) and result.seconds > 0
    model = minillm.from_pretrained(out)
    assert model.config.d_model == 32
    # minillm eval of a run folder evaluates the run's held-out split with the run's limits
    again = evaluate(EvalSettings(dir=str(out), no_progress=True))
    assert again["data"] == "run:heldout"
    final = result.final_eval
    assert again["n"] == final["n"] == 9
    assert again["exact_match"] == final["exact_match"]
    assert again["loss"] == pytest.approx(final["loss"], rel=1e-5)
    assert {t: r["n"] for t, r in again["per_task"].items()} == \
        {t: r["n"] for t, r in final["per_task"].items()}
    assert result.best is None or result.best_dir == str(out / "best")


def test_train_stopped_and_resumed_is_the_uninterrupted_run(tiny_run, tmp_path):
    import minillm

    out, _ = tiny_run
    b = str(tmp_path / "b")
    stopped = train(TrainSettings(out=b, stop_after=2, **TINY), log=quiet)
    assert stopped.stopped_early and stopped.final_eval is None and stopped.step == 2
    notes = []
    resumed = train(TrainSettings(out=b, resume=True, no_progress=True, no_plot=True), log=notes.append)
    assert resumed.resumed and resumed.step == 4 and resumed.final_eval is not None
    assert any(n.startswith(f"resuming {b} at step 2 of 4") for n in notes), notes
    a, c = minillm.from_pretrained(out), minillm.from_pretrained(b)
    for k, v in a.params.items():
        np.testing.assert_array_equal(c.params[k], v, err_msg=k)


def test_train_checks_settings_before_touching_the_folder(tiny_run, tmp_path):
    out, _ = tiny_run
    with pytest.raises(SettingsError, match="already holds a run"):
        train(TrainSettings(out=str(out), **TINY))
    with pytest.raises(SettingsError, match="--steps or --epochs"):
        train(TrainSettings(out=str(tmp_path / "x"), steps=3, epochs=1.0))
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        train(TrainSettings(out=str(tmp_path / "x"), preset="huge"))
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        train(TrainSettings(out=str(tmp_path / "x"), resume=True))
    assert not (tmp_path / "x").exists()


def _by_hand(folder, prompt, **gen):
    """Tokenize, generate, cut at </s> and decode one prompt, without the workflow."""
    import minillm
    from minillm.data.tokenizer import Tokenizer
    from minillm.generation import generate as generate_ids

    tok = Tokenizer.from_file(folder / "tokenizer.json")
    model = minillm.from_pretrained(folder)
    ids = np.array([tok.encode(prompt, add_eos=True)])  # (1, S)
    texts = []
    for row in generate_ids(model, ids, np.ones_like(ids), **gen):
        row = [int(i) for i in row[1:]]
        row = row[:row.index(1)] if 1 in row else row  # </s> is id 1
        texts.append(tok.decode(row, skip_special_tokens=True))
    return texts


def test_generate_is_tokenize_generate_decode(tiny_run):
    out, _ = tiny_run
    prompts = ["Reverse the order of the words.\nred owl pen", "Sort the words alphabetically.\nb a"]
    got = generate(GenerateSettings(dir=str(out), prompts=prompts, max_new_tokens=6, num_beams=2,
                                    num_return_sequences=2))
    assert len(got) == 4 and all(isinstance(t, str) for t in got)
    expected = [t for p in prompts for t in _by_hand(out, p, max_new_tokens=6, num_beams=2,
                                                     num_return_sequences=2)]
    assert got == expected


def test_cli_generate_takes_prompts_after_flags(tiny_run, capsys):
    """``minillm generate DIR --max-new-tokens 6 P1 P2``: argparse alone would refuse P1 P2."""
    from minillm.cli import main

    out, _ = tiny_run
    prompts = ["Reverse the order of the words.\nred owl pen", "Sort the words alphabetically.\nb a"]
    assert main(["generate", str(out), "--max-new-tokens", "6", *prompts]) == 0
    expected = [t.replace("\n", "\\n") for p in prompts for t in _by_hand(out, p, max_new_tokens=6)]
    assert capsys.readouterr().out.splitlines() == expected
    assert main(["generate", str(out), "--max-new-tokens", "6", "--bogus", "x"]) == 2
    assert capsys.readouterr().err.strip() == "minillm: error: unrecognized arguments: --bogus x"


def test_generate_samples_on_the_generate_stream(tiny_run):
    out, _ = tiny_run
    prompt = "Uppercase the text.\nred owl"
    settings = GenerateSettings(dir=str(out), prompts=[prompt], do_sample=True, top_k=20,
                                max_new_tokens=8, seed=3)
    got = generate(settings)
    assert got == generate(settings)
    assert got == _by_hand(out, prompt, do_sample=True, top_k=20, max_new_tokens=8,
                           rng=seeds.generator(3, "generate"))


def test_generate_reads_generation_config_and_checks_the_folder(tiny_run, tmp_path):
    import shutil

    out, _ = tiny_run
    local = tmp_path / "m"
    shutil.copytree(out, local)
    (local / "generation_config.json").write_text(json.dumps({"max_new_tokens": 3, "num_beams": 2}))
    prompt = "Reverse the order of the words.\nred owl pen"
    assert generate(GenerateSettings(dir=str(local), prompts=[prompt])) == \
        _by_hand(out, prompt, max_new_tokens=3, num_beams=2)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        generate(GenerateSettings(dir=str(tmp_path / "nowhere"), prompts=["x"]))


def test_evaluate_writes_predictions_of_the_eval_split(tiny_run, tmp_path):
    from minillm.data.tasks import builtin_dataset

    out, _ = tiny_run
    preds = tmp_path / "preds.jsonl"
    result = evaluate(EvalSettings(dir=str(out), n=12, tasks=["qa", "uppercase"], max_new_tokens=16,
                                   predictions=str(preds), no_progress=True))
    assert result["n"] == 12 and result["data"] == "builtin:eval"
    assert result["predictions"] == str(preds)
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    heldout = builtin_dataset(12, seed=0, split="eval", tasks=["qa", "uppercase"])
    assert [(r["prompt"], r["target"], r["task"]) for r in rows] == \
        [(ex.prompt, ex.target, ex.task) for ex in heldout]
    assert set(result["per_task"]) == {"qa", "uppercase"}
    with pytest.raises(FileNotFoundError, match="not a folder"):
        evaluate(EvalSettings(dir=str(tmp_path / "nothing")))


def test_rl_tunes_from_a_folder_and_reports_before_and_after(tiny_run, tmp_path):
    import minillm

    out, _ = tiny_run
    rl_out = tmp_path / "rl"
    settings = RLSettings(dir=str(out), out=str(rl_out), tasks="sort_words", steps=2, n_train=20,
                          n_eval=6, batch_size=4, k=2, max_new_tokens=4, eval_every=0,
                          no_progress=True)
    result = rl(settings, log=quiet)
    assert (result.step, result.steps, result.stopped_early) == (2, 2, False)
    for ev in (result.initial_eval, result.final_eval):
        assert ev["n"] == 6 and set(ev["per_task"]) == {"sort_words"} and 0 <= ev["reward"] <= 1
    assert minillm.from_pretrained(rl_out).config == minillm.from_pretrained(out).config
    assert (rl_out / "reference" / "config.json").exists()
    with pytest.raises(SettingsError, match="already holds a run"):
        rl(settings)
    with pytest.raises(SettingsError, match="give the starting model folder DIR"):
        rl(RLSettings(out=str(tmp_path / "x")))
    with pytest.raises(SettingsError, match="--out must differ from DIR"):
        rl(RLSettings(dir=str(out), out=str(out) + "/", overwrite=True))


def test_make_data_writes_what_it_returns(tmp_path):
    from minillm.data import load_jsonl

    path = tmp_path / "qa.jsonl"
    examples = make_data(DataSettings(task="qa", n=7, split="eval", out=str(path)))
    assert len(examples) == 7 and {ex.task for ex in examples} == {"qa"}
    assert load_jsonl(path) == examples
    assert make_data(DataSettings(n=5, seed=1)) != make_data(DataSettings(n=5, seed=2))
    with pytest.raises(ValueError, match="--n must be positive"):
        make_data(DataSettings(n=0))
