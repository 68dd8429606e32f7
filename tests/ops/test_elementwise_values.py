"""Elementwise ops: seed 002's broadcasting example, abs/maximum/minimum/pow/rsqrt, compares."""
from __future__ import annotations

import numpy as np

from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType
from netlang.ops.builder import Builder
from netlang.passes.autodiff import gradients
from tests.ops.harness import run


def value_and_grads(op: str, *arrays, **attrs):
    arrays = [np.asarray(a) for a in arrays]
    b = Builder(Graph())
    ins = [b.input(f"x{i}", TensorType(DType.of(a.dtype), a.shape)) for i, a in enumerate(arrays)]
    y = b.op(op, *ins, **attrs)
    if not b.type_of(y).dtype.is_float:
        return run(b.graph, [y], dict(zip(ins, arrays)))
    grads = gradients(b, y, [i for i, a in zip(ins, arrays) if a.dtype.kind == "f"])
    return run(b.graph, [y, *grads], dict(zip(ins, arrays)))


def test_seed002_broadcasting_addition():
    m = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    out, dm, dv = value_and_grads("add", m, np.array([7, 8, 9], np.float32))
    np.testing.assert_array_equal(dm, np.ones((2, 3)))
    np.testing.assert_array_equal(out, [[8, 10, 12], [11, 13, 15]])
    np.testing.assert_array_equal(dv, [2, 2, 2])   # the vector was used by both rows
    out, _, ds = value_and_grads("add", m, np.float32(7))
    np.testing.assert_array_equal(out, [[8, 9, 10], [11, 12, 13]])
    assert ds == 6


def test_abs():
    y, g = value_and_grads("abs", np.array([-2.0, 3.0], np.float32))
    np.testing.assert_array_equal(y, [2, 3])
    np.testing.assert_array_equal(g, [-1, 1])


def test_maximum_and_minimum_route_gradients_to_the_winner():
    a = np.array([1.0, 5.0, 2.0], np.float32)
    c = np.array([3.0, 4.0, 2.0], np.float32)
    y, ga, gc = value_and_grads("maximum", a, c)
    np.testing.assert_array_equal(y, [3, 5, 2])
    np.testing.assert_array_equal(ga, [0, 1, 1])   # a tie goes to the first operand, as in TF
    np.testing.assert_array_equal(gc, [1, 0, 0])
    y, ga, gc = value_and_grads("minimum", a, np.float32(2.5))
    np.testing.assert_array_equal(y, [1, 2.5, 2])
    np.testing.assert_array_equal(ga, [1, 0, 1])
    assert gc == 1


def test_pow_and_rsqrt():
    x = np.array([1.0, 4.0, 9.0], np.float32)
    y, g = value_and_grads("pow", x, exponent=1.5)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [1, 8, 27])
    np.testing.assert_allclose(g, 1.5 * np.sqrt(x))
    y, g = value_and_grads("pow", x, exponent=2)
    np.testing.assert_array_equal(y, x * x)
    y, g = value_and_grads("rsqrt", x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [1, 0.5, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(g, -0.5 * x ** -1.5, rtol=1e-6)


def test_comparisons_give_booleans():
    a = np.array([[1, 2, 3]], np.int32)
    c = np.array([[2], [1]], np.int32)
    (gt,) = value_and_grads("greater", a, c)
    (lt,) = value_and_grads("less", a, c)
    assert gt.dtype == lt.dtype == np.bool_
    np.testing.assert_array_equal(gt, [[False, False, True], [False, True, True]])
    np.testing.assert_array_equal(lt, [[True, False, False], [False, False, False]])
