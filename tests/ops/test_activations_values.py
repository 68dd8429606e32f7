"""Activations: seed 000's formulas, softmax stability, maxout grouping, errors."""
from __future__ import annotations

import numpy as np
import pytest

from netlang.errors import ShapeError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType, sym
from netlang.ops.builder import Builder
from netlang.passes.autodiff import gradients
from tests.ops.harness import run

N = sym("N")
X = np.array([-3.0, -0.5, 0.0, 0.5, 3.0], np.float32)


def value_and_grad(op: str, x, **attrs):
    x = np.asarray(x)
    b = Builder(Graph())
    xi = b.input("x", TensorType(DType.of(x.dtype), x.shape))
    y = b.op(op, xi, **attrs)
    (g,) = gradients(b, y, [xi])
    return run(b.graph, [y, g], {xi: x})


def test_seed000_leaky_relu_is_max_of_tenth_x_and_x():
    y, g = value_and_grad("leaky_relu", X)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, np.maximum(0.1 * X, X))
    np.testing.assert_allclose(g, [0.1, 0.1, 0.1, 1, 1])
    y, _ = value_and_grad("leaky_relu", X, alpha=0.2)
    np.testing.assert_allclose(y, np.maximum(0.2 * X, X))


def test_seed000_elu():
    y, g = value_and_grad("elu", X)
    expected = np.where(X > 0, X, np.expm1(X.astype(np.float64)))
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    np.testing.assert_allclose(g, np.where(X > 0, 1, np.exp(X.astype(np.float64))), rtol=1e-6)
    y, _ = value_and_grad("elu", np.array([1000.0, -1000.0], np.float32), alpha=2.0)
    np.testing.assert_array_equal(y, [1000.0, -2.0])


def test_softmax_and_log_softmax_survive_huge_logits():
    x = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]], np.float32)
    b = Builder(Graph())
    xi = b.input("x", TensorType(DType.f32, x.shape))
    p, lp = b.softmax(xi), b.log_softmax(xi)
    out_p, out_lp = run(b.graph, [p, lp], {xi: x})
    assert out_p.dtype == out_lp.dtype == np.float32
    np.testing.assert_allclose(out_p[0], [1, 0, 0])
    np.testing.assert_allclose(out_lp[0], [0, -1000, -2000])
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(out_p[1], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(out_lp[1], np.log(e / e.sum()), rtol=1e-6)


def test_softmax_along_axis_zero():
    x = np.array([[0.0, 1.0], [0.0, 3.0]], np.float32)
    y, _ = value_and_grad("softmax", x, axis=0)
    np.testing.assert_allclose(y.sum(axis=0), [1, 1], rtol=1e-6)
    np.testing.assert_allclose(y[:, 0], [0.5, 0.5])


def test_maxout_takes_the_max_of_consecutive_channel_groups():
    x = np.array([[1.0, 4.0, 3.0, 2.0, -1.0, -5.0]], np.float32)
    y, g = value_and_grad("maxout", x)
    np.testing.assert_array_equal(y, [[4, 3, -1]])
    np.testing.assert_array_equal(g, [[0, 1, 1, 0, 1, 0]])
    y, g = value_and_grad("maxout", x, pieces=3)
    np.testing.assert_array_equal(y, [[4, 2]])
    np.testing.assert_array_equal(g, [[0, 1, 0, 1, 0, 0]])


def test_maxout_types_and_errors():
    b = Builder(Graph())
    x = b.input("x", TensorType(DType.f32, (N, 10)))
    assert str(b.type_of(b.maxout(x))) == "f32[N,5]"
    with pytest.raises(ShapeError) as info:
        b.maxout(x, pieces=3)
    assert info.value.message == ("maxout: the last dim 10 of f32[N,10] is not a multiple "
                                  "of pieces=3")


def test_activation_errors():
    b = Builder(Graph())
    x = b.input("x", TensorType(DType.f32, (N, 10)))
    ids = b.input("ids", TensorType(DType.i32, (N,)))
    with pytest.raises(ShapeError) as info:
        b.softmax(x, axis=2)
    assert info.value.message == "softmax: axis 2 is out of range for f32[N,10]"
    with pytest.raises(ShapeError) as info:
        b.log_softmax(ids)
    assert info.value.message == "log_softmax needs a float tensor, got i32[N]"
    with pytest.raises(ShapeError) as info:
        b.elu(x, alpha=-1.0)
    assert info.value.message == "elu: alpha must be >= 0, got -1.0"
