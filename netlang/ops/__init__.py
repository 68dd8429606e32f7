"""The op table and its families.  Importing this package registers every op."""
from netlang.ops import elementwise, state  # noqa: F401
from netlang.ops import fused  # noqa: F401  (the fusion pass's op)
from netlang.ops import activations  # noqa: F401
from netlang.ops import reduce  # noqa: F401
from netlang.ops import shape  # noqa: F401
from netlang.ops import linalg  # noqa: F401
from netlang.ops import loss  # noqa: F401
from netlang.ops import conv  # noqa: F401
from netlang.ops import pool  # noqa: F401
from netlang.ops import image  # noqa: F401
from netlang.ops import random  # noqa: F401
from netlang.ops.builder import Builder
from netlang.ops.registry import OPS, REQUIRED, OpDef, defop, get_op

__all__ = ["Builder", "OPS", "OpDef", "REQUIRED", "defop", "get_op"]
