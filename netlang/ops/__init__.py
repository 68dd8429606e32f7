"""The op table and its families.  Importing this package registers every op."""
from netlang.ops import (  # noqa: F401
    activations,
    collective,
    conv,
    device,
    elementwise,
    fused,
    image,
    index,
    linalg,
    loss,
    lrn,
    norm,
    pool,
    random,
    reduce,
    shape,
    state,
)
from netlang.ops.builder import Builder
from netlang.ops.registry import OPS, REQUIRED, OpDef, defop, get_op

__all__ = ["OPS", "REQUIRED", "Builder", "OpDef", "defop", "get_op"]
