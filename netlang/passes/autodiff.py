"""Reverse-mode autodiff as a graph transform: gradients are IR nodes appended to the graph.

Walk the nodes between the differentiated values and ``y`` in reverse topological order,
ask each op's VJP rule for its inputs' cotangents (the rule emits IR through the builder),
and sum cotangents where a value fans out.  Values off every path get no gradient and no
zeros are materialized; integer and boolean values never carry one.  Because the result is
ordinary IR, a gradient can itself be differentiated (``grad(grad(y, x), x)``).
"""
from __future__ import annotations

from netlang.errors import GradientError
from netlang.ir.graph import Graph
from netlang.ops.builder import Builder
from netlang.ops.registry import get_op
from netlang.ops.state import GRAD_OP
from netlang.passes.report import Report, report
from netlang.passes.rewrite import rebuild


def _on_paths(graph: Graph, y: int, xs: list[int]) -> set[int]:
    """Nodes that depend on some x and that y depends on (the only ones gradients cross)."""
    upstream = graph.ancestors([y])
    depends = {x for x in xs if x in upstream}
    for nid in graph.nodes:  # insertion order is topological
        if (nid in upstream and nid not in depends
                and any(i in depends for i in graph.nodes[nid].inputs)):
            depends.add(nid)
    return depends


def gradients(b: Builder, y: int, xs: list[int], seed: int | None = None) -> list[int | None]:
    """Append nodes computing d(sum(y))/dx for each x; None where no gradient reaches x."""
    graph = b.graph
    relevant = _on_paths(graph, y, xs)
    if y not in relevant:
        return [None] * len(xs)
    with b.at(graph.nodes[y].span), b.tagged("grad"):
        cotangent = {y: seed if seed is not None else b.fill_like(y, value=1.0)}
    for nid in sorted(relevant, reverse=True):
        node = graph.nodes[nid]
        if nid not in cotangent or node.is_source() or not node.type.dtype.is_float:
            continue
        opdef = get_op(node.op)
        if opdef.vjp is None:
            continue
        with b.at(node.span), b.in_scope(node.scope), b.tagged("grad"):
            in_grads = opdef.vjp(b, node, cotangent[nid])
            for inp, g in zip(node.inputs, in_grads):
                if g is None or inp not in relevant or not graph.nodes[inp].type.dtype.is_float:
                    continue
                cotangent[inp] = g if inp not in cotangent else b.add(cotangent[inp], g)
    return [cotangent.get(x) for x in xs]


def blocking_ops(graph: Graph, y: int, x: int) -> list[str]:
    """Why no gradient flows from y back to x: the ops on the way that stop it."""
    relevant = _on_paths(graph, y, [x])
    found = []
    for nid in sorted(relevant):
        node = graph.nodes[nid]
        if nid == x:
            continue
        opdef = get_op(node.op)
        if opdef.nondiff is not None or (node.op == "cast" and not node.type.dtype.is_float):
            where = f" at {node.span}" if node.span else ""
            reason = opdef.nondiff or f"cast to {node.type.dtype} has no gradient"
            found.append(f"{node.op}{where} ({reason})")
    return found


def check_all_reached(graph: Graph, loss: int, params: dict[str, int],
                      grads: dict[str, int | None]) -> None:
    """Raise one clear error for every parameter the loss's gradient cannot reach."""
    problems = []
    for name, g in grads.items():
        if g is not None:
            continue
        blockers = blocking_ops(graph, loss, params[name])
        if blockers:
            problems.append(f"'{name}' gets no gradient: the path to the loss is blocked by "
                            + "; ".join(blockers))
        else:
            problems.append(f"'{name}' gets no gradient: the loss does not depend on it")
    if problems:
        raise GradientError("\n  ".join(problems), graph.nodes[loss].span,
                            hint="remove the blocking op from the loss path, or train without "
                                 "these parameters")


def expand_grads(graph: Graph) -> tuple[Graph, Report]:
    """Replace every ``grad(y, x)`` node with the gradient subgraph it stands for."""
    count = 0

    def visit(b: Builder, node, mapped):
        nonlocal count
        if node.op != GRAD_OP:
            return None
        count += 1
        y, x = mapped
        with b.at(node.span):
            (g,) = gradients(b, y, [x])
            if g is None:
                g = b.fill_like(x, value=0.0)
        return g

    new, mapping = rebuild(graph, visit)
    return new, report(f"expanded {count} grad() node(s)", changed=count, mapping=mapping)
