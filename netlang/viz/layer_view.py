"""The layer view: one box per layer (conv1, pool1, ...) with its op, attributes and size.

Edges join layers and carry the shape of the tensor crossing them.  Layers nested in a block
(``residual1/bn1``) sit in a cluster named after the block.  In a training graph each layer's
gradient box sits on the same rank as the layer, so the backward pass reads bottom-up beside
the forward pass.
"""
from __future__ import annotations

from netlang.ir.graph import Graph, device_of
from netlang.viz.changes import Changes
from netlang.viz.diagram import Box, Diagram, Edge
from netlang.viz.labels import count_text, layer_text, param_count
from netlang.viz.roles import add_inputs, add_outputs, assigned_names, edge_label, gradient_of
from netlang.viz.units import Grouping, Unit, group_units, leaf_of


def layer_diagram(graph: Graph, title: str = "", changes: Changes | None = None) -> Diagram:
    """The layer view of ``graph``; ``changes`` marks what optimization merged or removed."""
    diagram = Diagram(title or graph.name)
    names = assigned_names(graph)
    grouping = group_units(graph, names)
    add_inputs(diagram, graph)
    for unit in grouping.units.values():
        diagram.add_box(unit_box(graph, unit, changes))
        if unit.cluster:
            diagram.add_cluster_path(unit.cluster)
    for nid, key in grouping.standalone.items():
        node = graph.nodes[nid]
        if not node.is_source("input"):
            diagram.add_box(Box(key, node.op, node.name or key,
                                [f"{node.op} {count_text(param_count([node]))}"]))
    add_layer_edges(diagram, graph, grouping, names)
    add_outputs(diagram, graph, lambda nid: box_of(grouping, nid), names)
    return diagram


def box_of(grouping: Grouping, nid: int) -> str | None:
    return grouping.unit_of.get(nid) or grouping.standalone.get(nid)


def unit_box(graph: Graph, unit: Unit, changes: Changes | None) -> Box:
    if unit.grad:
        box = Box(unit.key, "grad", unit.title, grad_lines(graph, unit), rank_with=unit.partner)
    else:
        box = Box(unit.key, "layer", unit.title, forward_lines(graph, unit))
    box.cluster = unit.cluster
    devices = {device_of(n) for n in unit.nodes}
    box.device = devices.pop() if len(devices) == 1 else None
    if changes is not None:
        box.marks = unit_marks(unit, changes)
    return box


def forward_lines(graph: Graph, unit: Unit) -> list[str]:
    """What the layer is (unless its title says it already), its parameters and state."""
    what = layer_text(graph, unit.nodes, unit.kind)
    lines = [] if what == unit.title.rstrip("0123456789") or what == unit.title else [what]
    params = [v for v in unit.variables if v.is_source("param")]
    state = [v for v in unit.variables if v.is_source("state")]
    sizes = [f"{count_text(param_count(params))} params"] if params else []
    sizes += [f"{count_text(param_count(state))} state"] if state else []
    return lines + ([", ".join(sizes)] if sizes else [])


def grad_lines(graph: Graph, unit: Unit) -> list[str]:
    """How many gradient ops, and which parameter gradients come out of them."""
    lines = [f"{len(unit.nodes)} gradient op{'s' if len(unit.nodes) != 1 else ''}"]
    grads = gradient_of(graph)
    produced = [grads[n.id] for n in unit.nodes if n.id in grads]
    if produced:
        lines.append("→ " + ", ".join("∇" + leaf_of(p) for p in produced))
    return lines


def unit_marks(unit: Unit, changes: Changes) -> list[str]:
    return changes.marks(*(n.id for n in unit.nodes))


def edge_kind(graph: Graph, value: int, src: str, dst: str, grouping: Grouping) -> str:
    src_grad = src in grouping.units and grouping.units[src].grad
    dst_grad = dst in grouping.units and grouping.units[dst].grad
    if graph.nodes[value].is_variable():
        return "param"
    if dst_grad:
        return "grad" if src_grad else "saved"
    return "data"


def add_layer_edges(diagram: Diagram, graph: Graph, grouping: Grouping, names) -> None:
    """One edge per value crossing from one box into another, labelled with its shape."""
    seen: set[tuple] = set()
    for key, unit in grouping.units.items():
        for node in unit.nodes:
            for i in node.inputs:
                src = box_of(grouping, i)
                if src is None or src == key or _implied(graph, grouping, i, unit):
                    continue
                kind = edge_kind(graph, i, src, key, grouping)
                # Activations saved for the backward pass: one edge per pair of boxes.
                what = (src, key) if kind == "saved" else (src, key, i)
                if what in seen:
                    continue
                seen.add(what)
                label = edge_label(graph, i, names)
                if graph.nodes[i].is_variable():
                    label = graph.nodes[i].name or label
                elif kind == "saved":
                    label = ""  # the forward edge already says it; flat labels collide
                # Gradient boxes are ranked beside their layers, so the backward edges
                # must not also push them down.
                constraint = not (kind in ("grad", "saved") and diagram.boxes[key].rank_with)
                diagram.add_edge(Edge(src, key, label, kind, constraint))


def _implied(graph: Graph, grouping: Grouping, value: int, unit: Unit) -> bool:
    """A layer's own parameter read by that layer's gradient box needs no edge."""
    node = graph.nodes[value]
    return node.is_variable() and unit.grad and node.scope == unit.scope
