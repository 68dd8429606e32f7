"""The typed tensor IR: types, the graph, its text form and its verifier."""
from netlang.ir.graph import SOURCE_OPS, Graph, Node, attr_key
from netlang.ir.printer import format_graph, format_node
from netlang.ir.types import DType, Sym, TensorType, broadcast_shapes, scalar, sym

__all__ = [
           "SOURCE_OPS",
           "DType",
           "Graph",
           "Node",
           "Sym",
           "TensorType",
           "attr_key",
           "broadcast_shapes",
           "format_graph",
           "format_node",
           "scalar",
           "sym",
]
