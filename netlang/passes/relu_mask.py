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
(CSE runs before it and fusion after it, so the copy stays and joins relu_grad's loop).  Its
other users, the gradient of x's loop, get their own copy of the rewritten relu_grad too (dy
for the gradient they read: as many reads), so only beta's and gamma's sums read the gradient
and the loop taking them stores nothing (``channel_sums.fuse_channel_sums``): a second pass
fewer, the write of the gradient.  The backward of a batchnorm -> relu then sweeps the image
twice, reading dy and x each time, and writes only the gradient of x.

It changes a relu_grad only where a ``batchnorm_grad_gamma`` of that gradient reads the very x
the steps start from, the steps take nothing else of the image's size, and dy's op does not
read y itself (relu -> maxpool: the pooled gradient loop of runtime/pool_gradients.py reads y
to find each window's max and multiplies by y > 0 there): elsewhere recomputing would read as
much as it saves.  It copies relu_grad for its users only where each is an elementwise op of
its shape (so the copy joins that user's loop).  Residual at batch 256 (one process, the
programs with and without this pass taking turns, busy 2-core AMD EPYC): the kernels other
than convolutions 39.9 -> 34.4 ms a step; fashion_aug at 128: 24.6 -> 21.9 ms.
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Mask:
    """A relu_grad this pass rewrites: the steps from x to its relu's input, and the users
    that get a copy of the rewritten relu_grad of their own (``own``)."""

    steps: list[int]
    own: list[int]


# Reductions a generated loop takes of the values it writes (runtime/channel_sums.py).
SUMS = ("sum", "mean", "sum_to_like", "batchnorm_grad_gamma")


def own_copies(graph: Graph, node: Node, users: list[int], masks: set[int]) -> list[int]:
    """The users of relu_grad ``node`` to give their own copy of it: every one but the
    sums, when each is an elementwise op of its shape (the copy joins its loop, so only the
    sums read the gradient, and the loop taking them need not store it); else none."""
    others = [u for u in users if not (graph.nodes[u].op in SUMS
                                       and graph.nodes[u].inputs[0] == node.id)]
    if all(fusible(graph.nodes[u]) and graph.nodes[u].type.shape == node.type.shape
           and u not in masks for u in others):
        return others
    return []


def find_masks(graph: Graph) -> dict[int, Mask]:
    """relu_grad id -> its ``Mask``, for every relu_grad this pass rewrites."""
    users, keep = graph.users(), named_values(graph)
    found: dict[int, list[int]] = {}
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
    return {nid: Mask(steps, [] if nid in keep
                      else own_copies(graph, graph.nodes[nid], users[nid], set(found)))
            for nid, steps in found.items()}


def mask_from_input(graph: Graph) -> tuple[Graph, Report]:
    masks = find_masks(graph)
    if not masks:
        return graph, report("no relu gradient to take from a batchnorm's input")
    owners = {u: nid for nid, mask in masks.items() for u in mask.own}
    items = []

    def recomputed(b, node: Node, mapped) -> int:
        """A new relu_grad(dy, x * s + t) for relu_grad ``node``, its steps copied."""
        copies: dict[int, int] = {}
        for step in masks[node.id].steps:
            old = graph.nodes[step]
            copies[step] = copy_node(b, old, tuple(copies[i] if i in copies else mapped(i)
                                                   for i in old.inputs))
        top = graph.nodes[node.inputs[1]].inputs[0]
        return copy_node(b, node, (mapped(node.inputs[0]), copies[top]))

    def emit(b, node: Node, mapped):
        if node.id in owners:            # a user with its own copy of the gradient
            grad = graph.nodes[owners[node.id]]
            own = recomputed(b, grad, mapped)
            return copy_node(b, node, tuple(own if i == grad.id else mapped(i)
                                            for i in node.inputs))
        if node.id not in masks:
            return None
        mask = masks[node.id]
        top = graph.nodes[node.inputs[1]].inputs[0]
        own = f"; {plural(len(mask.own), 'user')} with its own copy" if mask.own else ""
        items.append(f"{describe(graph, node)} recomputes relu's input "
                     f"{describe(graph, graph.nodes[top])} ({plural(len(mask.steps), 'step')}"
                     f"{own})")
        return recomputed(b, node, mapped)

    new, mapping = replace_groups(graph, set(), emit)
    return new, report(f"took {plural(len(masks), 'relu gradient')} from the batchnorm's input",
                       items, changed=len(masks), mapping=mapping)
