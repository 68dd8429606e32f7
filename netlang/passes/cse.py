"""Common-subexpression elimination: nodes with the same op, attributes and inputs are merged.

Walking the graph in order, each node is keyed by ``(op, attrs, inputs after merging)`` (and
the device an ``on`` block placed it on: copies of one value on two devices stay two); a
node whose key was seen before becomes the earlier node.  Because gradients are ordinary IR,
this works across the forward and the backward graph (a VJP that recomputes ``softmax(logits)``
reuses the forward one).  Never merged: ops declared ``pure=False`` (random masks, state reads)
and the sources that are distinct by identity (inputs, parameters, state); equal constants
are merged.  Ops whose record says ``commutative`` (``add``, ``mul``: commutative in IEEE
arithmetic) have their operands sorted, so ``a+b`` meets ``b+a``.
"""
from __future__ import annotations

from netlang.ir.graph import Graph, Node, attr_key, device_of
from netlang.ops.registry import get_op
from netlang.passes.dce import rewrite_and_prune
from netlang.passes.report import Report, collapse, describe, location, plural, report
from netlang.passes.rewrite import copy_node


def mergeable(node: Node) -> bool:
    """Equal constants merge; other sources are distinct by identity; markers never run."""
    if node.is_source():
        return node.is_source("const")
    opdef = get_op(node.op)
    return opdef.pure and not opdef.marker


def cse_key(node: Node, inputs: tuple[int, ...]) -> tuple:
    if get_op(node.op).commutative:
        inputs = tuple(sorted(inputs))
    return node.op, attr_key(node.attrs), inputs, node.type, device_of(node)


def eliminate_common_subexpressions(graph: Graph) -> tuple[Graph, Report]:
    seen: dict[tuple, tuple[int, Node]] = {}   # key -> (new id, the node kept)
    merged: list[tuple[Node, Node]] = []       # (duplicate, the node it became)

    def visit(b, node, inputs):
        if not mergeable(node):
            return None
        key = cse_key(node, inputs)
        if key in seen:
            merged.append((node, seen[key][1]))
            return seen[key][0]
        nid = copy_node(b, node, inputs)
        seen[key] = (nid, node)
        return nid

    new, _, mapping = rewrite_and_prune(graph, visit)
    return new, report(f"merged {plural(len(merged), 'node')}", _grouped(graph, merged),
                       changed=len(merged), mapping=mapping)


def _grouped(graph: Graph, merged: list[tuple[Node, Node]]) -> list[str]:
    """One line per kept node: ``softmax 'probs' @a.net:3:9 <- 1 copy: (grad) @a.net:5:1``."""
    copies: dict[int, list[Node]] = {}
    for dup, kept in merged:
        copies.setdefault(kept.id, []).append(dup)
    lines = []
    for kept_id, dups in copies.items():
        where = "; ".join(collapse(_where(graph, d) for d in dups))
        lines.append(f"{describe(graph, graph.nodes[kept_id])} <- "
                     f"{plural(len(dups), 'copy').replace('copys', 'copies')}: {where}")
    return lines


def _where(graph: Graph, node: Node) -> str:
    name = graph.name_of(node.id)
    text = " ".join(p for p in (f"'{name}'" if name else "", location(node)) if p)
    return text or f"%{node.id}"
