"""The built-in task suite: correct answers, disjoint splits, determinism, safe evaluation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from minillm.data import Example, load_jsonl
from minillm.data.tasks import (
    DEFAULT_SUITE,
    TASKS,
    builtin_dataset,
    english_words,
    french_words,
    instance_split,
    resolve_tasks,
    task_counts,
)
from minillm.data.tasks.codegen import build_expression, describe
from minillm.data.tasks.safe_eval import SafeEvalError, safe_eval

# Written by hand from French grammar (traditional spelling), not from the code.
FRENCH = {
    0: "zéro",
    1: "un",
    16: "seize",
    17: "dix-sept",
    21: "vingt et un",
    22: "vingt-deux",
    31: "trente et un",
    61: "soixante et un",
    70: "soixante-dix",
    71: "soixante et onze",
    72: "soixante-douze",
    77: "soixante-dix-sept",
    80: "quatre-vingts",
    81: "quatre-vingt-un",
    89: "quatre-vingt-neuf",
    90: "quatre-vingt-dix",
    91: "quatre-vingt-onze",
    99: "quatre-vingt-dix-neuf",
    100: "cent",
    101: "cent un",
    171: "cent soixante et onze",
    200: "deux cents",
    201: "deux cent un",
    280: "deux cent quatre-vingts",
    281: "deux cent quatre-vingt-un",
    300: "trois cents",
    315: "trois cent quinze",
    999: "neuf cent quatre-vingt-dix-neuf",
}

ENGLISH = {
    0: "zero",
    13: "thirteen",
    40: "forty",
    45: "forty-five",
    100: "one hundred",
    101: "one hundred one",
    342: "three hundred forty-two",
    990: "nine hundred ninety",
    999: "nine hundred ninety-nine",
}


@pytest.mark.parametrize("n, words", sorted(FRENCH.items()))
def test_french_words(n, words):
    assert french_words(n) == words


@pytest.mark.parametrize("n, words", sorted(ENGLISH.items()))
def test_english_words(n, words):
    assert english_words(n) == words


def test_number_words_reject_out_of_range():
    for bad in (-1, 1000, 2.5):
        with pytest.raises(ValueError):
            french_words(bad)
        with pytest.raises(ValueError):
            english_words(bad)


def test_number_words_are_distinct():
    for fn in (english_words, french_words):
        assert len({fn(n) for n in range(1000)}) == 1000


def test_tasks_have_the_interface():
    assert len(TASKS) >= 8
    for name, task in TASKS.items():
        assert task.name == name
        assert 4 <= len(task.instructions) <= 6
        assert not set(task.instructions) & set(task.heldout_instructions)
    assert sum(bool(t.heldout_instructions) for t in TASKS.values()) >= 4


@pytest.mark.parametrize("name", sorted(TASKS))
def test_sample_verifies_its_own_target_and_rejects_others(name):
    task, rng = TASKS[name], np.random.default_rng(0)
    for split in ("train", "eval"):
        for _ in range(20):
            ex = task.sample(rng, split)
            assert ex.task == name and "\n" in ex.prompt
            assert task.verify(ex, ex.target) == 1.0
            assert task.verify(ex, "  " + ex.target + "\n") == 1.0  # surrounding space ignored
            assert task.verify(ex, ex.target + " extra") == 0.0
            assert task.verify(ex, "") == 0.0


def test_answers_are_correct():
    rng = np.random.default_rng(1)
    body = lambda ex: ex.prompt.split("\n")[1]
    for _ in range(30):
        ex = TASKS["reverse_words"].sample(rng)
        words = body(ex).split()
        assert ex.target.split() == words[::-1] and len(set(words)) == len(words) >= 2
        ex = TASKS["sort_words"].sample(rng)
        assert ex.target.split() == sorted(body(ex).split())
        ex = TASKS["largest_number"].sample(rng)
        assert int(ex.target) == max(int(v) for v in body(ex).split(", "))
        ex = TASKS["count_words"].sample(rng)
        assert int(ex.target) == len(body(ex).split(", "))
        ex = TASKS["uppercase"].sample(rng)
        assert ex.target == body(ex).upper() != body(ex)
        ex = TASKS["number_to_french"].sample(rng)
        assert ex.target == french_words(int(body(ex)))
        ex = TASKS["number_to_english"].sample(rng)
        assert ex.target == english_words(int(body(ex)))


def qa_parts(ex: Example) -> tuple[list[tuple[str, ...]], str]:
    """((name, count, item) of each fact, the question) of a qa or qa_who prompt, read back by hand."""
    context, question = ex.prompt.split("\n")[1].split(" Question: ")
    words = [fact.removesuffix(".").split() for fact in context.split(". ")]  # N has C I
    assert all(len(w) == 4 and w[1] == "has" for w in words), context
    facts = [(w[0], w[2], w[3]) for w in words]
    return facts, question


def test_qa_answer_is_the_count_of_the_fact_the_question_names():
    rng = np.random.default_rng(2)
    asked = []
    for _ in range(300):
        ex = TASKS["qa"].sample(rng)
        facts, question = qa_parts(ex)
        assert len(facts) == 2 and question.startswith("How many ") and question.endswith("?")
        for column in zip(*facts, strict=True):  # names, counts, items: distinct in a context
            assert len(set(column)) == 2, facts
        item = question.removeprefix("How many ").removesuffix("?")
        (fact,) = [f for f in facts if f[2] == item]
        assert ex.target == fact[1]
        asked.append(facts.index(fact))
    # the asked fact is uniform over the two: reading the context alone is right half the time
    assert all(125 <= asked.count(j) <= 175 for j in range(2)), [asked.count(j) for j in range(2)]


def test_qa_ignoring_the_question_is_chance():
    """Any answer that reads the context but not the question (here: a fact's count) scores 1/2."""
    rng = np.random.default_rng(5)
    examples = [TASKS["qa"].sample(rng, "eval") for _ in range(3000)]
    assert TASKS["qa"].chance == 0.5
    for pick_fact in (lambda facts: facts[0], lambda facts: facts[1],
                      lambda facts: max(facts, key=lambda f: int(f[1]))):  # the larger count
        score = np.mean([TASKS["qa"].verify(ex, pick_fact(qa_parts(ex)[0])[1]) for ex in examples])
        assert abs(score - 0.5) < 0.03, score


def test_qa_who_answer_is_the_name_of_the_fact_the_question_names():
    rng = np.random.default_rng(3)
    for _ in range(100):
        ex = TASKS["qa_who"].sample(rng)
        facts, question = qa_parts(ex)
        assert len(facts) == 2 and question.startswith("Who has the ")
        item = question.removeprefix("Who has the ").removesuffix("?")
        assert [f[0] for f in facts if f[2] == item] == [ex.target]
    assert TASKS["qa_who"].chance == 0.5


def test_the_default_suite_is_every_task_but_qa_who():
    assert set(DEFAULT_SUITE) == set(TASKS) - {"qa_who"} and len(DEFAULT_SUITE) == 9
    assert resolve_tasks(None) == resolve_tasks("all") == list(DEFAULT_SUITE)
    assert {ex.task for ex in builtin_dataset(200, seed=0)} == set(DEFAULT_SUITE)
    assert {ex.task for ex in builtin_dataset(80, seed=0, split="eval")} == set(DEFAULT_SUITE)
    assert resolve_tasks("qa_who") == ["qa_who"]
    assert resolve_tasks("all,qa_who") == [*DEFAULT_SUITE, "qa_who"]
    assert resolve_tasks(" qa , uppercase,qa") == ["qa", "uppercase"]
    with pytest.raises(ValueError, match="unknown task"):
        resolve_tasks("qa,nope")


def test_code_reference_matches_description():
    expr = build_expression("x", [("add", "3"), ("mul", "y")])
    assert expr == "(x + 3) * y"
    assert describe("x", [("add", "3"), ("mul", "y")]) == "take x, add 3, then multiply by y"
    assert build_expression("z", [("mul", "2"), ("add", "x"), ("mod", "5")]) == "(z * 2 + x) % 5"
    assert build_expression("y", [("sub", "x"), ("sub", "2")]) == "y - x - 2"
    assert build_expression("y", [("floordiv", "2"), ("mul", "3")]) == "y // 2 * 3"


def test_code_verifier_is_semantic():
    task = TASKS["code_expression"]
    ex = Example("take x, add 3, then multiply by y", "(x + 3) * y", task=task.name)
    assert task.verify(ex, "y * (3 + x)") == 1.0
    assert task.verify(ex, "x * y + 3 * y") == 1.0
    assert task.verify(ex, "x + 3 * y") == 0.0
    assert task.verify(ex, "(x + 3) * z") == 0.0
    assert task.verify(ex, "(x + 3) * y + w") == 0.0  # unknown variable
    assert task.verify(ex, "__import__('os').getcwd()") == 0.0
    assert task.verify(ex, "(x + 3) *") == 0.0  # syntax error
    assert task.verify(ex, "(x + 3) * y // 0") == 0.0


@pytest.mark.parametrize("target", ["(x + 3) *", "w + 1", "x // (y - y)", "__import__('os')", ""])
def test_code_verifier_reports_a_reference_that_does_not_evaluate(target):
    """Before, such a reference was skipped on every assignment and any output scored 1.0."""
    task = TASKS["code_expression"]
    ex = Example("Write it.\ntake x, add 3", target, task=task.name)
    for output in ("x + 3", "anything", target):
        with pytest.raises(ValueError, match="code_expression example 'Write it.\\\\ntake x, add 3': "
                                             "the reference .* does not evaluate") as e:
            task.verify(ex, output)
        assert repr(target) in str(e.value) and "\n" not in str(e.value)


def test_code_verifier_skips_only_the_assignments_where_the_reference_fails():
    """x // y fails where y = 0 but not elsewhere: compared on the rest, not an error."""
    task = TASKS["code_expression"]
    ex = Example("divide", "x // y", task=task.name)
    assert task.verify(ex, "x // y") == 1.0 and task.verify(ex, "x * y") == 0.0


def test_a_bad_reference_from_a_jsonl_file_names_its_line(tmp_path):
    path = tmp_path / "code.jsonl"
    path.write_text('{"prompt": "take x", "completion": "x + 1", "task": "code_expression"}\n'
                    '{"prompt": "take y", "completion": "y +", "task": "code_expression"}\n')
    good, bad = load_jsonl(path)
    assert TASKS["code_expression"].verify(good, "1 + x") == 1.0
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}, line 2: code_expression example "
                                         r"'take y': the reference 'y \+' does not evaluate"):
        TASKS["code_expression"].verify(bad, "y")


