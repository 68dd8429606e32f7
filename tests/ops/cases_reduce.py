"""Property cases for ops/reduce.py: every axis form (None, int, negative, tuple), keepdims."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tests.ops.harness import array, distinct, op_case, shape


def axis_attr(draw, rank: int):
    """None, an int (maybe negative) or a tuple of distinct axes (maybe empty, maybe negative)."""
    kind = draw(st.sampled_from(["none", "int", "tuple"] if rank else ["none", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-rank, rank - 1))
    axes = draw(st.lists(st.integers(0, rank - 1), unique=True, max_size=rank)) if rank else []
    return tuple(a - rank if draw(st.booleans()) else a for a in axes)


def normalized(axis, rank: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(rank))
    axes = (axis,) if isinstance(axis, int) else axis
    return tuple(sorted(a % rank for a in axes))


def reduce_attrs(draw, rank: int) -> dict:
    return {"axis": axis_attr(draw, rank), "keepdims": draw(st.booleans())}


def _reduce_case(op, values):
    def draw_case(draw):
        s = shape(draw)
        return [values(draw, s)], reduce_attrs(draw, len(s))
    draw_case.__name__ = f"{op}_any_axes"
    op_case(op)(draw_case)


_reduce_case("sum", array)
_reduce_case("mean", array)
_reduce_case("max", distinct)
_reduce_case("min", distinct)
def away_from_zero(draw, s):
    return np.asarray(array(draw, s, 0.5, 1.5) * np.where(array(draw, s) > 0, 1.0, -1.0))


_reduce_case("prod", away_from_zero)


@op_case("prod")
def prod_with_zeros(draw):
    """The gradient must stay exact where an input is 0 (no division by x)."""
    s = shape(draw, min_rank=1)
    x = array(draw, s, -1.5, 1.5)
    zeros = array(draw, s, 0.0, 1.0) < 0.3
    return [np.where(zeros, 0.0, x)], reduce_attrs(draw, len(s))


@op_case("sum", grad=False)
def sum_integers_keep_their_dtype(draw):
    s = shape(draw)
    dtype = draw(st.sampled_from([np.int32, np.int64, np.bool_]))
    x = np.random.default_rng(draw(st.integers(0, 99))).integers(0, 3, s).astype(dtype)
    return [x], reduce_attrs(draw, len(s))


@op_case("mean", grad=False)
def mean_of_bools_is_f32(draw):
    s = shape(draw)
    x = np.random.default_rng(draw(st.integers(0, 99))).integers(0, 2, s).astype(bool)
    return [x], reduce_attrs(draw, len(s))


@op_case("argmax")
def argmax_distinct(draw):
    s = shape(draw, min_rank=1)
    return [distinct(draw, s)], {"axis": draw(st.integers(-len(s), len(s) - 1))}


def _arg_with_ties(op):
    def draw_case(draw):
        s = shape(draw, min_rank=1)
        x = np.random.default_rng(draw(st.integers(0, 99))).integers(0, 3, s)
        return [x.astype(np.float32)], {"axis": draw(st.integers(-len(s), len(s) - 1)),
                                        "select_last_index": draw(st.booleans())}
    draw_case.__name__ = f"{op}_with_ties"
    op_case(op)(draw_case)


_arg_with_ties("argmax")
_arg_with_ties("argmin")


# -- helper ops: the reductions' VJPs ------------------------------------------------------

def reduced_pair(draw, values=array):
    """x, the attrs (axes normalized, as VJPs pass them), and the reduced shape."""
    s = shape(draw)
    attrs = reduce_attrs(draw, len(s))
    axes = normalized(attrs["axis"], len(s))
    attrs["axis"] = axes
    if attrs["keepdims"]:
        small = tuple(1 if i in axes else d for i, d in enumerate(s))
    else:
        small = tuple(d for i, d in enumerate(s) if i not in axes)
    return values(draw, s), attrs, small


@op_case("expand_like", wrt=(0,))
def expand_like_values(draw):
    like, attrs, small = reduced_pair(draw)
    return [array(draw, small), like], attrs


@op_case("mean_grad", wrt=(0,))
def mean_grad_values(draw):
    like, attrs, small = reduced_pair(draw)
    return [array(draw, small), like], attrs


@op_case("count")
def count_values(draw):
    x, attrs, _ = reduced_pair(draw)
    return [x], {"axis": attrs["axis"], "inverse": draw(st.booleans())}


@op_case("max_grad", wrt=(0,))
def max_grad_at_the_max(draw):
    x, attrs, small = reduced_pair(draw, distinct)
    y = x.max(axis=attrs["axis"]).reshape(small)
    return [array(draw, small), x, y], attrs


@op_case("max_grad", grad=False)
def max_grad_splits_ties(draw):
    x, attrs, small = reduced_pair(draw, lambda d, s: np.round(array(d, s)))
    y = x.max(axis=attrs["axis"]).reshape(small)
    return [array(draw, small), x, y], attrs


@op_case("prod_grad")
def prod_grad_values(draw):
    x, attrs, small = reduced_pair(draw, away_from_zero)
    return [array(draw, small), x], attrs


@op_case("all_finite", grad=False)
def all_finite_values(draw):
    arrays = [array(draw, shape(draw)) for _ in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()) and arrays[-1].size:
        arrays[-1].flat[0] = draw(st.sampled_from([np.inf, -np.inf, np.nan]))
    return arrays, {}
