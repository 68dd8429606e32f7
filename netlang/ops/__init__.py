"""The op table and its families.  Importing this package registers every op."""
from netlang.ops import elementwise, state  # noqa: F401
from netlang.ops.builder import Builder
from netlang.ops.registry import OPS, REQUIRED, OpDef, defop, get_op

__all__ = ["Builder", "OPS", "OpDef", "REQUIRED", "defop", "get_op"]
