"""Reverse-mode autodiff as a graph transform: gradients are IR nodes appended to the graph.

The reverse loop itself is ``ops/reverse.backpropagate`` (the fused op's VJP uses it too);
this pass expands ``grad(y, x)`` nodes with it and explains, when a parameter gets no
gradient, which op blocks the path.  Because the result is ordinary IR, a gradient can
itself be differentiated (``grad(grad(y, x), x)``).
"""
from __future__ import annotations

from netlang.errors import GradientError
from netlang.ir.graph import Graph
from netlang.ops.builder import Builder
from netlang.ops.registry import get_op
from netlang.ops.reverse import backpropagate, on_paths
from netlang.ops.state import GRAD_OP
from netlang.passes.report import Report, report
from netlang.passes.rewrite import rebuild


def gradients(b: Builder, y: int, xs: list[int], seed: int | None = None) -> list[int | None]:
    """Append nodes computing d(sum(y))/dx for each x; None where no gradient reaches x."""
    return backpropagate(b, y, xs, seed)


def blocking_ops(graph: Graph, y: int, x: int) -> list[str]:
    """Why no gradient flows from y back to x: the ops on the way that stop it."""
    relevant = on_paths(graph, y, [x])
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
                            hint="remove the blocking op from the loss path, or freeze these "
                                 "parameters: trainable=false on the layer or block use that "
                                 "makes them")


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
