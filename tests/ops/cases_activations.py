"""Property cases for ops/activations.py."""
from __future__ import annotations

from hypothesis import strategies as st

from tests.ops.harness import array, distinct, op_case, shape


@op_case("leaky_relu")
def leaky_relu_values(draw):
    alpha = draw(st.sampled_from([0.1, 0.01, 0.3, 0, 1, 2.5]))  # 2.5 takes the where() path
    return [array(draw, shape(draw), away_from=0.0)], {"alpha": alpha}


@op_case("leaky_relu_grad")
def leaky_relu_grad_values(draw):
    s = shape(draw)
    alpha = draw(st.sampled_from([0.1, 0.2]))
    return [array(draw, s), array(draw, s, away_from=0.0)], {"alpha": alpha}


@op_case("elu")
def elu_values(draw):
    alpha = draw(st.sampled_from([1.0, 0.5, 2.0]))
    return [array(draw, shape(draw), -3.0, 2.0, away_from=0.0)], {"alpha": alpha}


@op_case("elu_grad")
def elu_grad_values(draw):
    s = shape(draw)
    alpha = draw(st.sampled_from([1.0, 0.5]))
    # y is elu's output: > 0 where x > 0, in (-alpha, 0) elsewhere.
    return [array(draw, s), array(draw, s, -0.45, 2.0, away_from=0.0)], {"alpha": alpha}


def _axis_case(op):
    def draw_case(draw):
        s = shape(draw, min_rank=1)
        axis = draw(st.integers(-len(s), len(s) - 1))
        return [array(draw, s, -4.0, 4.0)], {"axis": axis}
    draw_case.__name__ = f"{op}_any_axis"
    op_case(op)(draw_case)


_axis_case("softmax")
_axis_case("log_softmax")


def grouped_shape(draw):
    """A shape whose last dim is k * pieces, and pieces."""
    pieces = draw(st.integers(1, 3))
    lead = shape(draw, 0, 2)
    return lead + (draw(st.integers(1, 3)) * pieces,), pieces


@op_case("maxout")
def maxout_distinct(draw):
    s, pieces = grouped_shape(draw)
    return [distinct(draw, s)], {"pieces": pieces}


@op_case("split_last")
def split_last_values(draw):
    s, pieces = grouped_shape(draw)
    return [array(draw, s)], {"pieces": pieces}


@op_case("merge_last")
def merge_last_values(draw):
    return [array(draw, shape(draw, min_rank=2))], {}
