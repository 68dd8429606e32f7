"""Mixed precision: the GEMM-shaped ops compute in a half dtype, everything else in f32.

``precision mixed`` in the train section (``mixed(dtype=f16)`` on a GPU) trains with f32
master weights, as the mixed-precision recipe and PyTorch's autocast do: each convolution and
matmul of the network gets its float32 operands cast to the half dtype and its result cast back
to float32, so parameters, optimizer slots, batchnorm, softmax and the loss stay float32 and
only the products that dominate the cost run in half.  Autodiff then differentiates the casts
(a cast's VJP casts the gradient back), so the backward GEMMs run in half too and every
parameter's gradient arrives in float32.  The transform runs on the network before autodiff.
"""
from __future__ import annotations

from netlang.ir.graph import Graph
from netlang.ir.types import DType
from netlang.passes.rewrite import rebuild

HALF_OPS = ("conv2d", "conv2d_transpose", "matmul")


def autocast(graph: Graph, dtype: DType) -> Graph:
    """``graph`` with every f32 conv2d, conv2d_transpose and matmul computed in ``dtype``."""
    if not dtype.is_half:
        raise ValueError(f"autocast computes in f16 or bf16, not {dtype}")

    def visit(b, node, inputs):
        if node.op not in HALF_OPS or node.type.dtype is not DType.f32:
            return None
        halves = [b.cast(i, dtype=str(dtype)) if b.type_of(i).dtype is DType.f32 else i
                  for i in inputs]
        return b.cast(b.op(node.op, *halves, **node.attrs), dtype="f32")

    new, _ = rebuild(graph, visit)
    return new
