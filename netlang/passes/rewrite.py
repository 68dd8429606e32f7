"""Rebuilding a graph node by node: the mechanism every rewriting pass shares.

``rebuild(graph, visit)`` copies nodes in order into a fresh graph.  For each node ``visit``
gets a builder, the old node and its already-mapped inputs, and returns the new value id to
stand for it, or None to copy the node as it is.  Named roles (inputs, params, outputs, ...)
follow the mapping; roles whose node disappeared are dropped.
"""
from __future__ import annotations

from collections.abc import Callable

from netlang.ir.graph import Graph, Node
from netlang.ops.builder import Builder


def copy_node(b: Builder, node: Node, inputs: tuple[int, ...]) -> int:
    nid = b.graph.add(node.op, inputs, node.attrs, node.type, scope=node.scope,
                      name=node.name, span=node.span, tags=node.tags)
    return nid


def remap_roles(old: Graph, new: Graph, mapping: dict[int, int | None]) -> None:
    for role in ("inputs", "params", "state", "outputs", "updates", "values"):
        table = {k: mapping.get(v) for k, v in getattr(old, role).items()}
        setattr(new, role, {k: v for k, v in table.items() if v is not None})
    new.loss = old.loss if old.loss in new.outputs else None
    new.metrics = [m for m in old.metrics if m in new.outputs]


def rebuild(graph: Graph, visit: Callable | None = None,
            keep: set[int] | None = None) -> Graph:
    """A new graph with the nodes in ``keep`` (default all), rewritten by ``visit``."""
    new = Graph(name=graph.name, meta=dict(graph.meta))
    b = Builder(new)
    mapping: dict[int, int | None] = {}
    for node in graph.nodes.values():
        if keep is not None and node.id not in keep:
            continue
        inputs = tuple(mapping[i] for i in node.inputs)
        result = None
        if visit is not None:
            with b.at(node.span), b.scope(node.scope):
                result = visit(b, node, inputs)
        mapping[node.id] = result if result is not None else copy_node(b, node, inputs)
    remap_roles(graph, new, mapping)
    record_mapping(graph, new, mapping)
    return new


def record_mapping(old: Graph, new: Graph, mapping: dict[int, int | None]) -> None:
    """Keep ``meta["id_map"]``: ids of the graph a pipeline started from -> ids now.

    Sessions name values by the ids of the prepared graph; after any number of rebuilding
    passes this map says where each value went (None where a pass removed it).
    """
    before = old.meta.get("id_map")
    if before is None:
        new.meta["id_map"] = dict(mapping)
    else:
        new.meta["id_map"] = {k: (mapping.get(v) if v is not None else None)
                              for k, v in before.items()}
