"""Common-subexpression elimination: nodes with the same op, attributes and inputs are merged.

Walking the graph in order, each node is keyed by ``(op, attrs, inputs after merging)``; a
node whose key was seen before becomes the earlier node.  Because gradients are ordinary IR,
this works across the forward and the backward graph (a VJP that recomputes ``softmax(logits)``
reuses the forward one).  Never merged: ops declared ``pure=False`` (random masks, state reads)
and the sources that are distinct by identity (inputs, parameters, state); equal constants
are merged.  ``add`` and ``mul`` are commutative in IEEE arithmetic, so ``a+b`` meets ``b+a``.
"""
from __future__ import annotations

from netlang.ir.graph import SOURCE_OPS, Graph, Node, attr_key
from netlang.ops.registry import get_op
from netlang.passes.dce import rewrite
from netlang.passes.report import Report, collapse, describe, location, plural
from netlang.passes.rewrite import copy_node

COMMUTATIVE = frozenset({"add", "mul", "maximum", "minimum", "equal"})


def mergeable(node: Node) -> bool:
    if node.op == "const":
        return True
    if node.op in SOURCE_OPS or node.op in ("mode", "grad"):
        return False
    return get_op(node.op).pure


def cse_key(node: Node, inputs: tuple[int, ...]) -> tuple:
    if node.op in COMMUTATIVE:
        inputs = tuple(sorted(inputs))
    return node.op, attr_key(node.attrs), inputs, node.type


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

    new, _ = rewrite(graph, visit)
    return new, Report(f"merged {plural(len(merged), 'node')}", _grouped(graph, merged),
                       changed=len(merged))


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
