"""The op view: every IR node a box, grouped into a cluster per layer scope.

Gradient nodes go in clusters of their own (``∇ conv1``) so a layer's forward cluster stays
compact, and the backward pass is mirrored beside the forward one.  Constants and the
train/eval flag are drawn small, once per use, instead of as hubs with long edges to every
reader; so are parameters where gradient nodes read them.  State updates, and the values
``assign`` stores, are dashed edges back to the variable they set.
"""
from __future__ import annotations

from netlang.ir.graph import Graph, Node, device_of
from netlang.ops.state import ASSIGN_OP
from netlang.viz.changes import Changes
from netlang.viz.diagram import Box, Diagram, Edge
from netlang.viz.labels import const_text, op_text, shape_text
from netlang.viz.roles import add_inputs, add_outputs, assigned_names, edge_label, gradient_of
from netlang.viz.units import HIDDEN_OPS, call_key, is_grad

GRAD_CLUSTER = "∇ "


def cluster_of(node: Node) -> str:
    if not node.scope:
        return ""
    return GRAD_CLUSTER + node.scope if is_grad(node) else node.scope


def op_diagram(graph: Graph, title: str = "", changes: Changes | None = None) -> Diagram:
    """The op view of ``graph``; ``changes`` marks what optimization merged or folded."""
    diagram = Diagram(title or graph.name)
    names = assigned_names(graph)
    grads = gradient_of(graph)
    add_inputs(diagram, graph)
    per_use = {n.id for n in graph.nodes.values() if _drawn_per_use(n, changes)}
    for node in graph.nodes.values():
        if not node.is_source("input") and node.id not in per_use:
            diagram.add_box(node_box(graph, node, names, grads, changes))
            if node.scope:
                diagram.add_cluster_path(cluster_of(node))
    anchor_backward_calls(diagram, graph)
    for node in graph.nodes.values():
        add_input_edges(diagram, graph, node, names, per_use)
    for state_name, new in graph.updates.items():
        if state_name in graph.state and new not in per_use:
            diagram.add_edge(Edge(key_of(graph, new), key_of(graph, graph.state[state_name]),
                                  "update", "update", constraint=False))
    for node in graph.nodes.values():          # assign(x, v) stores into x when a run ends
        if node.op != ASSIGN_OP or node.id in per_use:
            continue
        name = node.attrs["variable"]
        variable = graph.params.get(name, graph.state.get(name))
        if variable is not None and variable not in per_use:
            diagram.add_edge(Edge(key_of(graph, node.id), key_of(graph, variable), "assign",
                                  "update", constraint=False))
    add_outputs(diagram, graph, lambda nid: None if nid in per_use else key_of(graph, nid),
                names)
    return diagram


def anchor_backward_calls(diagram: Diagram, graph: Graph) -> None:
    """Mirror the backward pass beside the forward one: the gradient nodes a call's
    cotangent enters first share a rank with that call's output, as in the layer view."""
    last_forward: dict[tuple, int] = {}
    for node in graph.nodes.values():
        if not is_grad(node) and not node.is_variable() and node.op not in HIDDEN_OPS:
            last_forward[call_key(node)] = node.id
    for node in graph.nodes.values():
        partner = last_forward.get(call_key(node)) if is_grad(node) else None
        if partner is None or key_of(graph, node.id) not in diagram.boxes:
            continue
        if not any(is_grad(graph.nodes[i]) and call_key(graph.nodes[i]) == call_key(node)
                   for i in node.inputs):
            diagram.boxes[key_of(graph, node.id)].rank_with = key_of(graph, partner)


def _drawn_per_use(node: Node, changes: Changes | None) -> bool:
    if node.op not in HIDDEN_OPS:
        return False
    return changes is None or not changes.marks(node.id)


def key_of(graph: Graph, nid: int) -> str:
    node = graph.nodes[nid]
    return f"input {node.name}" if node.is_source("input") else f"op{nid}"


def node_box(graph: Graph, node: Node, names, grads, changes) -> Box:
    if node.is_variable():
        leaf = (node.name or "").rpartition("/")[2] if node.scope else node.name
        box = Box(key_of(graph, node.id), node.op, leaf or node.op, [shape_text(node.type)])
    else:
        kind = "grad" if is_grad(node) else ("const" if node.op in HIDDEN_OPS else "op")
        lines = [names[node.id]] if node.id in names else []
        if node.id in grads:
            lines.append("∇" + grads[node.id])
        box = Box(key_of(graph, node.id), kind, op_text(graph, node, False), lines)
    box.cluster = cluster_of(node)
    box.device = device_of(node)
    if changes is not None:
        box.marks = changes.marks(node.id)
    return box


def copy_box(src: Node, key: str, cluster: str) -> Box:
    """A small copy of a constant, the mode flag, or a parameter a gradient node reads,
    drawn beside its reader instead of an edge across the picture."""
    if src.is_variable():
        return Box(key, src.op, src.name or src.op, cluster=cluster, small=True)
    text = const_text(src) if src.is_source("const") else src.op
    return Box(key, "const", text, cluster=cluster, small=True)


def edge_kind(src: Node, dst: Node) -> str:
    if src.is_variable():
        return "param"
    if is_grad(dst):
        return "grad" if is_grad(src) else "saved"
    return "data"


def _crosses_calls(src: Node, dst: Node) -> bool:
    """A gradient flowing from one call's backward nodes to another's: in the mirrored
    picture it runs upwards, so it must not push its reader down."""
    return is_grad(src) and is_grad(dst) and call_key(src) != call_key(dst)


def add_input_edges(diagram: Diagram, graph: Graph, node: Node, names, per_use) -> None:
    if node.id in per_use or node.is_source("input"):
        return
    dst = key_of(graph, node.id)
    for pos, i in enumerate(node.inputs):
        src = graph.nodes[i]
        if i in per_use or (src.is_variable() and is_grad(node)):
            diagram.add_box(copy_box(src, f"{dst}_in{pos}", cluster_of(node)))
            diagram.add_edge(Edge(f"{dst}_in{pos}", dst, "", "param"))
            continue
        kind = edge_kind(src, node)
        if kind == "saved":
            # An activation kept for the backward pass: its forward edge already says the
            # shape, and letting it rank the gradient nodes would drag them across the page.
            diagram.add_edge(Edge(key_of(graph, i), dst, "", kind, constraint=False))
            continue
        label = "" if src.is_variable() else edge_label(graph, i, names)
        constraint = not (_crosses_calls(src, node) and node.span is not None)
        diagram.add_edge(Edge(key_of(graph, i), dst, label, kind, constraint))
