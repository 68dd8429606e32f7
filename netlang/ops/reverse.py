"""Reverse-mode accumulation over IR: the one loop every gradient in netlang comes from.

Walk the nodes between the differentiated values and ``y`` in reverse topological order,
ask each op's VJP rule for its inputs' cotangents (the rule emits IR through the builder),
and sum cotangents where a value fans out.  Values off every path get no gradient and no
zeros are materialized; integer and boolean values never carry one.  The autodiff pass
(``grad()`` and the training graph) and the ``fused`` op's VJP both call ``backpropagate``.
"""
from __future__ import annotations

import contextlib

from netlang.ir.graph import Graph, device_of
from netlang.ops.builder import Builder
from netlang.ops.registry import get_op


def on_paths(graph: Graph, y: int, xs: list[int], partial: bool = False) -> set[int]:
    """Nodes that depend on some x and that y depends on (the only ones gradients cross).
    With ``partial`` nothing upstream of an x is entered (each x is held fixed)."""
    upstream = graph.ancestors([y], stop=xs if partial else ())
    depends = {x for x in xs if x in upstream}
    for nid in graph.nodes:  # insertion order is topological
        if (nid in upstream and nid not in depends
                and any(i in depends for i in graph.nodes[nid].inputs)):
            depends.add(nid)
    return depends


def backpropagate(b: Builder, y: int, xs: list[int], seed: int | None = None,
                  partial: bool = False) -> list[int | None]:
    """Append nodes computing d(sum(y))/dx for each x (seeded with ``seed``, default ones);
    None where no gradient reaches x.  ``partial``: derivatives with every x held fixed."""
    graph = b.graph
    relevant = on_paths(graph, y, xs, partial)
    if y not in relevant:
        return [None] * len(xs)
    stop = set(xs) if partial else set()
    with b.at(graph.nodes[y].span), b.tagged("grad"):
        cotangent = {y: seed if seed is not None else b.fill_like(y, value=1.0)}
    for nid in sorted(relevant, reverse=True):
        node = graph.nodes[nid]
        if (nid not in cotangent or nid in stop or node.is_source()
                or not node.type.dtype.is_float):
            continue
        opdef = get_op(node.op)
        if opdef.vjp is None:
            continue
        device = device_of(node)      # a gradient runs where its op does ('on gpu { }')
        with (b.at(node.span), b.in_scope(node.scope), b.tagged("grad"),
              b.placed(device) if device else contextlib.nullcontext()):
            in_grads = opdef.vjp(b, node, cotangent[nid])
            for inp, g in zip(node.inputs, in_grads):
                if g is None or inp not in relevant or not graph.nodes[inp].type.dtype.is_float:
                    continue
                cotangent[inp] = g if inp not in cotangent else b.add(cotangent[inp], g)
    return [cotangent.get(x) for x in xs]
