"""Relu's gradient from the image a batchnorm normalized, not from relu's output.

After a batchnorm, which the batchnorm pass writes as ``relu(x * s + t)`` (``s``, ``t``
per-channel vectors), the backward's first loop over the image is ``relu_grad(dy, y)``: it
reads the incoming gradient dy and relu's output y, and the sums for gamma's gradient that the
same loop takes (``batchnorm_grad_gamma(g, x, mean, var)``, runtime/channel_sums.py) read x.
relu_grad(dy, v) is ``dy * (v > 0)``, and relu(v) > 0 exactly where v > 0 (NaN is neither),
so the loop may take ``x * s + t``, recomputed by the same float steps from the x it reads
anyway, in place of y: one pass over the image fewer ([256,28,28,16] f32 is 12.8 MB), the
same bits.

This pass gives such a relu_grad its own copy of the elementwise steps from x to relu's input
(CSE runs before it and fusion after it, so the copy stays and joins relu_grad's loop).  It
changes a relu_grad only where a ``batchnorm_grad_gamma`` of that gradient reads the very x the
steps start from, the steps take nothing else of the image's size, and dy's op does not read y
itself (relu -> maxpool: the pooled gradient loop of runtime/pool_gradients.py reads y to find
each window's max and multiplies by y > 0 there): elsewhere recomputing would read as much as
it saves.
"""
from __future__ import annotations

from netlang.ir.graph import Graph, Node
from netlang.passes.fusion import fusible, named_values
from netlang.passes.report import Report, describe, plural, report
from netlang.passes.rewrite import copy_node, replace_groups

MAX_STEPS = 8       # recompute short chains only (the batchnorm pass writes two steps)


def steps_from(graph: Graph, top: int, image: int) -> list[int] | None:
    """The elementwise steps that compute ``top`` from ``image`` and operands smaller than
    it (broadcast per-channel vectors, numbers), in graph order; None when ``top`` needs
    another value of the image's size, or more than ``MAX_STEPS`` steps."""
    shape = graph.nodes[image].type.shape
    steps: set[int] = set()
    todo = [top]
    while todo:
        nid = todo.pop()
        node = graph.nodes[nid]
        if nid == image or nid in steps or node.type.shape != shape:
            continue                        # the image itself, done, or a broadcast operand
        if not fusible(node) or not node.inputs or len(steps) == MAX_STEPS:
            return None
        steps.add(nid)
        todo.extend(node.inputs)
    return sorted(steps)


def pooled(graph: Graph, dy: int, y: int) -> bool:
    """Whether ``dy`` is a max pooling's gradient over ``y``: the loop that runs both reads y
    to find each window's max (runtime/pool_gradients.py)."""
    node = graph.nodes[dy]
    return node.op == "maxpool_grad" and node.inputs[0] == y


def find_masks(graph: Graph) -> dict[int, list[int]]:
    """relu_grad id -> the steps from x to its relu's input, for every relu_grad this pass
    rewrites."""
    users, keep = graph.users(), named_values(graph)
    found = {}
    for node in graph:
        if node.op != "relu_grad":
            continue
        relu = graph.nodes[node.inputs[1]]
        if relu.op != "relu" or relu.type != node.type or pooled(graph, node.inputs[0], relu.id):
            continue
        images = {graph.nodes[u].inputs[1] for u in users[node.id]
                  if graph.nodes[u].op == "batchnorm_grad_gamma"
                  and graph.nodes[u].inputs[0] == node.id}
        for image in sorted(images):
            steps = steps_from(graph, relu.inputs[0], image)
            if steps and not keep.intersection(steps):
                found[node.id] = steps
                break
    return found


def mask_from_input(graph: Graph) -> tuple[Graph, Report]:
    masks = find_masks(graph)
    if not masks:
        return graph, report("no relu gradient to take from a batchnorm's input")
    items = []

    def emit(b, node: Node, mapped):
        if node.id not in masks:
            return None
        copies: dict[int, int] = {}
        for step in masks[node.id]:
            old = graph.nodes[step]
            copies[step] = copy_node(b, old, tuple(copies[i] if i in copies else mapped(i)
                                                   for i in old.inputs))
        top = graph.nodes[node.inputs[1]].inputs[0]
        items.append(f"{describe(graph, node)} recomputes relu's input "
                     f"{describe(graph, graph.nodes[top])} ({plural(len(copies), 'step')})")
        return copy_node(b, node, (mapped(node.inputs[0]), copies[top]))

    new, mapping = replace_groups(graph, set(), emit)
    return new, report(f"took {plural(len(masks), 'relu gradient')} from the batchnorm's input",
                       items, changed=len(masks), mapping=mapping)
