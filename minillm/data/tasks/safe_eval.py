"""A restricted evaluator for the integer expressions of the code-generation task.

Model output is untrusted text, so it is never handed to ``eval``. Instead it is
parsed with :mod:`ast` and walked by a tiny interpreter that knows only:

- numeric literals (``int`` or ``float``; not ``bool``, ``complex`` or strings),
- the variable names the caller allows,
- binary ``+ - * // %``, and ``**`` only with a small non-negative integer literal
  exponent,
- unary ``-`` and ``+``,
- comparisons ``< <= > >= == !=`` (chains allowed), and parentheses (implicit in the AST).

Anything else (calls, attributes, subscripts, lambdas, comprehensions, ``/``,
bit operations, other names) raises :class:`SafeEvalError` *before* anything is
evaluated. The source length, the number of AST nodes and the size of every
intermediate integer are bounded, so no input can make the evaluator slow.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterable, Mapping

MAX_SOURCE_CHARS = 500  # longer text is refused before parsing
MAX_NODES = 100  # AST nodes in the whole expression
MAX_POW_EXPONENT = 4  # ``e ** k`` only for literal 0 <= k <= this
MAX_INT_BITS = 256  # any intermediate integer beyond this is refused

Number = int | float

_BINOPS: dict[type, Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARYOPS: dict[type, Callable[[Number], Number]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_CMPOPS: dict[type, Callable[[Number, Number], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


class SafeEvalError(ValueError):
    """The expression is not allowed, cannot be parsed, or its value is too large."""


def parse_expression(
    source: str, allowed_names: Iterable[str], *, max_nodes: int = MAX_NODES
) -> ast.Expression:
    """Parse ``source`` and check that it uses only the allowed constructs.

    Returns the checked AST; raises :class:`SafeEvalError` naming the first
    construct that is not allowed.
    """
    if not isinstance(source, str):
        raise SafeEvalError(f"expected a string, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise SafeEvalError(f"expression longer than {MAX_SOURCE_CHARS} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as e:
        raise SafeEvalError(f"cannot parse expression {source!r}: {e.msg}") from None
    allowed = set(allowed_names)
    nodes = list(ast.walk(tree))
    if len(nodes) > max_nodes:
        raise SafeEvalError(f"expression has {len(nodes)} AST nodes (limit {max_nodes})")
    for node in nodes:
        _check_node(node, allowed)
    return tree


def _check_node(node: ast.AST, allowed: set[str]) -> None:
    """Raise SafeEvalError unless ``node`` is one of the allowed constructs."""
    if isinstance(node, ast.Expression | ast.Load):
        return
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise SafeEvalError(f"literal {v!r} is not allowed (numbers only)")
        return
    if isinstance(node, ast.Name):
        if node.id not in allowed:
            raise SafeEvalError(f"name {node.id!r} is not allowed (allowed: {sorted(allowed)})")
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise SafeEvalError(f"operator {type(node.op).__name__} is not allowed")
        if isinstance(node.op, ast.Pow):
            k = node.right
            ok = isinstance(k, ast.Constant) and type(k.value) is int and 0 <= k.value <= MAX_POW_EXPONENT
            if not ok:
                raise SafeEvalError(f"'**' needs a literal integer exponent in [0, {MAX_POW_EXPONENT}]")
        return
    if isinstance(node, ast.UnaryOp | ast.Compare):
        ops = [node.op] if isinstance(node, ast.UnaryOp) else node.ops
        table = _UNARYOPS if isinstance(node, ast.UnaryOp) else _CMPOPS
        for op in ops:
            if type(op) not in table:
                raise SafeEvalError(f"operator {type(op).__name__} is not allowed")
        return
    if isinstance(node, ast.operator | ast.unaryop | ast.cmpop):
        return  # operator tokens; their parents were checked above
    raise SafeEvalError(f"{type(node).__name__} is not allowed in an expression")


def _bounded(value: Number) -> Number:
    """Refuse integers wider than MAX_INT_BITS bits."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SafeEvalError(f"intermediate value exceeds {MAX_INT_BITS} bits")
    return value


def _eval_node(node: ast.AST, env: Mapping[str, Number]) -> Number:
    """Evaluate a node already accepted by :func:`_check_node`."""
    if isinstance(node, ast.Expression):
        return _eval_node(node.body, env)
    if isinstance(node, ast.Constant):
        return _bounded(node.value)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        return _bounded(_UNARYOPS[type(node.op)](_eval_node(node.operand, env)))
    if isinstance(node, ast.BinOp):
        left, right = _eval_node(node.left, env), _eval_node(node.right, env)
        try:
            return _bounded(_BINOPS[type(node.op)](left, right))
        except (ZeroDivisionError, OverflowError) as e:
            raise SafeEvalError(f"arithmetic error: {e}") from None
    if isinstance(node, ast.Compare):
        left = _eval_node(node.left, env)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval_node(comp, env)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    raise SafeEvalError(f"{type(node).__name__} is not allowed")  # unreachable after checks


def safe_eval(source: str, variables: Mapping[str, Number], *, max_nodes: int = MAX_NODES) -> Number:
    """Evaluate the expression ``source`` with ``variables`` bound, safely.

    Only the names in ``variables`` may appear. Raises :class:`SafeEvalError` for
    anything not allowed, for a division by zero, or for an oversized value.

    >>> safe_eval("(x + 3) * y", {"x": 1, "y": 2})
    8
    """
    for name, v in variables.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise SafeEvalError(f"variable {name!r} must be a number, got {type(v).__name__}")
    tree = parse_expression(source, variables.keys(), max_nodes=max_nodes)
    return _eval_node(tree, variables)
