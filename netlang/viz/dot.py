"""A ``Diagram`` as DOT text, styled by role.  This module and ``output.py`` import graphviz.

Flow is top to bottom.  Each box kind has one style (inputs blue, outputs green, loss red,
metrics yellow, parameters purple cylinders, state teal cylinders, gradients orange; a box
an ``on`` block placed has a thick outline in its device's colour: cpu blue, gpu green); edge
labels are Graphviz labels proper, which ``dot`` places without overlaps.  Every box and edge
carries its kind as an SVG class, so tests and style sheets can find them.
"""
from __future__ import annotations

from html import escape

import graphviz

from netlang.viz.diagram import Box, Diagram

FONT = "Helvetica,Arial,sans-serif"

STYLES: dict[str, dict[str, str]] = {
    "input": {"shape": "box", "style": "rounded,filled,bold", "fillcolor": "#d0e2ff",
              "color": "#1c5bb8"},
    "output": {"shape": "box", "style": "rounded,filled,bold", "fillcolor": "#d3f0dc",
               "color": "#2b8a3e"},
    "loss": {"shape": "box", "style": "rounded,filled,bold", "fillcolor": "#ffd6d6",
             "color": "#c92a2a"},
    "metric": {"shape": "box", "style": "rounded,filled,bold", "fillcolor": "#fff0c2",
               "color": "#a07800"},
    "layer": {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff",
              "color": "#343a40"},
    "op": {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff",
           "color": "#495057"},
    "param": {"shape": "cylinder", "style": "filled", "fillcolor": "#e5dbff",
              "color": "#6741d9"},
    "state": {"shape": "cylinder", "style": "filled,dashed", "fillcolor": "#c5f6fa",
              "color": "#0c8599"},
    "const": {"shape": "box", "style": "filled", "fillcolor": "#f1f3f5", "color": "#adb5bd",
              "fontsize": "9", "height": "0.2", "margin": "0.04,0.02"},
    "grad": {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffe8cc",
             "color": "#e8590c"},
}

EDGE_STYLES: dict[str, dict[str, str]] = {
    "data": {"color": "#495057"},
    "param": {"color": "#7950f2", "style": "dashed"},
    "grad": {"color": "#e8590c", "fontcolor": "#c2410c"},
    "saved": {"color": "#adb5bd", "style": "dotted"},
    "update": {"color": "#0c8599", "style": "dashed", "fontcolor": "#0c8599"},
}

LEGEND_TEXT = {"input": "input", "output": "output", "loss": "loss", "metric": "metric",
               "layer": "layer", "op": "op", "param": "parameter", "state": "state",
               "grad": "gradient", "const": "constant"}

MARK_COLOR = "#d9480f"

# Boxes an 'on cpu { }' / 'on gpu { }' block placed: a thick outline in the device's colour,
# and the device in the key above the graph.
DEVICE_COLORS = {"cpu": "#1864ab", "gpu": "#2f9e44"}


def html_label(box: Box) -> str:
    """Bold title, then the detail lines smaller, then optimizer marks in orange."""
    size = 9 if box.small else 11
    parts = [f'<font point-size="{size}"><b>{escape(box.title)}</b></font>']
    parts += [f'<font point-size="9">{escape(line)}</font>' for line in box.lines]
    parts += [f'<font point-size="9" color="{MARK_COLOR}">{escape(m)}</font>'
              for m in box.marks]
    return "<" + "<br/>".join(parts) + ">"


def node_attrs(box: Box) -> dict[str, str]:
    attrs = dict(STYLES[box.kind])
    attrs["class"] = box.kind
    if box.device is not None:
        attrs.update(color=DEVICE_COLORS[box.device], penwidth="3")
        attrs["class"] += f" on-{box.device}"
    if box.marks:
        attrs["color"] = MARK_COLOR
        attrs["penwidth"] = "2"
    return attrs


def to_dot(diagram: Diagram) -> str:
    """The DOT source of a diagram: deterministic, so it can be pinned in golden files."""
    g = graphviz.Digraph(name=_dot_name(diagram.title))
    g.attr("graph", rankdir="TB", newrank="true", nodesep="0.3", ranksep="0.25",
           fontname=FONT, fontsize="14", labelloc="t", label=graph_label(diagram))
    g.attr("node", fontname=FONT, fontsize="11", margin="0.12,0.05", height="0.3")
    g.attr("edge", fontname=FONT, fontsize="9", fontcolor="#495057", arrowsize="0.6")
    _add_clusters(g, diagram, "")
    for box in diagram.boxes.values():
        if box.cluster not in diagram.clusters:
            g.node(box.key, html_label(box), **node_attrs(box))
    _add_rank_pairs(g, diagram)
    for edge in diagram.edges:
        attrs = dict(EDGE_STYLES[edge.kind], **{"class": edge.kind})
        if edge.label:
            attrs["label"] = " " + edge.label
        if not edge.constraint:
            attrs["constraint"] = "false"
        g.edge(edge.src, edge.dst, **attrs)
    return g.source


def _dot_name(title: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in title) or "net"


def _children(diagram: Diagram, parent: str) -> list[str]:
    return [p for p in diagram.clusters
            if p.rpartition("/")[0] == parent and p != parent]


def _add_clusters(g, diagram: Diagram, parent: str) -> None:
    """Nested clusters for scopes (``residual1`` holding ``residual1/bn1``)."""
    for path in _children(diagram, parent):
        grad = path.startswith("∇")
        with g.subgraph(name=f"cluster_{_dot_name(path)}") as c:
            c.attr(label=diagram.clusters[path], labeljust="l", fontsize="10",
                   style="rounded,filled", color="#fdba8c" if grad else "#ced4da",
                   fillcolor="#fff8f0" if grad else "#f8f9fa", fontcolor="#495057")
            c.attr("graph", **{"class": "cluster grad" if grad else "cluster"})
            for box in diagram.boxes.values():
                if box.cluster == path:
                    c.node(box.key, html_label(box), **node_attrs(box))
            _add_clusters(c, diagram, path)


def _add_rank_pairs(g, diagram: Diagram) -> None:
    for box in diagram.boxes.values():
        if box.rank_with and box.rank_with in diagram.boxes:
            with g.subgraph() as s:
                s.attr(rank="same")
                s.node(box.rank_with)
                s.node(box.key)
                # An invisible flat edge keeps the gradient to the right of its layer.
                s.edge(box.rank_with, box.key, style="invis", weight="4")


def graph_label(diagram: Diagram) -> str:
    """The title, a key to the colours used, and the optimizer's notes, above the graph."""
    kinds = [k for k in LEGEND_TEXT if k in diagram.kinds()]
    cells = "".join(
        f'<td bgcolor="{STYLES[k]["fillcolor"]}" color="{STYLES[k]["color"]}">'
        f'<font point-size="9">{LEGEND_TEXT[k]}</font></td>' for k in kinds)
    devices = {box.device for box in diagram.boxes.values()} - {None}
    cells += "".join(f'<td color="{DEVICE_COLORS[d]}" border="3"><font point-size="9">on {d}'
                     f'</font></td>' for d in sorted(devices))
    rows = [f'<tr><td><font point-size="14">{escape(diagram.title)}</font></td></tr>']
    if cells:
        rows.append('<tr><td><table border="0" cellborder="1" cellspacing="2" '
                    f'cellpadding="2"><tr>{cells}</tr></table></td></tr>')
    rows += [f'<tr><td align="left"><font point-size="10">{escape(line)}</font></td></tr>'
             for line in diagram.notes]
    return '<<table border="0" cellspacing="1" cellpadding="1">' + "".join(rows) + "</table>>"
