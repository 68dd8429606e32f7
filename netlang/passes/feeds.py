"""Cutting at fed values: a fed node becomes a placeholder, and what produced it goes away.

This runs before any optimization so that folding never bakes in a value the user
overrides (``run(c, {b: 3})`` must see the new ``b`` even though ``b`` was a constant).
A fed parameter or state variable (TF1 feeds variables too) is an input for that run: the
run computes with the fed value, and neither the optimizer nor batchnorm's moving averages
update the stored variable in it.
"""
from __future__ import annotations

from netlang.ir.graph import Graph
from netlang.passes.report import Report, report
from netlang.passes.rewrite import rebuild


def cut_feeds(graph: Graph, fed: frozenset[int]) -> tuple[Graph, Report]:
    """Every fed value (ids of ``graph``) becomes an input named as the user names it."""
    def visit(b, node, inputs):
        if node.id not in fed or node.is_source("input"):
            return None
        name = graph.name_of(node.id) or f"%{node.id}"
        return b.graph.add("input", (), {}, node.type, scope=node.scope, name=name,
                           span=node.span, tags=node.tags | {"fed"})

    new, mapping = rebuild(graph, visit)
    for old in fed:
        nid = mapping.get(old)
        if nid is not None and new.nodes[nid].is_source("input"):
            new.inputs[new.nodes[nid].name] = nid
        if graph.nodes[old].is_variable():   # TF1 feeds variables: the run sees the
            name = graph.nodes[old].name           # fed value, and the stored one stays
            new.params.pop(name, None)
            new.state.pop(name, None)
            new.updates.pop(name, None)
    cut = sorted(graph.name_of(f) or f"%{f}" for f in fed if not graph.nodes[f].is_source("input"))
    summary = f"cut at fed values: {', '.join(cut)}" if cut else "no fed values to cut"
    return new, report(summary, changed=len(cut), mapping=mapping)
