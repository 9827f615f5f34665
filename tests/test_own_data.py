"""Your own data: the default budget from its size, early stopping, the overfitting note, resume.

The held-out curves here are scripted (the evaluation returns given figures), so each
expected stop is worked out by hand from the curve and the patience.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import minillm
from minillm.data import Example, encode_examples
from minillm.data.tokenizer import Tokenizer
from minillm.optim import AdamW
from minillm.runfolder import checkpoint as ckpt
from minillm.runfolder.fields import FieldChecker, StateError
from minillm.runfolder.state_file import check_early_stopping
from minillm.training import loop
from minillm.training import sft_trainer as sft_trainer_module
from minillm.training.early_stopping import EarlyStopping, Point, evaluations_since, overfitting
from minillm.training.sft import TrainConfig, TrainState
from minillm.training.sft_trainer import SFTTrainer
from minillm.workflows import SettingsError, TrainSettings, train
from minillm.workflows.own_data import default_eval_every, default_steps, plan_training
from minillm.workflows.presets import PRESETS

WORDS = "red owl pen cat dog bee fish key box cup hat sun".split()
EXAMPLES = [Example(f"Reverse the words.\n{a} {b}", f"{b} {a}", "reverse")
            for a in WORDS for b in WORDS if a != b][:48]


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train([e.prompt for e in EXAMPLES] + [e.target for e in EXAMPLES], vocab_size=120)


def tiny_model(tokenizer):
    config = minillm.T5Config(vocab_size=tokenizer.vocab_size, d_model=16, d_kv=4, num_heads=2,
                              d_ff=32, num_layers=1, relative_attention_num_buckets=8)
    return minillm.T5.init(config, np.random.default_rng(0))


# --------------------------------------------------------------------------- the budget


def settings(**kw):
    return TrainSettings(**{"data": "train.jsonl", **kw})


def test_the_default_budget_is_epochs_within_a_floor_and_a_ceiling():
    # 30 epochs of ceil(n / 32) batches: 1104 examples are 35 batches an epoch -> 1050 steps
    assert default_steps(1104, 32) == 1050
    assert default_steps(100, 32) == 300  # 4 batches x 30 = 120: raised to the floor
    assert default_steps(100_000, 32) == 20_000  # 3125 x 30: cut to the ceiling
    assert default_steps(1104, 32, per_step=2) == 525  # grad_accum x ranks batches a step
    # evaluate about once an epoch, every 25 to 250 steps
    assert default_eval_every(1104, 32) == 35
    assert default_eval_every(100, 32) == 25 and default_eval_every(100_000, 32) == 250


def test_data_gets_the_budget_the_builtin_suite_keeps_its_preset():
    small = PRESETS["small"]
    plan = plan_training(settings(), small, seed=0, n_train=1104)
    assert (plan.config.steps, plan.config.eval_every) == (1050, 35)
    assert plan.rule == EarlyStopping("loss", 5) and plan.generate_every == 5
    assert plan.lines[0].startswith("budget: 1050 steps, 30 epochs of 1104 examples")
    # given flags win: --steps, --epochs, --eval-every, --early-stopping-patience 0
    assert plan_training(settings(steps=70), small, 0, 1104).config.steps == 70
    assert plan_training(settings(epochs=2), small, 0, 1104).config.steps == 70
    assert plan_training(settings(eval_every=7), small, 0, 1104).config.eval_every == 7
    off = plan_training(settings(early_stopping_patience=0), small, 0, 1104)
    assert off.rule == EarlyStopping("loss", 0) and "no early stopping" in off.lines[-1]
    at_end = plan_training(settings(eval_every=0), small, 0, 1104)
    assert at_end.lines[-1] == "held-out evaluation only at the end (--eval-every 0): no early stopping"
    by_em = plan_training(settings(best_metric="exact_match"), small, 0, 1104)
    assert by_em.rule == EarlyStopping("exact_match", 5) and by_em.generate_every == 1
    # the built-in suite: the preset's TrainConfig, nothing else, nothing said
    builtin = plan_training(TrainSettings(), small, seed=0, n_train=100_000)
    assert builtin.config == TrainConfig(**small.training, seed=0)
    assert builtin.rule is None and builtin.lines == [] and builtin.generate_every == 1


# --------------------------------------------------------------------------- the rule


def test_is_better_by_the_chosen_metric():
    by_loss, by_em = EarlyStopping("loss"), EarlyStopping("exact_match")
    best = {"exact_match": 0.5, "loss": 2.0}
    assert by_loss.is_better({"exact_match": 0.1, "loss": 1.9}, best)
    assert not by_loss.is_better({"exact_match": 0.9, "loss": 2.0}, best)
    assert by_em.is_better({"exact_match": 0.6, "loss": 3.0}, best)
    assert by_em.is_better({"exact_match": 0.5, "loss": 1.9}, best)  # a tie: the lower loss
    assert not by_em.is_better({"loss": 0.1}, best)  # a loss-only evaluation has no exact match
    with pytest.raises(ValueError, match="metric must be one of loss, exact_match"):
        EarlyStopping("bleu")


def test_evaluations_since_the_best_count_the_evaluations_in_between():
    assert evaluations_since(best_step=40, step=100, eval_every=20) == 3  # 60, 80, 100
    assert evaluations_since(40, 40, 20) == 0
    assert evaluations_since(0, 35, 10) == 3  # 10, 20, 30


def test_overfitting_needs_a_held_out_rise_and_a_training_fall():
    low = [Point(10, 3.0, 2.0), Point(20, 2.5, 1.5)]
    assert overfitting(low + [Point(30, 2.6, 1.0)]) is None  # one rise is not yet a trend
    note = overfitting(low + [Point(30, 2.6, 1.0), Point(40, 2.7, 0.8)])
    assert note == ("overfitting: the held-out loss rose from 2.5000 (step 20, its lowest) to "
                    "2.7000 while the training loss fell from 1.5000 to 0.8000")
    assert overfitting(low + [Point(30, 2.6, 1.0), Point(40, 2.59, 0.8)]) is None  # not rising
    assert overfitting(low + [Point(30, 2.51, 1.0), Point(40, 2.52, 0.8)]) is None  # within 2%
    assert overfitting(low + [Point(30, 2.6, 1.6), Point(40, 2.7, 1.7)]) is None  # training rose too


# --------------------------------------------------------------------------- a scripted run


class Scripted(SFTTrainer):
    """SFT's trainer whose steps do not train and whose evaluations follow a script."""

    def __init__(self, tokenizer, out_losses, train_loss=lambda step: 2.0 - 0.01 * step, **kw):
        enc = encode_examples(EXAMPLES, tokenizer, 32, 16)[0]
        config = TrainConfig(steps=kw.pop("steps", 40), batch_size=8, eval_every=2, log_every=2)
        super().__init__(tiny_model(tokenizer), tokenizer, enc, config, kw.pop("state", TrainState()),
                         optimizer=AdamW(), eval_examples=EXAMPLES[:4], eval_data=enc, **kw)
        self.out_losses, self.train_loss = out_losses, train_loss

    def step(self):
        _, (self.state.epoch, self.state.batch_in_epoch) = next(self.stream)
        self.optimizer.t += 1  # as an update counts it (the checkpoint's optimizer_t)
        loss = self.train_loss(self.state.step)
        self.train_losses.append(loss)
        return {"loss": loss, "lr": 1e-3, "grad_norm": 1.0, "tokens": 10}

    def evaluate(self, kind):
        loss = self.out_losses[self.state.step // self.config.eval_every - 1]
        self.note_losses(loss)
        return {"loss": loss, "perplexity": float(np.exp(loss)), "exact_match": 0.0, "n": 4,
                "per_task": {}}


def early(patience, metric="loss"):
    return TrainState(early_stopping={"metric": metric, "patience": patience, "stopped_at": None})


def test_early_stopping_on_a_scripted_curve(tokenizer, tmp_path):
    # evaluations at steps 2, 4, ...: the lowest loss at step 6; steps 8, 10, 12 are not lower
    curve = [5.0, 4.0, 3.5, 3.6, 3.55, 3.5, 3.0]
    said = []
    trainer = Scripted(tokenizer, curve, state=early(3))
    out = loop.run(trainer, str(tmp_path), fresh=True, progress=False, log=said.append)
    assert out["step"] == 12 and out["stopped_early"] and out["final_eval"] is None
    assert out["best"] == {"exact_match": 0.0, "loss": 3.5, "step": 6}
    assert said[-1].endswith("early stopping: no lower held-out loss in 3 evaluations since step 6 "
                             "(loss 3.5000); best/ holds step 6")
    state = ckpt.read_state(tmp_path)
    assert state["step"] == 12 and state["early_stopping"] == {"metric": "loss", "patience": 3,
                                                               "stopped_at": 12}
    assert ckpt.best_step(tmp_path) == 6
    # without patience the same curve runs to its end
    trainer = Scripted(tokenizer, curve + [2.0] * 20, state=early(0))
    assert loop.run(trainer, str(tmp_path / "all"), fresh=True, progress=False, log=said.append)[
        "step"] == 40


def test_the_overfitting_note_is_said_once(tokenizer, tmp_path):
    curve = [5.0, 4.0, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0]  # rising from step 6 while the training falls
    said = []
    trainer = Scripted(tokenizer, curve, steps=16, state=early(0))
    loop.run(trainer, str(tmp_path), fresh=True, progress=False, log=said.append)
    notes = [line for msg in said for line in msg.splitlines() if line.startswith("overfitting")]
    assert len(notes) == 1 and notes[0].startswith("overfitting: the held-out loss rose from "
                                                   "3.5000 (step 6, its lowest) to 3.7000")
    assert said[4] == "step 10: eval loss 3.7000, exact match 0.000\n" + notes[0]


def test_builtin_rule_is_unchanged_and_unsaved(tokenizer, tmp_path):
    """Without early stopping the best is the higher exact match and the state has no new key."""
    trainer = Scripted(tokenizer, [3.0] * 4, steps=8)
    loop.run(trainer, str(tmp_path), fresh=True, progress=False, log=lambda m: None)
    raw = json.loads((tmp_path / "trainer_state.json").read_text())
    assert "early_stopping" not in raw and raw["best"] == {"exact_match": 0.0, "loss": 3.0, "step": 2}


def test_the_state_checks_early_stopping_in_one_line():
    c = FieldChecker("t/trainer_state.json")
    check_early_stopping(c, {"metric": "loss", "patience": 2, "stopped_at": 10}, step=10)
    bad = [({"metric": "bleu", "patience": 2, "stopped_at": None}, "early_stopping.metric"),
           ({"metric": "loss", "patience": -1, "stopped_at": None}, "early_stopping.patience"),
           ({"metric": "loss", "patience": 1, "stopped_at": 11}, "early_stopping.stopped_at"),
           ({"metric": "loss", "patience": 1}, "missing key")]
    for rule, words in bad:
        with pytest.raises(StateError, match=words):
            check_early_stopping(c, rule, step=10)


# --------------------------------------------------------------------------- the workflow


def write_jsonl(path, examples):
    path.write_text("".join(json.dumps({"prompt": e.prompt, "completion": e.target}) + "\n"
                            for e in examples))
    return str(path)


@pytest.fixture
def scripted_eval(monkeypatch):
    """The trainer's held-out loss follows CURVE (by evaluation), the final one is 9.0."""
    real = sft_trainer_module.evaluate

    def fake(model, tokenizer, examples, encoded, *args, decode=True, **kw):
        result = real(model, tokenizer, examples, encoded, *args, decode=decode, **kw)
        calls.append(decode)
        result["loss"] = CURVE[len(calls) - 1] if len(calls) <= len(CURVE) else 9.0
        return result

    calls: list[bool] = []
    monkeypatch.setattr(sft_trainer_module, "evaluate", fake)
    return calls


CURVE = [5.0, 4.0, 4.5, 4.6, 4.7]  # lowest at the 2nd evaluation; patience 3 stops at the 5th


def own_run(tmp_path, out, **kw):
    data = write_jsonl(tmp_path / "train.jsonl", EXAMPLES[:40])
    held = write_jsonl(tmp_path / "val.jsonl", EXAMPLES[40:])
    s = TrainSettings(preset="tiny", data=data, eval_data=held, out=str(out), eval_every=3,
                      early_stopping_patience=3, no_progress=True, no_plot=True, **kw)
    said = []
    return train(s, log=said.append), said


def test_own_data_run_stops_keeps_best_and_refuses_resume(tmp_path, scripted_eval):
    result, said = own_run(tmp_path, tmp_path / "run")
    # 40 examples, batch 16: 3 batches an epoch x 30 = 90 steps -> the floor, 300
    assert result.steps == 300 and "budget: 300 steps, 100 epochs of 40 examples (--data without " \
        "--steps or --epochs: 30 epochs, within 300-20,000 steps)" in said
    assert result.step == 15 and result.best["step"] == 6 and result.early_stop.startswith(
        "early stopping: no lower held-out loss in 3 evaluations since step 6")
    # the periodic evaluations decode every 5th (the 5th), best/'s final evaluation decodes
    assert scripted_eval == [False, False, False, False, True, True]
    assert result.final_eval["loss"] == 9.0 and "exact_match" in result.final_eval
    best = minillm.from_pretrained(result.best_dir)
    step6 = [r for r in map(json.loads, open(tmp_path / "run" / "metrics.jsonl")) if r["step"] == 6]
    assert step6[-1]["kind"] == "eval" and "exact_match" not in step6[-1]  # the loss alone
    with pytest.raises(SettingsError, match=r"early stopping ended this run at step 15 \(best/ holds "
                       r"step 6\); there is nothing to resume"):
        train(TrainSettings(out=str(tmp_path / "run"), resume=True), log=lambda m: None)
    assert best.config.vocab_size > 0 and ckpt.read_state(tmp_path / "run")["step"] == 15


def test_a_resumed_run_counts_its_patience_on(tmp_path, scripted_eval):
    """Stopped at step 9 (3 evaluations in) and resumed: it stops where the whole run stops."""
    stopped, _ = own_run(tmp_path, tmp_path / "run", stop_after=9)
    assert stopped.step == 9 and stopped.early_stop is None
    del scripted_eval[:]  # the resumed run's evaluations continue the curve
    scripted_eval.extend([True] * 3)
    s = TrainSettings(out=str(tmp_path / "run"), resume=True, no_progress=True, no_plot=True)
    result = train(s, log=lambda m: None)
    assert result.step == 15 and result.best["step"] == 6 and result.early_stop is not None
    assert os.path.isdir(result.best_dir)


def test_bad_stopping_flags_are_one_line_and_exit_2(tmp_path, capsys):
    from minillm.cli import main

    data = write_jsonl(tmp_path / "train.jsonl", EXAMPLES[:40])
    for flags, words in ((["--early-stopping-patience", "-1"], "--early-stopping-patience must be an "
                          "integer >= 0, got -1"), (["--best-metric", "bleu"], "--best-metric: invalid "
                                                    "choice: 'bleu'")):
        assert main(["train", "--data", data, "--out", str(tmp_path / "run"), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0]
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="--best-metric must be one of loss, exact_match"):
        train(TrainSettings(data=data, best_metric="bleu", out=str(tmp_path / "run")))


@pytest.mark.skipif(not os.path.isdir("/usr/share/iso-codes/json"), reason="needs Debian's iso-codes")
def test_the_iso_names_example_builds_its_data_set(tmp_path):
    import subprocess
    import sys

    from minillm.data import load_jsonl

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "examples", "iso_names.py"), "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    train_ex, held = load_jsonl(tmp_path / "train.jsonl"), load_jsonl(tmp_path / "val.jsonl")
    assert len(held) == -(-(len(train_ex) + len(held)) // 9) and len(train_ex) > 1000
    by_input = {e.prompt: e.target for e in train_ex + held}
    assert by_input["Give the French name of this country.\nGermany"] == "Allemagne"
