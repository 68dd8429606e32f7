"""Constant folding: a pure node whose inputs are all constants becomes a constant.

The value is computed once, here, with the op's own NumPy kernel, so a folded graph computes
exactly what the unfolded one would on the CPU.  The train/eval mode is a constant once bound,
so ``select(mode, batch_stat, moving_stat)`` and dropout's ``select(mode, x*mask, x)`` fold
to the branch taken and the other branch dies.  Never folded: sources (inputs, parameters,
state), ops with ``pure=False`` (random masks), and results above ``FOLD_LIMIT`` elements,
which would bloat the graph more than they save.
"""
from __future__ import annotations

import numpy as np

from netlang.errors import NetlangError
from netlang.ir.graph import Graph, Node
from netlang.ops.elementwise import SELECT_OP
from netlang.ops.registry import get_op
from netlang.passes.dce import rewrite_and_prune
from netlang.passes.report import Report, describe, plural, report, with_orphans

FOLD_LIMIT = 1_000_000   # elements


def constant_of(graph: Graph, nid: int) -> np.ndarray | None:
    node = graph.nodes[nid]
    return node.attrs["value"] if node.is_source("const") else None


def foldable(node: Node) -> bool:
    """The op's record allows folding, and the result is small and of a known shape."""
    if node.is_source() or not node.inputs or not get_op(node.op).foldable:
        return False
    return node.type.is_static and int(np.prod(node.type.shape)) <= FOLD_LIMIT


def evaluate(node: Node, arrays: list[np.ndarray]) -> np.ndarray | None:
    """The node's value from its kernel, or None when it cannot be computed here."""
    try:
        with np.errstate(all="ignore"):
            value = np.asarray(get_op(node.op).kernel(np, *arrays, **node.attrs))
    except (NetlangError, ArithmeticError, ValueError, TypeError, IndexError):
        return None  # left for run time, which reports it with the node's span
    if value.shape != node.type.shape:
        return None
    return value.astype(node.type.dtype.numpy, copy=False)


def chosen_branch(graph: Graph, node: Node, inputs: tuple[int, ...]) -> int | None:
    """``select(c, a, b)`` with a constant, uniform ``c``: the branch taken, when it already
    has the select's type (so nothing is lost by dropping the broadcast)."""
    cond = constant_of(graph, inputs[0])
    if cond is None or cond.size == 0 or not (cond.all() or not cond.any()):
        return None
    branch = inputs[1] if cond.flat[0] else inputs[2]
    return branch if graph.nodes[branch].type == node.type else None


def fold_constants(graph: Graph) -> tuple[Graph, Report]:
    folded: list[tuple[Node, str]] = []

    def visit(b, node, inputs):
        if node.op == SELECT_OP:
            branch = chosen_branch(b.graph, node, inputs)
            if branch is not None:
                folded.append((node, f"branch {'a' if branch == inputs[1] else 'b'}"))
                return branch
        arrays = [constant_of(b.graph, i) for i in inputs]
        if not foldable(node) or any(a is None for a in arrays):
            return None
        value = evaluate(node, arrays)
        if value is None:
            return None
        folded.append((node, _show(value)))
        return b.const(value, node.type.dtype)

    new, orphans, mapping = rewrite_and_prune(graph, visit)
    items = [f"{describe(graph, node)} -> {result}" for node, result in folded]
    summary = with_orphans(f"folded {plural(len(folded), 'node')}", orphans)
    return new, report(summary, items, changed=len(folded), mapping=mapping)


def _show(value: np.ndarray) -> str:
    if value.size == 1:
        return repr(value.reshape(()).item())
    return f"const {value.dtype}{list(value.shape)}"
