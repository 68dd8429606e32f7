"""matmul: seed 002's worked product, batching, transposed operands, FLOPs and errors."""
from __future__ import annotations

import numpy as np
import pytest

from netlang.errors import ShapeError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType, sym
from netlang.ops.builder import Builder
from netlang.ops.registry import get_op
from netlang.passes.autodiff import gradients
from tests.ops.harness import run

N = sym("N")


def f32(*shape) -> TensorType:
    return TensorType(DType.f32, tuple(shape))


def matmul(a, c, **attrs) -> np.ndarray:
    a, c = np.asarray(a, np.float32), np.asarray(c, np.float32)
    b = Builder(Graph())
    ai, ci = b.input("a", f32(*a.shape)), b.input("b", f32(*c.shape))
    (out,) = run(b.graph, [b.matmul(ai, ci, **attrs)], {ai: a, ci: c})
    return out


def test_seed002_matmul():
    out = matmul([[1, 2, 3], [4, 5, 6]], [[7, 8], [9, 10], [11, 12]])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[58, 64], [139, 154]])


def test_transposed_operands_are_read_in_place():
    a = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    c = np.array([[7, 8], [9, 10], [11, 12]], np.float32)
    np.testing.assert_array_equal(matmul(a.T, c, transpose_a=True), a @ c)
    np.testing.assert_array_equal(matmul(a, c.T, transpose_b=True), a @ c)
    np.testing.assert_array_equal(matmul(a.T, c.T, transpose_a=True, transpose_b=True), a @ c)


def test_batched_matmul_broadcasts_leading_dims():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 1, 3, 4)).astype(np.float32)
    c = rng.normal(size=(5, 4, 2)).astype(np.float32)
    out = matmul(a, c)
    assert out.shape == (2, 5, 3, 2)
    np.testing.assert_allclose(out, a @ c, rtol=1e-6)


def test_dense_layer_types_flops_and_gradients():
    b = Builder(Graph())
    x, w = b.input("x", f32(N, 392)), b.input("w", f32(392, 10))
    y = b.matmul(x, w)
    node = b.graph.nodes[y]
    assert str(node.type) == "f32[N,10]"
    assert str(get_op("matmul").flops(node.type, f32(N, 392), f32(392, 10), **node.attrs)) == (
        "7840*N")
    gx, gw = gradients(b, y, [x, w])
    ops = [b.graph.nodes[i] for i in (gx, gw)]
    assert [n.op for n in ops] == ["matmul", "matmul"]   # no transpose nodes: BLAS flags
    assert (ops[0].attrs["transpose_b"], ops[1].attrs["transpose_a"]) == (True, True)
    xs = np.ones((3, 392), np.float32)
    ws = np.arange(3920, dtype=np.float32).reshape(392, 10) / 1000
    dx, dw = run(b.graph, [gx, gw], {x: xs, w: ws})
    np.testing.assert_allclose(dx, np.tile(ws.sum(axis=1), (3, 1)), rtol=1e-6)
    np.testing.assert_array_equal(dw, np.full((392, 10), 3))


def error(a: TensorType, c: TensorType, **attrs) -> ShapeError:
    b = Builder(Graph())
    with pytest.raises(ShapeError) as info:
        b.matmul(b.input("a", a), b.input("b", c), **attrs)
    return info.value


def test_errors_name_the_disagreeing_dims():
    err = error(f32(N, 392), f32(100, 10))
    assert err.message == "matmul: inner dims disagree: f32[N,392] @ f32[100,10] (392 != 100)"
    err = error(f32(3, 4), f32(3, 5), transpose_a=True, transpose_b=True)
    assert err.message == ("matmul: inner dims disagree: transpose(f32[3,4]) @ "
                           "transpose(f32[3,5]) (3 != 5)")
    assert error(f32(2, 3, 4), f32(5, 4, 6)).message == (
        "matmul: batch dims do not broadcast: f32[2,3,4] @ f32[5,4,6]")
    assert error(f32(4), f32(4, 2)).message == (
        "matmul needs matrices (rank >= 2), got f32[4] @ f32[4,2]")
    assert error(f32(4, 2), TensorType(DType.f64, (2, 2))).message == (
        "matmul needs two float operands of the same dtype, got f32[4,2] @ f64[2,2]")
