"""Property cases for ops/lrn.py: windows of odd and even size, any channel count."""
from __future__ import annotations

from hypothesis import strategies as st

from tests.ops.harness import array, op_case, shape


@op_case("lrn")
def lrn_values(draw):
    s = shape(draw, min_rank=1)
    size = draw(st.integers(1, 5))
    attrs = {"size": size, "alpha": draw(st.sampled_from([1e-4, 0.5, 2.0])),
             "beta": draw(st.sampled_from([0.75, 0.5, 1.5])),
             "bias": draw(st.sampled_from([1.0, 2.0]))}
    return [array(draw, s)], attrs


@op_case("channel_window_sum")
def channel_window_sum_values(draw):
    s = shape(draw, min_rank=1)
    size = draw(st.integers(1, 4))
    return [array(draw, s)], {"size": size, "before": draw(st.integers(0, size - 1))}
