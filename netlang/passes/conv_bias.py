"""Convolution + bias (+ relu) as one op: ``relu(add(conv2d(x, w), b))`` -> ``conv2d_bias``.

A conv layer lowers to conv2d, a broadcast add of its per-channel bias and usually relu.  A
library runs all three as one primitive (oneDNN: the bias is an argument of the convolution,
relu a post-op), so the image is written once instead of three times.  The pattern matches
when the convolution's value and the add's (when relu follows) are read by nothing else and
are not named values a run may fetch; the VJP of ``conv2d_bias`` emits the same gradient ops
the three would, so training computes the same numbers.  Runs before elementwise fusion, which
would otherwise take the add and relu.
"""
from __future__ import annotations

from netlang.ir.graph import Graph, Node, device_of
from netlang.passes.fusion import named_values
from netlang.passes.report import Report, describe, plural, report
from netlang.passes.rewrite import replace_groups


def _bias_add(graph: Graph, node: Node, users, keep) -> tuple[int, int] | None:
    """(conv id, bias id) when ``node`` is ``add(conv2d(...), b)`` with a per-channel b."""
    if node.op != "add":
        return None
    for conv, bias in (node.inputs, node.inputs[::-1]):
        c = graph.nodes[conv]
        if (c.op == "conv2d" and c.attrs.get("groups") in (None, 1) and users[conv] == [node.id]
                and conv not in keep and device_of(c) == device_of(node)
                and graph.nodes[bias].type.shape == (c.type.shape[-1],)
                and graph.nodes[bias].type.dtype == c.type.dtype and node.type == c.type):
            return conv, bias
    return None


def find_conv_bias(graph: Graph) -> dict[int, tuple[int, int, bool, list[int]]]:
    """root id -> (conv id, bias id, relu, absorbed ids) for every match."""
    users, keep = graph.users(), named_values(graph)
    found = {}
    for node in graph:
        match = _bias_add(graph, node, users, keep)
        if match is None:
            continue
        conv, bias = match
        after = users[node.id]
        relu = (len(after) == 1 and graph.nodes[after[0]].op == "relu"
                and node.id not in keep and device_of(graph.nodes[after[0]]) == device_of(node))
        root = after[0] if relu else node.id
        found[root] = (conv, bias, relu, [conv, node.id] if relu else [conv])
    return found


def fuse_conv_bias(graph: Graph) -> tuple[Graph, Report]:
    matches = find_conv_bias(graph)
    if not matches:
        return graph, report("no conv + bias to fuse")
    items = []

    def emit(b, node, mapped):
        if node.id not in matches:
            return None
        conv, bias, relu, _ = matches[node.id]
        c = graph.nodes[conv]
        x, w = (mapped(i) for i in c.inputs)
        items.append(f"{describe(graph, c)} + bias" + (" + relu" if relu else ""))
        with b.like(c):
            attrs = {k: v for k, v in c.attrs.items() if k != "groups"}    # always 1 here
            return b.op("conv2d_bias", x, w, mapped(bias), relu=relu, **attrs)

    absorbed = {a for m in matches.values() for a in m[3]}
    new, mapping = replace_groups(graph, absorbed, emit)
    summary = f"fused {plural(len(matches), 'convolution')} with their bias" + (
        " (and relu)" if any(m[2] for m in matches.values()) else "")
    return new, report(summary, items, changed=len(matches), mapping=mapping)
