"""Reductions: seed 002's tf.reduce_sum examples, symbolic batch sizes, gradients, errors."""
from __future__ import annotations

import numpy as np
import pytest

from netlang.errors import GradientError, ShapeError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType, sym
from netlang.ops.builder import Builder
from netlang.passes.autodiff import check_all_reached, gradients
from tests.ops.harness import run

N = sym("N")


def evaluate(op: str, x, **attrs) -> np.ndarray:
    x = np.asarray(x)
    b = Builder(Graph(name=op))
    xi = b.input("x", TensorType(DType.of(x.dtype), x.shape))
    (out,) = run(b.graph, [b.op(op, xi, **attrs)], {xi: x})
    return out


# -- seed 002: tf.reduce_sum -----------------------------------------------------------------

ONES = np.ones((2, 3), np.float32)


@pytest.mark.parametrize("attrs, expected", [
    ({}, 6),
    ({"axis": 0}, [2, 2, 2]),
    ({"axis": 1}, [3, 3]),
    ({"axis": 1, "keepdims": True}, [[3], [3]]),
    ({"axis": (0, 1)}, 6),
])
def test_seed002_reduce_sum(attrs, expected):
    out = evaluate("sum", ONES, **attrs)
    assert out.dtype == np.float32
    assert out.shape == np.shape(expected)
    np.testing.assert_array_equal(out, expected)


def test_reduce_family_values():
    x = np.array([[1, 5, 3], [4, 2, 6]], np.float32)
    np.testing.assert_array_equal(evaluate("mean", x, axis=0), [2.5, 3.5, 4.5])
    np.testing.assert_array_equal(evaluate("max", x, axis=-1), [5, 6])
    np.testing.assert_array_equal(evaluate("min", x, axis=1, keepdims=True), [[1], [2]])
    np.testing.assert_array_equal(evaluate("prod", x, axis=0), [4, 10, 18])
    np.testing.assert_array_equal(evaluate("argmax", x), [1, 2])
    np.testing.assert_array_equal(evaluate("argmax", x, axis=0), [1, 0, 1])
    assert evaluate("argmax", x).dtype == np.int64


def test_argmax_and_argmin_pick_the_first_or_the_last_of_ties():
    x = np.array([[1.0, 3.0, 3.0, 0.0, 0.0]], np.float32)
    assert evaluate("argmax", x).tolist() == [1]
    assert evaluate("argmax", x, select_last_index=True).tolist() == [2]
    assert evaluate("argmin", x).tolist() == [3]
    assert evaluate("argmin", x, select_last_index=True).tolist() == [4]
    assert evaluate("argmin", x, axis=0).tolist() == [0, 0, 0, 0, 0]


def test_integer_sums_keep_their_dtype_and_bools_count():
    assert evaluate("sum", np.array([1, 2], np.int32)).dtype == np.int32
    out = evaluate("sum", np.array([True, False, True]))
    assert out.dtype == np.int64 and out == 2
    acc = evaluate("mean", np.array([True, False, True, True]))
    assert acc.dtype == np.float32 and acc == 0.75


def test_shape_rules_keep_symbolic_dims():
    b = Builder(Graph())
    x = b.input("x", TensorType(DType.f32, (N, 10)))
    assert str(b.type_of(b.sum(x, axis=0))) == "f32[10]"
    assert str(b.type_of(b.mean(x, axis=1, keepdims=True))) == "f32[N,1]"
    assert str(b.type_of(b.max(x, axis=(-1, 0)))) == "f32[]"
    assert str(b.type_of(b.argmax(x, axis=1))) == "i64[N]"


def test_mean_over_the_batch_divides_by_the_runs_batch_size():
    b = Builder(Graph())
    x = b.input("x", TensorType(DType.f32, (N, 3)))
    y = b.mean(x)
    (g,) = gradients(b, y, [x])
    for n in (2, 5):
        data = np.arange(3 * n, dtype=np.float32).reshape(n, 3)
        out, grad = run(b.graph, [y, g], {x: data})
        assert out == pytest.approx(data.mean())
        np.testing.assert_allclose(grad, np.full((n, 3), 1 / (3 * n)), rtol=1e-6)
        assert grad.dtype == np.float32


