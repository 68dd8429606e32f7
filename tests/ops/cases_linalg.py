"""Property cases for ops/linalg.py: 2-D and batched matmul, broadcast batches, transposes."""
from __future__ import annotations

from hypothesis import strategies as st

from tests.ops.harness import array, op_case, shape


def operand(draw, batch: tuple, rows: int, cols: int, transposed: bool):
    """An array holding a [rows, cols] matrix per batch entry, stored transposed if asked."""
    last = (cols, rows) if transposed else (rows, cols)
    return array(draw, batch + last)


def batch_pair(draw) -> tuple[tuple, tuple]:
    """Two batch shapes that broadcast (either may be missing dims or have 1s)."""
    full = shape(draw, 0, 2, max_side=3)
    def part():
        cut = draw(st.integers(0, len(full)))
        return tuple(1 if draw(st.booleans()) else d for d in full[cut:])
    return part(), part()


@op_case("matmul")
def matmul_2d(draw):
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    ta, tb = draw(st.booleans()), draw(st.booleans())
    return ([operand(draw, (), m, k, ta), operand(draw, (), k, n, tb)],
            {"transpose_a": ta, "transpose_b": tb})


@op_case("matmul")
def matmul_batched_broadcast(draw):
    m, k, n = (draw(st.integers(1, 3)) for _ in range(3))
    ba, bb = batch_pair(draw)
    ta, tb = draw(st.booleans()), draw(st.booleans())
    return ([operand(draw, ba, m, k, ta), operand(draw, bb, k, n, tb)],
            {"transpose_a": ta, "transpose_b": tb})
