"""Elementwise fusion: maximal chains and trees of elementwise ops become one ``fused`` node.

Bias add + relu, batchnorm's normalize-scale-shift, an optimizer's update of one parameter:
each is a run of elementwise ops whose intermediate values nobody else reads.  Run separately,
every op allocates an array and sweeps memory once; fused, the group runs as one kernel (one
generated CUDA kernel on CuPy, ``out=`` buffers on NumPy; see ops/fused.py).

A node joins the group of its users when it is elementwise and pure, all its users are in that
one group (so its value never leaves it), it has the group's shape (one loop covers the whole
group; smaller operands such as a bias stay outside and broadcast), it is on the group's
device (``on gpu { }``), and it is not a value anyone may fetch or update by name.  Fusion
runs last, after autodiff and the algebraic passes, so they see the primitive ops; ``fused``
still has a VJP (it re-emits the primitives), so a fused graph can be differentiated again.
"""
from __future__ import annotations

from netlang.ir.graph import Graph, Node, device_of
from netlang.ops.fused import format_expr, input_ref, step_ref
from netlang.ops.registry import OPS
from netlang.passes.report import Report, report
from netlang.passes.rewrite import replace_groups


def _hashable_attrs(node: Node) -> tuple | None:
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                         for k, v in node.attrs.items()))
    try:
        hash(items)
    except TypeError:
        return None
    return items


def fusible(node: Node) -> bool:
    """An elementwise, pure op with a kernel and plain attributes (a fused group is not
    elementwise in its record: groups do not nest)."""
    opdef = OPS.get(node.op)
    return (opdef is not None and opdef.elementwise and opdef.pure and not opdef.random
            and opdef.kernel is not None and _hashable_attrs(node) is not None)


def named_values(graph: Graph) -> set[int]:
    """Values a run must produce or a session may fetch by name: they stay visible nodes.
    (A program's graph names only its fetches: ``compiler.program_graph``.)"""
    return {*graph.outputs.values(), *graph.updates.values(), *graph.values.values()}


def find_groups(graph: Graph) -> list[list[int]]:
    """Maximal fusible groups of two or more nodes, each in topological order (root last)."""
    users = graph.users()
    keep = named_values(graph)
    group_of: dict[int, int] = {}          # node -> its group's root
    groups: dict[int, list[int]] = {}
    for node in reversed(list(graph.nodes.values())):
        if not fusible(node):
            continue
        targets = {group_of.get(u) for u in users[node.id]}
        root = targets.pop() if len(targets) == 1 else None
        if (root is not None and node.id not in keep
                and node.type.shape == graph.nodes[root].type.shape
                and device_of(node) == device_of(graph.nodes[root])):
            group_of[node.id] = root
            groups[root].append(node.id)
        else:
            group_of[node.id] = node.id
            groups[node.id] = [node.id]
    return sorted((sorted(m) for m in groups.values() if len(m) > 1), key=lambda m: m[-1])


def group_expr(graph: Graph, members: list[int]) -> tuple[tuple, list[int]]:
    """The group's sub-expression over its external inputs, and those inputs in order."""
    refs: dict[int, str] = {}
    external: list[int] = []
    steps = []
    for j, nid in enumerate(members):
        node = graph.nodes[nid]
        args = []
        for i in node.inputs:
            if i not in refs:
                refs[i] = input_ref(len(external))
                external.append(i)
            args.append(refs[i])
        steps.append((node.op, tuple(args), _hashable_attrs(node)))
        refs[nid] = step_ref(j)
    return tuple(steps), external


def fuse_elementwise(graph: Graph) -> tuple[Graph, Report]:
    """Replace every maximal elementwise group with one ``fused`` node."""
    groups = find_groups(graph)
    if not groups:
        return graph, report("no elementwise groups to fuse")
    by_root = {g[-1]: g for g in groups}
    lines = []

    def emit(b, node, mapped):
        if node.id not in by_root:
            return None
        expr, external = group_expr(graph, by_root[node.id])
        inputs = [mapped(i) for i in external]
        with b.like(node):
            nid = b.op("fused", *inputs, expr=expr)
        lines.append(_describe(b.graph, nid, inputs, expr))
        return nid

    new, mapping = replace_groups(graph, {m for g in groups for m in g[:-1]}, emit)
    count = sum(len(g) for g in groups)
    head = f"fused {count} elementwise nodes into {len(groups)} group(s)"
    return new, report(head, lines, changed=count, mapping=mapping)


def _describe(graph: Graph, nid: int, inputs: list[int], expr: tuple) -> str:
    """``%12: f32[N,24,24,32] = relu(add(%9, %conv1/b))  # conv1  (2 ops)``."""
    node = graph.nodes[nid]
    formula = format_expr(expr, [graph.nodes[i].label() for i in inputs])
    where = " ".join(x for x in (node.scope, node.span.short() if node.span else "") if x)
    note = f"  # {where}" if where else ""
    return f"{node.label()}: {node.type} = {formula}  ({len(expr)} ops){note}"
