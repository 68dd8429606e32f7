"""Constant expressions: ``7 * 7 * 8``, ``-1``, ``1e-3 * 2`` are computed while lowering.

``fold_constants`` serves the lowering (numbers meeting numbers make no nodes);
``constant_value`` evaluates a whole expression that must be constant (train settings).
"""
from __future__ import annotations

from netlang.errors import ArgumentError, Span
from netlang.frontend import ast
from netlang.frontend.arguments import Word

MAX_EXPONENT = 64   # integer powers beyond this are computed in floats


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fold_constants(op: str, left, right, span: Span):
    """``7 * 7 * 8`` and friends are computed while lowering (no nodes)."""
    try:
        if op == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
            left = float(left)
        result = {"+": lambda: left + right, "-": lambda: left - right,
                  "*": lambda: left * right, "/": lambda: left / right,
                  "**": lambda: left ** right, "@": None}[op]
        if result is None:
            raise ArgumentError("@ needs tensors, not numbers", span)
        value = result()
    except ZeroDivisionError:
        raise ArgumentError("division by zero in a constant expression", span) from None
    except OverflowError:
        raise ArgumentError("a constant expression overflows", span) from None
    if isinstance(value, complex):
        raise ArgumentError("a constant expression has no real value", span)
    if isinstance(value, int) and abs(value) > 2 ** 63:
        raise ArgumentError("a constant expression overflows", span)
    return value


def constant_value(expr):
    """The value of an expression made of literals, names (as ``Word``) and arithmetic."""
    if isinstance(expr, (ast.Number, ast.String, ast.Bool)):
        return expr.value
    if isinstance(expr, ast.Name):
        return Word(expr.id)
    if isinstance(expr, ast.Sequence):
        return tuple(constant_value(item) for item in expr.items)
    if isinstance(expr, ast.Neg):
        value = constant_value(expr.operand)
        if is_number(value):
            return -value
    elif isinstance(expr, ast.BinOp):
        left, right = constant_value(expr.left), constant_value(expr.right)
        if is_number(left) and is_number(right):
            return fold_constants(expr.op, left, right, expr.span)
    raise ArgumentError("a train setting is a constant: numbers, strings, names",
                        expr.span)
