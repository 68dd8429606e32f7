"""Property cases for ops/elementwise.py."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tests.ops.harness import array, op_case, shape


def broadcast_pair(draw):
    """Two shapes that broadcast: the second drops leading dims and sets some dims to 1."""
    a = shape(draw, 0, 3)
    cut = draw(st.integers(0, len(a)))
    b = tuple(1 if draw(st.booleans()) else d for d in a[cut:])
    return (a, b) if draw(st.booleans()) else (b, a)


def _binary(op, lo=-2.0, hi=2.0, second_lo=None):
    def draw_case(draw):
        sa, sb = broadcast_pair(draw)
        return [array(draw, sa, lo, hi),
                array(draw, sb, second_lo if second_lo is not None else lo, hi)], {}
    draw_case.__name__ = f"{op}_broadcast"
    op_case(op)(draw_case)


for _op in ("add", "sub", "mul"):
    _binary(_op)
_binary("div", second_lo=0.5)


def _unary(op, lo=-2.0, hi=2.0, away_from=None, **options):
    def draw_case(draw):
        return [array(draw, shape(draw), lo, hi, away_from=away_from)], {}
    draw_case.__name__ = f"{op}_values"
    op_case(op, **options)(draw_case)


for _op in ("neg", "square", "exp", "sin", "cos", "sigmoid", "tanh", "identity"):
    _unary(_op)
_unary("log", lo=0.2, hi=3.0)
_unary("sqrt", lo=0.2, hi=3.0)
_unary("relu", away_from=0.0)
_unary("stop_gradient", grad=False)
_unary("erf", lo=-2.5, hi=2.5)
def _off_steps(op):
    """Values whose fraction is in [0.2, 0.3]: away from floor's and ceil's steps (the
    integers) and round's (the halves), so finite differences see the zero derivative."""
    def draw_case(draw):
        a = array(draw, shape(draw), -4.0, 4.0)
        return [np.asarray(np.floor(a) + 0.2 + 0.1 * (a - np.floor(a)), a.dtype)], {}
    draw_case.__name__ = f"{op}_off_steps"
    op_case(op)(draw_case)


for _op in ("floor", "ceil", "round"):
    _off_steps(_op)
    _unary(_op, lo=-4.0, hi=4.0, grad=False)      # and at any value, including steps


@op_case("gelu")
def gelu_both_forms(draw):
    return [array(draw, shape(draw), -3.0, 3.0)], {"approximate": draw(st.booleans())}


@op_case("assign", grad=False)
def assign_values(draw):
    s = shape(draw)
    return [array(draw, s), array(draw, s)], {"variable": "x0"}


@op_case("relu_grad", wrt=(0,))
def relu_grad_values(draw):
    s = shape(draw)
    return [array(draw, s), array(draw, s, away_from=0.0)], {}


@op_case("cast")
def cast_float(draw):
    # f64 -> f64 only: finite differences through an f32 rounding step are meaningless.
    return [array(draw, shape(draw))], {"dtype": "f64"}


@op_case("cast", grad=False)
def cast_to_int(draw):
    dtype = draw(st.sampled_from(["i32", "i64", "bool"]))
    return [array(draw, shape(draw), -5, 5)], {"dtype": dtype}


@op_case("equal", grad=False)
def equal_ints(draw):
    sa, sb = broadcast_pair(draw)
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    return [rng.integers(0, 3, sa).astype(np.int32), rng.integers(0, 3, sb).astype(np.int32)], {}


@op_case("select")
def select_broadcast(draw):
    sa, sb = broadcast_pair(draw)
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    cond = rng.integers(0, 2, sa).astype(bool)
    return [cond, array(draw, sa), array(draw, sb)], {}


@op_case("fill_like")
def fill_like_values(draw):
    value = draw(st.floats(-3, 3))
    return [array(draw, shape(draw))], {"value": value}


@op_case("sum_to_like")
def sum_to_like_broadcast(draw):
    big, small = broadcast_pair(draw)
    from netlang.ir.types import broadcast_shapes
    full = broadcast_shapes(big, small)
    return [array(draw, full), array(draw, small)], {}


@op_case("broadcast_like")
def broadcast_like_values(draw):
    big, small = broadcast_pair(draw)
    from netlang.ir.types import broadcast_shapes
    full = broadcast_shapes(big, small)
    return [array(draw, small), array(draw, full)], {}


# -- abs, maximum/minimum, pow, rsqrt, comparisons ------------------------------------------

_unary("abs", away_from=0.0)
_unary("sign", away_from=0.0)
_unary("rsqrt", lo=0.2, hi=3.0)


def untied_pair(draw):
    """Two broadcasting arrays whose entries are pairwise apart (no ties for max/min)."""
    from tests.ops.harness import distinct
    sa, sb = broadcast_pair(draw)
    na, nb = int(np.prod(sa)), int(np.prod(sb))
    values = distinct(draw, (na + nb,), lo=-3.0, gap=0.1)
    return values[:na].reshape(sa), values[na:].reshape(sb)


@op_case("maximum")
def maximum_broadcast(draw):
    return list(untied_pair(draw)), {}


@op_case("minimum")
def minimum_broadcast(draw):
    return list(untied_pair(draw)), {}


@op_case("pow")
def pow_positive_base(draw):
    exponent = draw(st.sampled_from([2, 3, 0, 1, -1, 0.5, 1.5, -2.5, 2.0]))
    return [array(draw, shape(draw), 0.3, 2.0)], {"exponent": exponent}


@op_case("pow")
def pow_integer_exponent_any_sign(draw):
    exponent = draw(st.sampled_from([2, 3, 4]))
    return [array(draw, shape(draw), -2.0, 2.0)], {"exponent": exponent}


def _comparison(op):
    def draw_case(draw):
        a, c = untied_pair(draw)
        if draw(st.booleans()):
            return [np.round(a).astype(np.int32), np.round(c).astype(np.int32)], {}
        return [a, c], {}
    draw_case.__name__ = f"{op}_broadcast"
    op_case(op, grad=False)(draw_case)


_comparison("greater")
_comparison("less")


def _mixed_dtypes(op):
    """f32 with i32 stays f32 (the shape rule's promotion), where NumPy alone gives f64."""
    def draw_case(draw):
        sa, sb = broadcast_pair(draw)
        rng = np.random.default_rng(draw(st.integers(0, 1000)))
        floats = array(draw, sa, 0.5, 2.0, dtype=np.float32)
        ints = rng.integers(1, 4, sb).astype(np.int32)
        return ([floats, ints] if draw(st.booleans()) else [ints, floats]), {}
    draw_case.__name__ = f"{op}_f32_with_i32"
    op_case(op, grad=False)(draw_case)


for _op in ("add", "sub", "mul", "div", "maximum", "minimum"):
    _mixed_dtypes(_op)
