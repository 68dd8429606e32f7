"""Property cases for ops/fused.py: random sub-expressions over 1-3 broadcasting inputs."""
from __future__ import annotations

from hypothesis import strategies as st

from netlang.ops.fused import input_ref, step_ref
from tests.ops.harness import array, op_case, shape

SMOOTH_UNARY = ["neg", "square", "sin", "cos", "tanh", "sigmoid"]   # no exp: exp(exp(..)) overflows
SMOOTH_BINARY = ["add", "sub", "mul"]
ANY_UNARY = SMOOTH_UNARY + ["relu", "abs", "sign"]
ANY_BINARY = SMOOTH_BINARY + ["maximum", "minimum", "relu_grad"]


def draw_expr(draw, n_inputs: int, unary: list[str], binary: list[str]) -> tuple:
    """1-5 steps, each over inputs or earlier steps; the last step reads the one before."""
    refs = [input_ref(i) for i in range(n_inputs)]
    steps = []
    for j in range(draw(st.integers(1, 5))):
        last = [refs[-1]] if steps else refs
        if draw(st.booleans()):
            op = draw(st.sampled_from(binary))
            args = (draw(st.sampled_from(last)), draw(st.sampled_from(refs)))
        else:
            op = draw(st.sampled_from(unary))
            args = (draw(st.sampled_from(last)),)
        steps.append((op, args, ()))
        refs.append(step_ref(j))
    return tuple(steps)


def draw_inputs(draw, n: int):
    """The first input has the full shape; the others it or a broadcasting suffix of it."""
    full = shape(draw, 0, 3)
    shapes = [full] + [full[draw(st.integers(0, len(full))):] for _ in range(n - 1)]
    return [array(draw, s, -1.5, 1.5) for s in shapes]


@op_case("fused", rtol=1e-5, atol=1e-6)
def fused_smooth(draw):
    n = draw(st.integers(1, 3))
    return draw_inputs(draw, n), {"expr": draw_expr(draw, n, SMOOTH_UNARY, SMOOTH_BINARY)}


@op_case("fused", grad=False)
def fused_with_kinks(draw):
    n = draw(st.integers(1, 3))
    return draw_inputs(draw, n), {"expr": draw_expr(draw, n, ANY_UNARY, ANY_BINARY)}
