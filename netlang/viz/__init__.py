"""Pictures of networks with Graphviz (the only place that imports graphviz).

    from netlang.viz import render
    render(model, "mnist.svg")                                # forward graph, one box a layer
    render(model, "train.png", train=True, detail="op")       # every node, gradients included
    render(model, "opt.svg", optimized=True)                  # after CSE, folding and DCE

The steps: pick the graph (``graphs``), describe it as boxes and edges (``layer_view`` or
``op_view``), write DOT (``dot``), lay it out and write the file (``output``).
"""
from __future__ import annotations

from pathlib import Path

from netlang.ir.graph import Graph
from netlang.viz.changes import Changes, compare, legend_lines
from netlang.viz.diagram import Box, Diagram, Edge
from netlang.viz.dot import to_dot
from netlang.viz.graphs import View, build_training_graph, select_view
from netlang.viz.labels import count_text, param_count
from netlang.viz.layer_view import layer_diagram
from netlang.viz.op_view import op_diagram
from netlang.viz.output import (
    FORMATS,
    GraphvizMissing,
    RenderError,
    format_of,
    svg_text,
    write_picture,
)

DETAILS = ("layer", "op")


def diagram_of(graph: Graph, detail: str = "layer", title: str = "",
               changes: Changes | None = None, training: bool = False) -> Diagram:
    """The boxes and edges of ``graph`` at layer or op detail."""
    if detail not in DETAILS:
        raise RenderError(f"unknown detail '{detail}'", hint="use --detail layer or op")
    build = layer_diagram if detail == "layer" else op_diagram
    params = param_count([graph.nodes[p] for p in graph.params.values()])
    size = f", {count_text(params)} parameters" if graph.params else ""
    diagram = build(graph, f"{title or graph.name} ({detail}s{size})", changes)
    if changes is not None:
        diagram.notes = legend_lines(changes, training)
    return diagram


def view_diagram(model, train: bool = False, optimized: bool = False,
                 detail: str = "layer") -> Diagram:
    view = select_view(model, train, optimized)
    return diagram_of(view.graph, detail, view.title, view.changes, view.training)


def render(model, path: str | Path, train: bool = False, optimized: bool = False,
           detail: str = "layer") -> Path:
    """Draw a compiled model's graph to ``path`` (.svg, .png, .pdf or .dot)."""
    format_of(Path(path))  # a bad extension fails before any work
    return write_picture(to_dot(view_diagram(model, train, optimized, detail)), path)


def svg(model, train: bool = False, optimized: bool = False,
        detail: str = "layer") -> str | None:
    """The picture ``render`` draws, as SVG text (None without Graphviz): what a notebook
    shows for a model (``Model._repr_svg_``)."""
    return svg_text(to_dot(view_diagram(model, train, optimized, detail)))


def render_graph(graph: Graph, path: str | Path, detail: str = "layer") -> Path:
    """Draw a bare IR graph (built by hand, or taken from any pass)."""
    return write_picture(to_dot(diagram_of(graph, detail)), path)


__all__ = [
    "DETAILS",
    "FORMATS",
    "Box",
    "Diagram",
    "Edge",
    "GraphvizMissing",
    "RenderError",
    "View",
    "build_training_graph",
    "compare",
    "diagram_of",
    "layer_diagram",
    "op_diagram",
    "render",
    "render_graph",
    "select_view",
    "svg",
    "to_dot",
    "view_diagram",
]
