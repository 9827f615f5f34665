"""Code generation: a step-by-step description -> a Python integer expression.

    take x, add 3, then multiply by y   ->   (x + 3) * y

The reference is written canonically (parentheses only where precedence needs
them), but the verifier accepts any equivalent expression: it evaluates output
and reference with :mod:`minillm.data.tasks.safe_eval` on several random integer
assignments of the variables and gives 1.0 only when all agree.
"""

from __future__ import annotations

import hashlib

import numpy as np

from minillm.data.examples import Example
from minillm.data.tasks.base import Instance, Task
from minillm.data.tasks.safe_eval import SafeEvalError, safe_eval

VARIABLES = ("x", "y", "z")
N_ASSIGNMENTS = 8  # random assignments the verifier checks
VALUE_RANGE = (-20, 20)  # inclusive range of each variable in those assignments

# step kind -> (phrase, Python operator, precedence of the result, operand kind)
# precedence: 1 for + -, 2 for * // %; operands are a variable or a small literal.
STEPS = {
    "add": ("add {v}", "+", 1, "any"),
    "sub": ("subtract {v}", "-", 1, "any"),
    "mul": ("multiply by {v}", "*", 2, "any"),
    "floordiv": ("floor-divide by {v}", "//", 2, "literal"),
    "mod": ("take it modulo {v}", "%", 2, "literal"),
}


def build_expression(start: str, steps: list[tuple[str, str]]) -> str:
    """Apply ``steps`` (kind, operand) to ``start``, parenthesising only when needed.

    ``e op v`` needs ``(e)`` when ``op`` binds tighter than the last operator of ``e``;
    all five operators are left-associative, so equal precedence needs none.
    """
    expr, prec = start, 3  # an atom
    for kind, operand in steps:
        _, op, p, _ = STEPS[kind]
        if prec < p:
            expr = f"({expr})"
        expr, prec = f"{expr} {op} {operand}", p
    return expr


def describe(start: str, steps: list[tuple[str, str]]) -> str:
    """The English description: 'take x, add 3, then multiply by y'."""
    phrases = [STEPS[kind][0].format(v=operand) for kind, operand in steps]
    if len(phrases) > 1:
        phrases[-1] = "then " + phrases[-1]
    return ", ".join([f"take {start}"] + phrases)


def equivalent(output: str, reference: str, rng: np.random.Generator) -> bool:
    """True when both expressions agree on ``N_ASSIGNMENTS`` random integer assignments.

    The output may only use :data:`VARIABLES`; anything else (or any evaluation
    error in the output) makes it not equivalent. An assignment where the
    reference itself fails (it divides by a variable that is 0 there) is skipped;
    a reference that fails on every assignment is not an answer to compare with:
    ValueError (a data error, never a reward of 1.0 for any output).
    """
    lo, hi = VALUE_RANGE
    compared, error = 0, None
    for _ in range(N_ASSIGNMENTS):
        env = {v: int(rng.integers(lo, hi + 1)) for v in VARIABLES}
        try:
            want = safe_eval(reference, env)
        except SafeEvalError as e:
            error = e
            continue
        compared += 1
        try:
            got = safe_eval(output, env)
        except SafeEvalError:
            return False
        if isinstance(got, bool) or got != want:
            return False
    if compared == 0:
        raise ValueError(f"the reference {reference!r} does not evaluate ({error})")
    return True


class CodeExpression(Task):
    name = "code_expression"
    description = "write a Python expression from a step-by-step description"
    instructions = (
        "Write a Python expression for this description.",
        "Translate the description into a Python expression.",
        "Give a Python expression that does the following.",
        "Write the following computation as a Python expression.",
        "Turn these steps into one Python expression.",
    )
    heldout_instructions = ("Express these steps as Python code.",)

    def instance(self, rng: np.random.Generator) -> Instance:
        start = VARIABLES[int(rng.integers(len(VARIABLES)))]
        steps = []
        for _ in range(int(rng.integers(1, 3))):
            kind = list(STEPS)[int(rng.integers(len(STEPS)))]
            if STEPS[kind][3] == "any" and rng.integers(2):
                operand = VARIABLES[int(rng.integers(len(VARIABLES)))]
            else:
                operand = str(int(rng.integers(2, 10)))
            steps.append((kind, operand))
        expr = build_expression(start, steps)
        return Instance(key=expr, input=describe(start, steps), target=expr)

    def verify(self, example: Example, output: str) -> float:
        """1.0 when ``output`` computes the same integers as the target (semantic check).

        A target that does not evaluate is a data error: ValueError naming the example
        (and its file and line when it came from a JSONL file).
        """
        seed = int.from_bytes(hashlib.blake2b(example.target.encode(), digest_size=8).digest())
        try:
            return float(equivalent(output, example.target, np.random.default_rng(seed)))
        except ValueError as e:
            where = f"{example.origin}: " if example.origin else ""
            raise ValueError(f"{where}{self.name} example {example.prompt!r}: {e}; "
                             "its target must be an integer expression of x, y, z") from None
