"""Rewards: the built-in scores, task verifiers, user callables, and failures reported with the sample."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from minillm.data import Example
from minillm.evaluation.rewards import BUILTIN, Reward, RewardError, get_reward, score_outputs
from minillm.metrics import rouge, sentence_bleu

EX = Example("Reverse the words.\nred owl pen", "pen owl red", "reverse_words")
CODE = Example("Write a Python expression for this description.\ntake x, add 3, then multiply by y",
               "(x + 3) * y", "code_expression")


def test_builtin_rewards_are_on_a_0_1_scale():
    assert get_reward("exact_match")(EX, "  pen owl red ") == 1.0
    assert get_reward("exact_match")(EX, "pen red owl") == 0.0
    assert get_reward("bleu")(EX, "pen owl red") == pytest.approx(1.0)
    assert get_reward("bleu")(EX, "pen owl cat") == pytest.approx(
        sentence_bleu("pen owl cat", ["pen owl red"]) / 100)
    assert get_reward("rouge_l")(EX, "pen red") == pytest.approx(
        rouge("pen red", "pen owl red", ("rougeL",))["rougeL"].fmeasure)
    assert 0 < get_reward("rouge_l")(EX, "pen red") < 1
    for name in BUILTIN:
        r = get_reward(name)(EX, "pen owl red")
        assert 0.0 <= r <= 1.0


def test_verifier_runs_the_code_in_the_restricted_evaluator():
    verify = get_reward("verify")
    assert verify(CODE, "(x + 3) * y") == 1.0
    assert verify(CODE, "y * (3 + x)") == 1.0  # equivalent, not equal: exact match says 0
    assert get_reward("exact_match")(CODE, "y * (3 + x)") == 0.0
    assert verify(CODE, "x + 3 * y") == 0.0
    assert verify(CODE, "__import__('os').system('true')") == 0.0
    assert get_reward("task:code_expression")(Example(CODE.prompt, CODE.target), "y*(x+3)") == 1.0
    with pytest.raises(ValueError, match="built-in task"):
        verify(Example("p", "t", task="mine"), "t")
    with pytest.raises(ValueError, match="unknown task"):
        get_reward("task:nope")


def test_user_callable_module_function(tmp_path, monkeypatch):
    (tmp_path / "myreward.py").write_text(
        "def score(prompt, output, reference):\n"
        "    return float(len(output) <= len(reference)) + 0.5 * prompt.startswith('Reverse')\n"
        "def bad(prompt, output, reference):\n"
        "    raise KeyError('boom')\n"
        "def nan(prompt, output, reference):\n"
        "    return float('nan')\n"
        "def text(prompt, output, reference):\n"
        "    return 'high'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path)] + sys.path)
    r = get_reward("myreward:score")
    assert r.name == "myreward:score"
    np.testing.assert_allclose(score_outputs(r, [EX, EX], ["pen", "pen owl red owl"]), [1.5, 0.5])

    with pytest.raises(RewardError) as e:
        score_outputs(get_reward("myreward:bad"), [EX, EX], ["ok", "the output"])
    msg = str(e.value)
    assert "myreward:bad" in msg and "KeyError" in msg and "boom" in msg
    assert "'ok'" in msg and "red owl pen" in msg  # the first failing sample: prompt and output
    for fn, what in (("nan", "nan"), ("text", "'high'")):
        with pytest.raises(RewardError, match="not a finite number") as e:
            score_outputs(get_reward(f"myreward:{fn}"), [EX], ["xyz"])
        assert what in str(e.value) and "'xyz'" in str(e.value) and "red owl pen" in str(e.value)


@pytest.mark.parametrize("spec,match", [
    ("nosuchreward", "unknown reward"), ("no_such_module_xyz:f", "cannot import"),
    ("math:nope", "has no"), ("math:pi", "not callable"), (":f", "module:function"),
])
def test_bad_reward_names(spec, match):
    with pytest.raises(ValueError, match=match):
        get_reward(spec)


def test_infinite_reward_and_python_callables():
    inf = Reward("inf", lambda ex, out: math.inf)
    with pytest.raises(RewardError, match="'inf' returned inf"):
        score_outputs(inf, [EX], ["x"])
    r = get_reward(lambda ex, out: np.float32(0.25))  # a numpy scalar is a number
    assert score_outputs(r, [EX], ["x"]).tolist() == [0.25]
    assert score_outputs(get_reward(lambda ex, out: True), [EX], ["x"]).tolist() == [1.0]
    with pytest.raises(ValueError, match="2 examples but 1 outputs"):
        score_outputs(r, [EX, EX], ["x"])
