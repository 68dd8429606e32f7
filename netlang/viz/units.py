"""Grouping IR nodes into the boxes of the layer view.

A box holds the nodes one call in the spec made: same scope, same source span (``conv1``'s
conv2d and bias add; the relu after it; ``residual1/bn1``).  A call whose nodes are not
connected to each other (a block used twice with shared parameters) gives one box per use.
Gradient nodes keep their forward node's scope and span, so each call's gradient nodes form
one box of their own (``∇ conv1``).  Parameters and state fold into the first box of their
scope that reads them; constants and the train/eval flag are not drawn.

Names come from the frontend's layer records (``graph.spec.layers``: ``conv1``, ``relu3``) when
the graph has them; graphs built by hand are named by scope, value name or op.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from netlang.ir.graph import Graph, Node
from netlang.runtime.memory import graph_library

HIDDEN_OPS = frozenset({"const", "mode"})
VARIABLE_OPS = frozenset({"param", "state"})


def is_grad(node: Node) -> bool:
    return "grad" in node.tags


@dataclass
class Unit:
    """One box of the layer view: compute nodes plus the parameters folded into it."""

    key: str
    scope: str
    grad: bool
    nodes: list[Node] = field(default_factory=list)
    variables: list[Node] = field(default_factory=list)
    title: str = ""
    cluster: str = ""              # the block it is drawn in ("" = top level)
    partner: str | None = None     # for a gradient box: the forward box it differentiates
    kind: str = ""                 # the layer or op the spec called (from the records)


@dataclass
class Grouping:
    units: dict[str, Unit]
    unit_of: dict[int, str | None]      # node id -> unit key (None: not drawn)
    standalone: dict[int, str]          # input / unowned parameter id -> box key


def call_key(node: Node) -> tuple:
    """Which call made a node: its scope and span (its id when it has no span)."""
    if node.span is not None:
        return (node.scope, node.span)
    return (node.scope,) if node.scope else ("", node.id)


def _components(graph: Graph, members: list[Node]) -> list[list[Node]]:
    """Split nodes into groups connected by edges among themselves or by reading the same
    state of their scope, as a layer's update does (networkx's union-find).  Reading one
    parameter does not join: that is a layer applied twice."""
    ids = {n.id for n in members}
    tied = graph_library().utils.UnionFind(ids)
    readers: dict[int, int] = {}
    for n in members:
        for i in n.inputs:
            if i in ids:
                tied.union(i, n.id)
            elif graph.nodes[i].is_source("state") and graph.nodes[i].scope == n.scope:
                if i in readers:
                    tied.union(readers[i], n.id)
                readers[i] = n.id
    groups: dict[int, list[Node]] = {}
    for n in members:
        groups.setdefault(tied[n.id], []).append(n)
    return sorted(groups.values(), key=lambda g: g[0].id)


def group_units(graph: Graph, names: dict[int, str] | None = None) -> Grouping:
    """Every compute node's box, named; parameters folded into the box of their scope."""
    forward: dict[tuple, list[Node]] = {}
    backward: dict[tuple, list[Node]] = {}
    standalone: dict[int, str] = {}
    for node in graph.nodes.values():
        if node.is_source("input"):
            standalone[node.id] = f"input {node.name}"
        elif node.op not in HIDDEN_OPS and not node.is_variable():
            table = backward if is_grad(node) else forward
            table.setdefault(call_key(node), []).append(node)
    units: dict[str, Unit] = {}
    unit_of: dict[int, str | None] = {}
    namer = UnitNamer(graph, names or {})
    for members in forward.values():
        for part in _components(graph, members):
            _add_unit(units, unit_of, namer.forward(part))
    by_call = {call_key(u.nodes[0]): u.key for u in units.values()}
    for call, members in backward.items():
        _add_unit(units, unit_of, namer.backward(members, by_call.get(call), units))
    _fold_variables(graph, units, unit_of, standalone)
    for node in graph.nodes.values():
        unit_of.setdefault(node.id, None)
    return Grouping(units, unit_of, standalone)


def _add_unit(units: dict[str, Unit], unit_of: dict, unit: Unit) -> None:
    base, n = unit.key, 1
    while unit.key in units:
        n += 1
        unit.key = f"{base}#{n}"
        unit.title = f"{unit.title.split(' (')[0]} ({n})"
    units[unit.key] = unit
    unit_of.update((node.id, unit.key) for node in unit.nodes)


def _fold_variables(graph: Graph, units, unit_of, standalone) -> None:
    """A parameter joins the first forward box of its scope that reads it, else the first
    box of its scope (after fusion its reader may sit in the next layer's box)."""
    users = graph.users()
    first_of_scope: dict[str, str] = {}
    for unit in units.values():
        if not unit.grad:
            first_of_scope.setdefault(unit.scope, unit.key)
    for node in graph.nodes.values():
        if not node.is_variable():
            continue
        owner = next((unit_of[u] for u in users[node.id]
                      if unit_of.get(u) and units[unit_of[u]].scope == node.scope
                      and not units[unit_of[u]].grad), None)
        owner = owner or (first_of_scope.get(node.scope) if node.scope else None)
        if owner is None:
            standalone[node.id] = f"{node.op} {node.name}"
        else:
            units[owner].variables.append(node)
            unit_of[node.id] = owner


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def leaf_of(path: str) -> str:
    return path.rpartition("/")[2]


class UnitNamer:
    """Keys, titles and clusters for boxes: from layer records, else from scopes and ops."""

    def __init__(self, graph: Graph, names: dict[int, str]):
        self.graph = graph
        self.names = names
        self.records: dict[tuple, str] = {}
        self.kinds: dict[str, str] = {}
        for record in graph.spec.layers:
            span, name = getattr(record, "span", None), getattr(record, "name", None)
            if span is not None and name:
                self.records.setdefault((span, name), name)
                self.kinds.setdefault(name, str(getattr(record, "kind", "") or ""))

    def record_name(self, scope: str, span) -> str | None:
        """The record of the call that made nodes in ``scope`` at ``span``: a layer named
        by its scope (``conv1``), or an op named inside it (``residual1/relu1``)."""
        if span is None:
            return None
        if (span, scope) in self.records:
            return scope
        for (rspan, name) in self.records:
            if rspan == span and parent_of(name) == scope:
                return name
        return None

    def forward(self, nodes: list[Node]) -> Unit:
        first = nodes[0]
        record = self.record_name(first.scope, first.span)
        if record is not None:
            is_layer = record == first.scope
            return Unit(record, first.scope, False, nodes, title=leaf_of(record),
                        cluster=parent_of(record) if is_layer else first.scope,
                        kind=self.kinds.get(record, ""))
        if first.scope:
            return Unit(first.scope, first.scope, False, nodes, title=leaf_of(first.scope),
                        cluster=parent_of(first.scope))
        named = [self.names[n.id] for n in nodes if n.id in self.names]
        title = named[-1] if named else nodes[-1].op
        return Unit(f"n{first.id}", "", False, nodes, title=title)

    def backward(self, nodes: list[Node], partner: str | None, units) -> Unit:
        first = nodes[0]
        if partner is not None:
            fwd = units[partner]
            return Unit(f"∇{partner}", first.scope, True, nodes, title=f"∇ {fwd.title}",
                        cluster=fwd.cluster, partner=partner)
        title = f"∇ {leaf_of(first.scope) if first.scope else first.op}"
        return Unit(f"∇n{first.id}", first.scope, True, nodes, title=title,
                    cluster=parent_of(first.scope))