def test_the_verify_reward_reports_a_bad_reference_with_the_sample():
    from minillm.evaluation.rewards import RewardError, get_reward, score_outputs

    ex = Example("Write it.\ntake x", "x +", task="code_expression")
    with pytest.raises(RewardError, match=r"'x \+' does not evaluate") as e:
        score_outputs(get_reward("verify"), [ex], ["x"])
    assert "\n" not in str(e.value)


def test_safe_eval_computes():
    assert safe_eval("(x + 3) * y", {"x": 1, "y": 2}) == 8
    assert safe_eval("-x // 2 % 3", {"x": 5}) == (-5 // 2) % 3
    assert safe_eval("x ** 2 - 1", {"x": 7}) == 48
    assert safe_eval("1 < x <= 3", {"x": 3}) is True
    assert safe_eval("2.5 * x", {"x": 2}) == 5.0


@pytest.mark.parametrize(
    "source",
    [
        "print(x)",  # call
        "__import__('os').system('true')",  # call + attribute
        "import os",  # statement
        "x.real",  # attribute
        "[x][0]",  # subscript
        "lambda: x",
        "w + 1",  # name not allowed
        "'a' * 3",  # string literal
        "True + x",  # bool literal
        "x / 2",  # true division not allowed
        "x ** 100",  # exponent too large
        "x ** y",  # non-literal exponent
        "2 ** 1000000",  # huge power
        "x if x else 1",
        "x & 1",
        "(x := 3)",
        " + ".join(["x"] * 200),  # too many nodes
        "9" * 400,  # integer too large
    ],
)
def test_safe_eval_refuses(source):
    with pytest.raises(SafeEvalError):
        safe_eval(source, {"x": 3, "y": 2})


def test_safe_eval_bounds_integer_growth_and_zero_division():
    big = "*".join(["99999999999999999999"] * 14)  # 20 digits ** 14 > 256 bits
    with pytest.raises(SafeEvalError, match="bits"):
        safe_eval(big, {})
    with pytest.raises(SafeEvalError, match="arithmetic"):
        safe_eval("x // 0", {"x": 1})


def test_builtin_dataset_is_deterministic_and_balanced():
    a = builtin_dataset(180, seed=3)
    assert a == builtin_dataset(180, seed=3)
    assert a != builtin_dataset(180, seed=4)
    counts = {name: sum(ex.task == name for ex in a) for name in TASKS}
    assert counts.pop("qa_who") == 0 and set(counts.values()) == {180 // len(DEFAULT_SUITE)}
    sub = builtin_dataset(10, seed=0, tasks=["qa", "uppercase"])
    assert {ex.task for ex in sub} == {"qa", "uppercase"}
    with pytest.raises(ValueError, match="unknown task"):
        builtin_dataset(5, tasks=["nope"])
    with pytest.raises(ValueError, match="split"):
        builtin_dataset(5, split="test")


def test_task_weights_set_the_mix_and_equal_weights_keep_the_balanced_suite():
    names = list(DEFAULT_SUITE)
    # equal weights: n // k each, one more for the first n % k (the balanced suite)
    assert task_counts(22, names) == {t: 3 if i < 4 else 2 for i, t in enumerate(names)}
    assert task_counts(22, names, {t: 2.0 for t in names}) == task_counts(22, names)
    assert builtin_dataset(50, seed=1, weights={t: 1 for t in names}) == builtin_dataset(50, seed=1)
    # qa three times as often: 110 examples = 30 qa + 10 of each of the other eight
    mixed = builtin_dataset(110, seed=1, weights={"qa": 3})
    assert {t: sum(ex.task == t for ex in mixed) for t in names} == {
        t: 30 if t == "qa" else 10 for t in names}
    # largest remainder: 10 * (1, 1, 2) / 4 = (2.5, 2.5, 5) -> (3, 2, 5), the tie to the earlier task
    assert task_counts(10, ["a", "b", "c"], {"c": 2}) == {"a": 3, "b": 2, "c": 5}
    assert sum(task_counts(1001, names, {"qa": 2.5, "uppercase": 0.5}).values()) == 1001
    with pytest.raises(ValueError, match="not in"):
        task_counts(10, ["qa"], {"uppercase": 2})
    for bad in (0, -1, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="positive number"):
            task_counts(10, ["qa"], {"qa": bad})


def test_builtin_dataset_draws_each_split_from_its_named_stream():
    # the default stream of a split is the one the trainers name (see minillm.seeds)
    assert builtin_dataset(40, seed=2) == builtin_dataset(40, seed=2, stream="sft_data")
    assert builtin_dataset(40, seed=2, split="eval") == builtin_dataset(40, seed=2, split="eval",
                                                                        stream="eval_data")
    rl_prompts = builtin_dataset(40, seed=2, stream="rl_data")  # REINFORCE's, not SFT's
    assert rl_prompts != builtin_dataset(40, seed=2)
    assert {ex.task for ex in rl_prompts} == set(DEFAULT_SUITE)
    with pytest.raises(ValueError, match="unknown random stream"):
        builtin_dataset(5, stream="nope")


def test_train_and_eval_are_disjoint():
    train = builtin_dataset(2000, seed=0, split="train")
    evals = builtin_dataset(400, seed=0, split="eval")
    inputs = lambda exs: {(ex.task, ex.prompt.split("\n", 1)[1]) for ex in exs}
    assert not inputs(train) & inputs(evals)
    for ex in evals:
        if ex.task.startswith("number_to"):
            assert instance_split(ex.task, ex.prompt.split("\n")[1]) == "eval"
    eval_numbers = {n for n in range(1000) if instance_split("number_to_french", str(n)) == "eval"}
    assert 50 <= len(eval_numbers) <= 150


def test_heldout_instructions_only_in_eval():
    train = builtin_dataset(2000, seed=0, split="train")
    evals = builtin_dataset(300, seed=0, split="eval")
    heldout = {i for t in TASKS.values() for i in t.heldout_instructions}
    assert not {ex.prompt.split("\n")[0] for ex in train} & heldout
    assert {ex.prompt.split("\n")[0] for ex in evals} & heldout


def test_instruction_dropout_leaves_out_words_of_training_phrasings_only():
    """Each training instruction is a non-empty subsequence of one of its task's training
    phrasings (never a held-out one), about p of the words are left out, the inputs and
    targets are those of the same draw's instances, and p = 0 draws exactly what no p draws."""
    p, n = 0.15, 3000
    whole = builtin_dataset(n, seed=3)
    assert builtin_dataset(n, seed=3, instruction_dropout=0.0) == whole
    dropped = builtin_dataset(n, seed=3, instruction_dropout=p)
    kept = total = changed = 0
    for ex in dropped:
        instruction, _, rest = ex.prompt.partition("\n")
        words = instruction.split(" ")
        assert words and all(words), ex.prompt

        full = [ph for ph in TASKS[ex.task].instructions if is_subsequence(words, ph.split(" "))]
        assert full, ex.prompt
        assert instruction not in TASKS[ex.task].heldout_instructions
        if instruction not in TASKS[ex.task].instructions:
            changed += 1
        longest = max(full, key=lambda ph: len(ph.split(" ")))
        kept, total = kept + len(words), total + len(longest.split(" "))
    assert 0.10 < 1 - kept / total < 0.20, 1 - kept / total  # about p of the words left out
    assert changed > n // 4
    assert {e.task for e in dropped} == set(DEFAULT_SUITE)
    with pytest.raises(ValueError, match="train split only"):
        builtin_dataset(10, split="eval", instruction_dropout=p)
    for bad in (1.0, -0.1, True, float("nan")):
        with pytest.raises(ValueError, match="instruction_dropout must be a number in"):
            builtin_dataset(10, instruction_dropout=bad)


def is_subsequence(words: list[str], of: list[str]) -> bool:
    it = iter(of)
    return all(w in it for w in words)


def test_drop_words_keeps_order_and_at_least_one_word():
    from minillm.data.tasks.base import drop_words

    rng = np.random.default_rng(0)
    text = "Sort the words in alphabetical order."
    outs = [drop_words(text, 0.99, rng) for _ in range(200)]
    assert all(len(o.split(" ")) >= 1 and o for o in outs)
    assert all(o in text.split(" ") for o in outs if " " not in o)  # mostly one word at 0.99
    assert drop_words(text, 0.0, rng) == text
    seq = drop_words("a b c d e f g h", 0.5, np.random.default_rng(1)).split(" ")
    assert seq == sorted(seq)


def test_prompts_stay_short():
    # Learnability: the suite must stay small enough for a tiny model (see the module doc).
    for ex in builtin_dataset(900, seed=0):
        assert len(ex.prompt.split()) <= 32, ex.prompt
        assert len(ex.target.split()) <= 12, ex.target


def test_cli_data_writes_jsonl(tmp_path, capsys):
    from minillm.cli import main
    from minillm.data import load_jsonl

    out = tmp_path / "qa.jsonl"
    assert main(["data", "--task", "qa", "--n", "7", "--split", "eval", "--out", str(out)]) == 0
    examples = load_jsonl(out)
    assert len(examples) == 7 and {ex.task for ex in examples} == {"qa"}
    assert examples == builtin_dataset(7, seed=0, split="eval", tasks=["qa"])

    assert main(["data", "--task", "all", "--n", "18", "--seed", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 18 and all(line.startswith('{"instruction"') for line in lines)


def test_cli_data_list_and_unknown_task(capsys):
    from minillm.cli import main

    assert main(["data", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(f"{name}:" in listing for name in TASKS)
    assert main(["data", "--task", "klingon", "--n", "3"]) == 2
    err = capsys.readouterr().err
    assert "unknown task" in err and "klingon" in err
