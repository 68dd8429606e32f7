"""Binding the train/eval mode: the ``mode`` node becomes a constant ``True`` or ``False``.

The mode is a compile-time constant (DESIGN.md): after binding, constant folding resolves
every ``select(mode, ...)`` and dead-code elimination drops the branch not taken.
"""
from __future__ import annotations

from netlang.ir.graph import Graph
from netlang.ir.types import DType
from netlang.ops.state import MODE_OP
from netlang.passes.report import Report, report
from netlang.passes.rewrite import rebuild


def bind_mode(graph: Graph, training: bool) -> tuple[Graph, Report]:
    count = 0

    def visit(b, node, inputs):
        nonlocal count
        if node.op != MODE_OP:
            return None
        count += 1
        return b.const(bool(training), DType.bool)

    new, mapping = rebuild(graph, visit)
    mode = "train" if training else "eval"
    summary = f"bound the mode to {mode} ({count} node)" if count else "no mode node"
    return new, report(summary, changed=count, mapping=mapping)
