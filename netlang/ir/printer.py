"""The IR's text form, one node a line::

    %7: f32[N,24,24,32] = conv2d(%image, %conv1/W) {padding=VALID, stride=(1,1)}  # mnist.net:6:7

A node placed by ``on gpu { ... }`` says so among the notes (``# on gpu mnist.net:6:7``).

Tests pin it in golden files; users read it with ``netlang ir``.
"""
from __future__ import annotations

import numpy as np

from netlang.ir.graph import Graph, Node, device_of


def format_attr(value) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            body = np.array2string(value.ravel(), separator=",", precision=8)
            return body.replace("\n", "") if value.ndim <= 1 else f"{body}.reshape{value.shape}"
        return f"<{value.dtype}{list(value.shape)}>"
    if isinstance(value, tuple):
        return "(" + ",".join(format_attr(v) for v in value) + ")"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_node(graph: Graph, node: Node, with_span: bool = True) -> str:
    args = ", ".join(graph.nodes[i].label() for i in node.inputs)
    attrs = {k: v for k, v in node.attrs.items() if v is not None}
    attr_text = ""
    if attrs:
        attr_text = " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in sorted(attrs.items())) + "}"
    line = f"{node.label()}: {node.type} = {node.op}({args}){attr_text}"
    notes = []
    if node.name and node.label() != f"%{node.name}":
        notes.append(node.name)
    device = device_of(node)
    if with_span and device is not None:      # where it runs (not part of network_hash's text:
        notes.append(f"on {device}")          # a checkpoint fits wherever the ops run)
    if with_span and node.span is not None:
        notes.append(node.span.short())
    if notes:
        line += "  # " + " ".join(notes)
    return line


def format_graph(graph: Graph, with_span: bool = True) -> str:
    lines = [f"network {graph.name} {{"]
    lines += ["  " + format_node(graph, n, with_span) for n in graph.nodes.values()]
    for title, table in (("output", graph.outputs), ("update", graph.updates)):
        for name, nid in table.items():
            role = "loss" if name == graph.loss else (
                "metric" if name in graph.metrics else title)
            lines.append(f"  {role} {name} = {graph.nodes[nid].label()}")
    lines.append("}")
    return "\n".join(lines) + "\n"
