"""Algebraic simplification, only where the result is the same in IEEE arithmetic.

Each rule is a function ``(builder, node, inputs) -> replacement id or None`` whose docstring
is its formula (the builder's graph is the one being built; a rule may append to it).  A rule
fires only when the node's type equals the replacement's type, so no rule
drops a broadcast or a dtype promotion.  Rules look at already-rewritten inputs, so chains
(``neg(neg(neg x))``, three transposes, reshape after reshape) collapse in one pass.
"""
from __future__ import annotations

from netlang.errors import NetlangError
from netlang.ir.graph import Graph, Node
from netlang.passes.dce import rewrite_and_prune
from netlang.passes.report import Report, describe, plural, report, with_orphans


def uniform_value(graph: Graph, nid: int):
    """The one value every element of a constant (or ``fill_like``) has, else None."""
    node = graph.nodes[nid]
    if node.op == "fill_like":
        return node.attrs["value"]
    if not node.is_source("const"):
        return None
    value = node.attrs["value"]
    if value.size == 0 or not (value == value.flat[0]).all():
        return None
    return value.flat[0]


def _same(graph: Graph, node: Node, nid: int) -> int | None:
    return nid if graph.nodes[nid].type == node.type else None


def mul_one(b, node, ins):
    """x * 1 = 1 * x = x"""
    for x, one in ((ins[0], ins[1]), (ins[1], ins[0])):
        if uniform_value(b.graph, one) == 1 and _same(b.graph, node, x) is not None:
            return x
    return None


def div_one(b, node, ins):
    """x / 1 = x"""
    return _same(b.graph, node, ins[0]) if uniform_value(b.graph, ins[1]) == 1 else None


def add_zero(b, node, ins):
    """x + 0 = 0 + x = x
    (the one IEEE difference: -0 + +0 is +0 where x = -0 is kept; the two compare equal)"""
    for x, zero in ((ins[0], ins[1]), (ins[1], ins[0])):
        if uniform_value(b.graph, zero) == 0 and _same(b.graph, node, x) is not None:
            return x
    return None


def sub_zero(b, node, ins):
    """x - 0 = x"""
    return _same(b.graph, node, ins[0]) if uniform_value(b.graph, ins[1]) == 0 else None


def neg_neg(b, node, ins):
    """neg(neg(x)) = x"""
    inner = b.graph.nodes[ins[0]]
    return _same(b.graph, node, inner.inputs[0]) if inner.op == "neg" else None


def pass_through(b, node, ins):
    """identity(x) = x;  stop_gradient(x) = x at run time (gradients are already built);
    cast(x) = x, broadcast_like(x, l) = x, sum_to_like(x, l) = x when the type is unchanged"""
    return _same(b.graph, node, ins[0])


def select_same(b, node, ins):
    """select(c, x, x) = x"""
    return _same(b.graph, node, ins[1]) if ins[1] == ins[2] else None


def _perm(node: Node, rank: int) -> tuple[int, ...]:
    perm = node.attrs.get("perm")
    if perm is None:
        return tuple(reversed(range(rank)))
    return tuple(p % rank for p in perm)


def transpose_transpose(b, node, ins):
    """transpose(transpose(x, p), q) = transpose(x, p[q]);  transpose(x, identity) = x"""
    rank = node.type.rank
    perm = _perm(node, rank)
    x = ins[0]
    inner = b.graph.nodes[x]
    if inner.op == "transpose":
        x, inner_perm = inner.inputs[0], _perm(inner, rank)
        perm = tuple(inner_perm[q] for q in perm)
    if perm == tuple(range(rank)):
        return _same(b.graph, node, x)
    if x == ins[0]:
        return None
    return _emit(b, node, "transpose", x, perm=perm)


def reshape_reshape(b, node, ins):
    """reshape(reshape(x, s), t) = reshape(x, t);  reshape(x, shape of x) = x
    (also reshape_like, whose second input only gives the shape)"""
    inner = b.graph.nodes[ins[0]]
    source = inner.inputs[0] if inner.op in ("reshape", "reshape_like") else ins[0]
    if b.graph.nodes[source].type == node.type:
        return source
    if source == ins[0]:
        return None
    return _emit(b, node, node.op, source, *ins[1:], **node.attrs)


def _emit(b, node: Node, op: str, *inputs: int, **attrs) -> int | None:
    """A replacement node, kept only if its shape rule gives the original type."""
    before = b.graph.next_id
    try:
        nid = b.op(op, *inputs, **attrs)
    except NetlangError:
        nid = None
    if nid is None or b.graph.nodes[nid].type != node.type:
        for extra in range(before, b.graph.next_id):
            b.graph.nodes.pop(extra, None)
        return None
    return nid


RULES = {
    "mul": mul_one, "div": div_one, "add": add_zero, "sub": sub_zero, "neg": neg_neg,
    "identity": pass_through, "stop_gradient": pass_through, "cast": pass_through,
    "broadcast_like": pass_through, "sum_to_like": pass_through, "select": select_same,
    "transpose": transpose_transpose, "reshape": reshape_reshape,
    "reshape_like": reshape_reshape,
}


def simplify(graph: Graph) -> tuple[Graph, Report]:
    rewritten: list[tuple[Node, str]] = []

    def visit(b, node, inputs):
        rule = RULES.get(node.op)
        nid = rule(b, node, inputs) if rule is not None else None
        if nid is not None:
            formula = f"{node.op}(x) = x" if rule is pass_through else (
                rule.__doc__.splitlines()[0])
            rewritten.append((node, formula))
        return nid

    new, orphans, mapping = rewrite_and_prune(graph, visit)
    items = [f"{describe(graph, node)}: {formula}" for node, formula in rewritten]
    summary = with_orphans(f"rewrote {plural(len(rewritten), 'node')}", orphans)
    return new, report(summary, items, changed=len(rewritten), mapping=mapping)

