"""Device placement: every node runs on a device, and a value that crosses is copied once.

``on gpu { ... }`` in a spec tags the nodes its statements build (``ir.graph.device_of``);
the gradients of those nodes and the nodes later passes write in their place keep the tag,
and CSE, fusion and the conv+bias pass never merge nodes of two devices.  An untagged node
runs on the session's device (``--device``).  This pass, the last of a program's, gives each
edge whose two ends are on different devices a ``transfer`` node (one per value and target
device, however many consumers read it there), and copies a fetched value to the session's
device and a variable's new value to the variable's.  Nothing changes in a graph without
``on`` blocks.

The executor then runs each node on its device's backend (runtime/executor.py);
``netlang explain`` lists the transfers with their sizes.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from netlang.ir.graph import Graph, Node, device_of
from netlang.ops.builder import Builder
from netlang.passes.report import Report, describe, plural, report
from netlang.passes.rewrite import copy_node, rebuild


def placed(graph: Graph) -> bool:
    """Whether any node of ``graph`` is placed by an ``on`` block."""
    return any(device_of(n) is not None for n in graph)


def place_on(default: str) -> Callable[[Graph], tuple[Graph, Report]]:
    """The placement pass for a session on ``default`` (``cpu`` or ``gpu``)."""
    def placement(graph: Graph) -> tuple[Graph, Report]:
        if not placed(graph):
            return graph, report(f"every node on the {default}")
        copies: dict[tuple[int, str], int] = {}
        items: list[str] = []

        def on(b, value: int, device: str) -> int:
            """``value`` (an id of the new graph) on ``device``: itself, or its copy there."""
            source = device_of(b.graph.nodes[value], default)
            if source == device:
                return value
            key = (value, device)
            if key not in copies:
                with b.in_scope(b.graph.nodes[value].scope), b.placed(device):
                    copies[key] = b.transfer(value, device=device, source=source)
                items.append(_describe(b.graph, copies[key], source, device))
            return copies[key]

        def visit(b, node: Node, inputs: tuple[int, ...]) -> int | None:
            device = device_of(node, default)
            moved = tuple(on(b, i, device) for i in inputs)
            return copy_node(b, node, moved) if moved != inputs else None

        new, mapping = rebuild(graph, visit)
        b = Builder(new)
        for name, nid in list(new.outputs.items()):           # fetched on the session's
            new.outputs[name] = on(b, nid, default)           # device
        for old, nid in list(mapping.items()):
            if nid is not None and old in graph.outputs.values():
                mapping[old] = on(b, nid, default)
        for name, nid in list(new.updates.items()):           # a variable's new value on
            variable = new.params.get(name, new.state.get(name))   # the variable's device
            if variable is not None:
                new.updates[name] = on(b, nid, device_of(new.nodes[variable], default))
        head = (f"{plural(len(items), 'transfer')} between devices (unplaced nodes on the "
                f"{default})")
        return new, report(head, items, changed=len(items), mapping=mapping)
    return placement


def _describe(graph: Graph, nid: int, source: str, device: str) -> str:
    """``%9: f32[N,3] relu [..] @x.net:5:9 cpu -> gpu, 12 B per example``."""
    node = graph.nodes[nid]
    value = graph.nodes[node.inputs[0]]
    elements = math.prod(d if isinstance(d, int) else 1 for d in node.type.shape)
    per = "per step" if node.type.is_static else "per example"
    return (f"{node.label()}: {node.type} = {describe(graph, value)} {source} -> {device}, "
            f"{elements * node.type.dtype.itemsize:,} B {per}")
