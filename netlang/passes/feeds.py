"""Cutting at fed values: a fed node becomes a placeholder, and what produced it goes away.

This runs before any optimization so that folding never bakes in a value the user
overrides (``run(c, {b: 3})`` must see the new ``b`` even though ``b`` was a constant).
"""
from __future__ import annotations

from netlang.ir.graph import Graph
from netlang.passes.rewrite import rebuild


def cut_feeds(graph: Graph, fed: frozenset[int]) -> tuple[Graph, str]:
    def visit(b, node, inputs):
        if node.id not in fed or node.op == "input":
            return None
        name = graph.name_of(node.id) or f"%{node.id}"
        nid = b.graph.add("input", (), {}, node.type, scope=node.scope, name=name,
                          span=node.span, tags=node.tags | {"fed"})
        return nid

    new = rebuild(graph, visit)
    for old in fed:
        nid = new.meta["id_map"].get(old)
        if nid is not None and new.nodes[nid].op == "input":
            new.inputs[new.nodes[nid].name] = nid
    cut = sorted(graph.name_of(f) or f"%{f}" for f in fed if graph.nodes[f].op != "input")
    return new, f"cut at fed values: {', '.join(cut)}" if cut else "no fed values to cut"
