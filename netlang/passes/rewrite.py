"""Rebuilding a graph node by node: the mechanism every rewriting pass shares.

``rebuild(graph, visit)`` copies nodes in order into a fresh graph.  For each node ``visit``
gets a builder, the old node and its already-mapped inputs, and returns the new value id to
stand for it, or None to copy the node as it is.  Named roles (inputs, params, outputs, ...)
follow the mapping; roles whose node disappeared are dropped.  It returns the new graph and
the mapping (old id -> new id, None for nodes left out), which passes hand on in their reports.
"""
from __future__ import annotations

from collections.abc import Callable

from netlang.ir.graph import Graph, Node
from netlang.ops.builder import Builder

Mapping = dict[int, "int | None"]


def copy_node(b: Builder, node: Node, inputs: tuple[int, ...]) -> int:
    return b.graph.add(node.op, inputs, node.attrs, node.type, scope=node.scope,
                       name=node.name, span=node.span, tags=node.tags)


def remap_roles(old: Graph, new: Graph, mapping: Mapping) -> None:
    for role in ("inputs", "params", "state", "outputs", "updates", "values", "unfetched"):
        table = {k: mapping.get(v) for k, v in getattr(old, role).items()}
        setattr(new, role, {k: v for k, v in table.items() if v is not None})
    new.loss = old.loss if old.loss in new.outputs else None
    new.metrics = [m for m in old.metrics if m in new.outputs]


def rebuild(graph: Graph, visit: Callable | None = None,
            keep: set[int] | None = None) -> tuple[Graph, Mapping]:
    """A new graph with the nodes in ``keep`` (default all), rewritten by ``visit``, and the
    id mapping from ``graph`` to it."""
    new = Graph(name=graph.name, spec=graph.spec)
    b = Builder(new)
    mapping: Mapping = {}
    for node in graph.nodes.values():
        if keep is not None and node.id not in keep:
            mapping[node.id] = None
            continue
        inputs = tuple(mapping[i] for i in node.inputs)
        result = None
        if visit is not None:
            with b.at(node.span), b.scope(node.scope):
                result = visit(b, node, inputs)
        mapping[node.id] = result if result is not None else copy_node(b, node, inputs)
    remap_roles(graph, new, mapping)
    return new, mapping


def replace_groups(graph: Graph, absorbed: set[int], emit: Callable) -> tuple[Graph, Mapping]:
    """Rebuild ``graph`` with groups of nodes replaced by one node each (the fusion passes).

    Nodes in ``absorbed`` are dropped (their values live only inside a group); for every other
    node ``emit(b, node, mapped)`` returns the new id standing for it, or None to copy it;
    ``mapped(old_id)`` gives any earlier node's new id (a group's inputs)."""
    new = Graph(name=graph.name, spec=graph.spec)
    b = Builder(new)
    mapping: Mapping = {}
    for node in graph.nodes.values():
        if node.id in absorbed:
            mapping[node.id] = None
            continue
        nid = emit(b, node, mapping.__getitem__)
        mapping[node.id] = nid if nid is not None else copy_node(
            b, node, tuple(mapping[i] for i in node.inputs))
    remap_roles(graph, new, mapping)
    return new, mapping


def compose(first: Mapping, then: Mapping | None) -> Mapping:
    """The mapping of two passes run one after the other (None stays None)."""
    if then is None:
        return dict(first)
    return {k: (then.get(v) if v is not None else None) for k, v in first.items()}


def identity_mapping(graph: Graph) -> Mapping:
    return {nid: nid for nid in graph.nodes}
