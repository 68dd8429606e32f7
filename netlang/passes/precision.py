"""Changing a graph's float precision (gradcheck runs networks in float64)."""
from __future__ import annotations

import numpy as np

from netlang.ir.graph import Graph
from netlang.ir.types import DType
from netlang.passes.report import Report, report
from netlang.passes.rewrite import rebuild


def to_float64(graph: Graph) -> tuple[Graph, Report]:
    """Every f32 value becomes f64: types, constants and dtype attributes."""
    count = 0

    def visit(b, node, inputs):
        nonlocal count
        if node.type.dtype is not DType.f32 and node.attrs.get("dtype") not in ("f32",):
            return None
        count += 1
        attrs = dict(node.attrs)
        if attrs.get("dtype") == "f32":
            attrs["dtype"] = "f64"
        if node.is_source("const"):
            value = np.asarray(attrs["value"], dtype=np.float64)
            value.setflags(write=False)
            attrs["value"] = value
        new_type = node.type.with_dtype(DType.f64) if node.type.dtype is DType.f32 else node.type
        return b.graph.add(node.op, inputs, attrs, new_type, scope=node.scope, name=node.name,
                           span=node.span, tags=node.tags)

    new, mapping = rebuild(graph, visit)
    return new, report(f"converted {count} node(s) to f64", changed=count, mapping=mapping)
