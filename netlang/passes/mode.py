"""Binding the train/eval mode: the ``mode`` node becomes a constant ``True`` or ``False``.

The mode is a compile-time constant (DESIGN.md): after binding, constant folding resolves
every ``select(mode, ...)`` and dead-code elimination drops the branch not taken.
"""
from __future__ import annotations

from netlang.ir.graph import Graph
from netlang.ir.types import DType
from netlang.passes.rewrite import rebuild


def bind_mode(graph: Graph, training: bool) -> tuple[Graph, str]:
    count = 0

    def visit(b, node, inputs):
        nonlocal count
        if node.op != "mode":
            return None
        count += 1
        return b.const(bool(training), DType.bool)

    new = rebuild(graph, visit)
    new.meta["training"] = bool(training)
    mode = "train" if training else "eval"
    return new, f"bound the mode to {mode} ({count} node)" if count else "no mode node"
