"""The boxes both views share: inputs, outputs (loss, metrics), and edge labels.

Inputs sit at the top, outputs at the bottom as sinks fed by the value they name, each in
its role's colour.  An edge says the shape of the value it carries, prefixed by the value's
name when the spec named it (``logits: N×10``).
"""
from __future__ import annotations

from collections.abc import Callable

from netlang.compiler import GRAD_PREFIX
from netlang.ir.graph import Graph
from netlang.viz.diagram import Box, Diagram, Edge
from netlang.viz.labels import shape_text


def output_kind(graph: Graph, name: str) -> str:
    if name == graph.loss:
        return "loss"
    return "metric" if name in graph.metrics else "output"


def gradient_of(graph: Graph) -> dict[int, str]:
    """Gradient value id -> the parameter it is the gradient of (training graphs)."""
    return {nid: name[len(GRAD_PREFIX):] for name, nid in graph.outputs.items()
            if name.startswith(GRAD_PREFIX)}


def assigned_names(graph: Graph) -> dict[int, str]:
    """Value id -> the name a spec gave it (``h``, ``logits``, an output); first name wins."""
    names: dict[int, str] = {}
    skip = set(graph.inputs.values()) | set(graph.params.values()) | set(graph.state.values())
    for name, nid in [*graph.values.items(), *graph.outputs.items()]:
        if nid not in skip and not name.startswith(GRAD_PREFIX):
            names.setdefault(nid, name)
    return names


def edge_label(graph: Graph, nid: int, names: dict[int, str]) -> str:
    """``logits: N×10``; a name given inside a block shows without the block's path
    (``a``, not ``residual1/a``): the edge sits in the block's cluster."""
    shape = shape_text(graph.nodes[nid].type)
    return f"{names[nid].rpartition('/')[2]}: {shape}" if nid in names else shape


def add_inputs(diagram: Diagram, graph: Graph) -> None:
    for name in graph.inputs:
        diagram.add_box(Box(f"input {name}", "input", name, ["input"]))


def add_outputs(diagram: Diagram, graph: Graph, box_of: Callable[[int], str | None],
                names: dict[int, str]) -> None:
    """A sink per named output, loss and metric, fed by the box holding its value.

    Parameter gradients (outputs named ``grad/conv1/W`` in training graphs) get no sink:
    the gradient box says which parameters it produces.
    """
    for name, nid in graph.outputs.items():
        if name.startswith(GRAD_PREFIX):
            continue
        kind = output_kind(graph, name)
        key = f"output {name}"
        diagram.add_box(Box(key, kind, name, [kind]))
        src = box_of(nid)
        if src is not None:
            label = edge_label(graph, nid, {} if names.get(nid) == name else names)
            diagram.add_edge(Edge(src, key, label))