def grad_of(op: str, x, **attrs) -> np.ndarray:
    x = np.asarray(x, np.float64)
    b = Builder(Graph())
    xi = b.input("x", TensorType(DType.f64, x.shape))
    y = b.op(op, xi, **attrs)
    (g,) = gradients(b, y, [xi])
    (out,) = run(b.graph, [g], {xi: x})
    return out


def test_max_and_min_gradients_go_to_the_extreme_entries():
    x = [[1.0, 7.0, 3.0], [9.0, 2.0, 4.0]]
    np.testing.assert_array_equal(grad_of("max", x, axis=1), [[0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(grad_of("min", x, axis=0), [[1, 0, 1], [0, 1, 0]])


def test_max_gradient_splits_ties_evenly():
    np.testing.assert_array_equal(grad_of("max", [2.0, 5.0, 5.0]), [0, 0.5, 0.5])


def test_prod_gradient_is_exact_at_zeros():
    np.testing.assert_array_equal(grad_of("prod", [2.0, 0.0, 3.0]), [0, 6, 0])
    np.testing.assert_array_equal(grad_of("prod", [0.0, 0.0, 3.0]), [0, 0, 0])
    np.testing.assert_array_equal(grad_of("prod", [[2.0, 3.0], [4.0, 0.0]], axis=1),
                                  [[3, 2], [0, 4]])


def test_second_derivative_of_sum_of_cubes_through_prod():
    """d2/dx2 of prod(x, x, x) summed = 6x: prod_grad's own VJP at work."""
    b = Builder(Graph())
    x = b.input("x", TensorType(DType.f64, (2,)))
    stacked = b.concat(b.reshape(x, shape=(1, 2)), b.reshape(x, shape=(1, 2)),
                       b.reshape(x, shape=(1, 2)), axis=0)
    y = b.sum(b.prod(stacked, axis=0))
    (g,) = gradients(b, y, [x])
    (h,) = gradients(b, g, [x])
    out_g, out_h = run(b.graph, [g, h], {x: np.array([1.5, -2.0])})
    np.testing.assert_allclose(out_g, 3 * np.array([1.5, -2.0]) ** 2)
    np.testing.assert_allclose(out_h, 6 * np.array([1.5, -2.0]))


# -- errors ----------------------------------------------------------------------------------

def shape_error(build) -> ShapeError:
    b = Builder(Graph())
    x = b.input("x", TensorType(DType.f32, (N, 10)))
    with pytest.raises(ShapeError) as info:
        build(b, x)
    return info.value


def test_axis_out_of_range_names_the_type():
    err = shape_error(lambda b, x: b.sum(x, axis=3))
    assert err.message == "sum: axis 3 is out of range for f32[N,10]"
    assert err.hint == "use an axis in [-2, 1]"
    assert shape_error(lambda b, x: b.argmax(x, axis=-3)).message == (
        "argmax: axis -3 is out of range for f32[N,10]")


def test_bad_axis_forms_are_reported():
    assert shape_error(lambda b, x: b.mean(x, axis=(1, -1))).message == (
        "mean: axis (1, -1) names an axis of f32[N,10] twice")
    assert shape_error(lambda b, x: b.max(x, axis="rows")).message == (
        "max: axis must be an int, a tuple of ints or None, got 'rows'")
    assert shape_error(lambda b, x: b.sum(x, keepdims=1)).message == (
        "sum: keepdims must be true or false, got 1")


def test_argmax_blocks_gradients_and_says_why():
    b = Builder(Graph())
    w = b.param("w", TensorType(DType.f32, (3,)))
    loss = b.mean(b.cast(b.argmax(w), dtype="f32"))
    (g,) = gradients(b, loss, [w])
    assert g is None
    with pytest.raises(GradientError) as info:
        check_all_reached(b.graph, loss, {"w": w}, {"w": g})
    assert "argmax returns integer indices" in info.value.message
