"""Property cases for ops/norm.py: any rank 1-4, any channel axis (maybe negative)."""
from __future__ import annotations

from hypothesis import strategies as st

from tests.ops.harness import array, op_case, shape


def draw_layout(draw):
    """(x's shape, the channel axis as given, the channel count)."""
    s = shape(draw, 1, 4, 1, 3)
    axis = draw(st.integers(-len(s), len(s) - 1))
    return s, axis, s[axis]


def vector(draw, channels: int, lo: float = -1.5, hi: float = 1.5):
    return array(draw, (channels,), lo, hi)


def variance(draw, channels: int):
    return array(draw, (channels,), 0.2, 2.0)


@op_case("batch_variance", rtol=1e-5, atol=1e-6)
def batch_variance_any_axis(draw):
    s, axis, c = draw_layout(draw)
    return [array(draw, s), vector(draw, c)], {"axis": axis}


@op_case("batch_variance_grad", rtol=1e-5, atol=1e-6)
def batch_variance_grad_any_axis(draw):
    s, axis, c = draw_layout(draw)
    return [vector(draw, c), array(draw, s), vector(draw, c)], {"axis": axis}


@op_case("batchnorm_apply", rtol=1e-5, atol=1e-6)
def batchnorm_apply_any_axis(draw):
    s, axis, c = draw_layout(draw)
    eps = draw(st.sampled_from([1e-3, 0.1]))
    arrays = [array(draw, s), vector(draw, c), variance(draw, c), vector(draw, c),
              vector(draw, c)]
    return arrays, {"axis": axis, "epsilon": eps}


@op_case("batchnorm_grad_x", rtol=1e-5, atol=1e-6)
def batchnorm_grad_x_any_axis(draw):
    s, axis, c = draw_layout(draw)
    return [array(draw, s), variance(draw, c), vector(draw, c)], {"axis": axis, "epsilon": 1e-3}


@op_case("batchnorm_grad_gamma", rtol=1e-5, atol=1e-6)
def batchnorm_grad_gamma_any_axis(draw):
    s, axis, c = draw_layout(draw)
    arrays = [array(draw, s), array(draw, s), vector(draw, c), variance(draw, c)]
    return arrays, {"axis": axis, "epsilon": 1e-3}
