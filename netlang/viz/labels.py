"""The words inside boxes and on edges: shapes, op attributes, what a layer is.

Shapes print as ``N×24×24×32`` (dtype added only when it is not f32), attributes in the
words a spec uses (``5×5, 32 filters, valid``), and a layer is described by its main op.
"""
from __future__ import annotations

import numpy as np

from netlang.ir.graph import Graph, Node
from netlang.ir.types import DType, TensorType, dim_prod
from netlang.ops.registry import OPS
from netlang.ops.state import MODE_OP

# The op that says what a layer is, most telling first (a conv layer also has an add).
MAIN_OPS = ("conv2d_transpose", "conv2d", "matmul", "maxpool", "avgpool", "resize",
            "dropout_mask", "softmax_cross_entropy", "sigmoid_cross_entropy", "log_softmax",
            "softmax", "maxout", "concat", "pad", "one_hot", "reshape", "transpose")


def dim_text(d) -> str:
    return str(d).replace("*", "·")


def shape_text(t: TensorType) -> str:
    """``N×24×24×32``; ``scalar`` for rank 0; the dtype in brackets unless f32."""
    body = "×".join(dim_text(d) for d in t.shape) if t.shape else "scalar"
    return body if t.dtype is DType.f32 else f"{body} ({t.dtype})"


def pair_text(v) -> str:
    """``(2, 2)`` -> ``2×2``, ``2`` -> ``2``."""
    if isinstance(v, (tuple, list)):
        return "×".join(str(x) for x in v)
    return str(v)


def count_text(n) -> str:
    """``3274634`` -> ``3,274,634``; symbolic counts as they are."""
    return f"{n:,}" if isinstance(n, int) else dim_text(n)


def const_text(node: Node) -> str:
    """A constant's value when short (``0.5``), else its shape."""
    value = node.attrs.get("value")
    if isinstance(value, np.ndarray) and value.size == 1:
        item = value.reshape(()).item()
        return f"{item:.4g}" if isinstance(item, float) else str(item)
    return f"const {shape_text(node.type)}"


def _padding(attrs) -> str:
    pad = attrs.get("padding")
    return str(pad).lower() if pad else ""


def _non_unit(name: str, v) -> str | None:
    values = v if isinstance(v, (tuple, list)) else (v,)
    return f"{name} {pair_text(v)}" if v is not None and any(x != 1 for x in values) else None


def conv_text(graph: Graph, node: Node) -> str:
    """``conv2d 5×5, 32 filters, valid`` (stride and dilation only when not 1)."""
    kh, kw, a, b = graph.nodes[node.inputs[1]].type.shape
    filters = a if node.op == "conv2d_transpose" else b
    parts = [f"{node.op} {kh}×{kw}", f"{filters} filters", _padding(node.attrs)]
    parts += [_non_unit("stride", node.attrs.get("stride")),
              _non_unit("dilation", node.attrs.get("dilation"))]
    return ", ".join(p for p in parts if p)


def pool_text(node: Node) -> str:
    window = node.attrs.get("window")
    stride = node.attrs.get("stride")
    parts = [f"{node.op} {pair_text(window)}"]
    if stride is not None and pair_text(stride) != pair_text(window):
        parts.append(f"stride {pair_text(stride)}")
    if _padding(node.attrs) == "same":
        parts.append("same")
    return ", ".join(parts)


def op_text(graph: Graph, node: Node, layer_words: bool = True) -> str:
    """One line for an op with its main attributes.  ``layer_words`` names what the op
    does in a spec's terms (``dense, 10 units``, ``dropout 0.5``, ``flatten``)."""
    a = node.attrs
    if node.op in ("conv2d", "conv2d_transpose") and len(node.inputs) == 2:
        return conv_text(graph, node)
    if node.op in ("maxpool", "avgpool"):
        return pool_text(node)
    if layer_words and node.op == "dropout_mask":
        return f"dropout {a.get('rate')}"
    if layer_words and node.op == "matmul":
        w = graph.nodes[node.inputs[1]]
        if w.is_source("param") and w.type.rank == 2:
            return f"dense, {w.type.shape[1]} units"
    if layer_words and node.op == "reshape" and node.type.rank == 2:
        return "flatten"
    if node.is_source("const"):
        return const_text(node)
    if node.op == "fused":
        return "fused " + " → ".join(step[0] for step in a.get("expr", ()))
    if node.op == "cast":
        return f"cast to {a.get('dtype')}"
    return node.op + _short_attrs(node)


def _short_attrs(node: Node) -> str:
    """`` axis 1`` for the attributes worth showing, leaving out the op's defaults."""
    defaults = OPS[node.op].attrs if node.op in OPS else {}
    shown = []
    for key in SHOWN_ATTRS:
        v = node.attrs.get(key)
        if v is None or isinstance(v, np.ndarray) or (key in defaults and defaults[key] == v):
            continue
        shown.append(f"{key} {pair_text(v) if key == 'size' else _plain(v)}")
    return (" " + ", ".join(shown)) if shown else ""


SHOWN_ATTRS = ("axis", "axes", "keepdims", "alpha", "rate", "pieces", "exponent", "depth", "perm",
               "shape", "size", "method", "value", "dtype", "paddings")


def _plain(v) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(str(x) for x in v) + ")"
    return str(v)


def layer_text(graph: Graph, nodes: list[Node], kind: str = "") -> str:
    """What a layer is, from its ops: ``conv2d 5×5, 32 filters, valid``, ``batchnorm``.

    ``kind`` is the layer the spec called (from the frontend's records); it names layers
    whose ops say little, such as a batchnorm after optimization folded it to a fused op.
    """
    ops = {n.op: n for n in nodes}
    for op in MAIN_OPS:
        if op in ops:
            return op_text(graph, ops[op])
    if "select" in ops and any(graph.nodes[i].is_source("state") for n in nodes for i in n.inputs):
        return "batchnorm"
    compute = [n for n in nodes if not n.is_source() and n.op != MODE_OP]
    if len(compute) == 1 and (not kind or compute[0].op in (kind, "fused")):
        return op_text(graph, compute[0])
    if kind:
        return kind
    names = list(dict.fromkeys(n.op for n in compute))
    return ", ".join(names[:3]) + (" …" if len(names) > 3 else "")


def numel(t: TensorType):
    return dim_prod(t.shape)


def param_count(nodes: list[Node]):
    """Total elements of the given parameter nodes (an int for static shapes)."""
    total = 0
    for n in nodes:
        k = numel(n.type)
        total = total + k if isinstance(k, int) and isinstance(total, int) else k
    return total
