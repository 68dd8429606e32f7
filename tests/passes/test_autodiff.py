"""Reverse-mode autodiff as a graph transform: seed numbers, fan-out, blocked paths."""
from __future__ import annotations

import numpy as np
import pytest

from netlang.errors import GradientError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType
from netlang.ops.builder import Builder
from netlang.passes.autodiff import check_all_reached, expand_grads, gradients
from tests.ops.harness import run

F32 = TensorType(DType.f32, ())


def calc_graph():
    """Seed 002: y = x*x + sin(x); g = grad(y, x); g2 = grad(g, x)."""
    b = Builder(Graph(name="calc"))
    x = b.input("x", F32)
    y = b.add(b.mul(x, x), b.sin(x))
    g = b.op("grad", y, x)
    g2 = b.op("grad", g, x)
    b.graph.outputs.update(y=y, g=g, g2=g2)
    graph, report = expand_grads(b.graph)
    return graph, report


@pytest.mark.parametrize("x, g, g2", [(0.0, 1.0, 2.0), (np.pi, 5.2831855, 2.0)])
def test_seed_002_gradient_and_second_derivative(x, g, g2):
    graph, report = calc_graph()
    assert str(report) == "expanded 2 grad() node(s)"
    feeds = {graph.inputs["x"]: np.float32(x)}
    got_g, got_g2 = run(graph, [graph.outputs["g"], graph.outputs["g2"]], feeds)
    assert got_g.dtype == np.float32
    np.testing.assert_allclose(got_g, g, rtol=1e-6)
    np.testing.assert_allclose(got_g2, g2, rtol=1e-5)


def test_gradient_nodes_are_tagged_and_typed_like_x():
    graph, _ = calc_graph()
    assert all(n.op != "grad" for n in graph)
    g = graph.nodes[graph.outputs["g"]]
    assert g.type == F32 and "grad" in g.tags


def test_fan_out_sums_gradients():
    b = Builder()
    x = b.input("x", TensorType(DType.f64, (3,)))
    y = b.add(b.mul(x, x), b.mul(x, b.const(3.0, DType.f64)))  # x used three times
    (g,) = gradients(b, y, [x])
    (out,) = run(b.graph, [g], {x: np.array([1.0, 2.0, -1.0])})
    np.testing.assert_allclose(out, [5.0, 7.0, 1.0])


def test_paths_that_miss_the_loss_materialize_nothing():
    b = Builder()
    x = b.input("x", F32)
    unrelated = b.input("u", F32)
    y = b.sin(x)
    before = len(b.graph)
    gx, gu = gradients(b, y, [x, unrelated])
    assert gu is None and gx is not None
    added = [b.graph.nodes[i].op for i in list(b.graph.nodes)[before:]]
    assert added == ["fill_like", "cos", "mul"]


def test_broadcast_gradient_is_reduced_to_operand_shape():
    b = Builder()
    x = b.input("x", TensorType(DType.f64, (2, 3)))
    bias = b.input("bias", TensorType(DType.f64, (3,)))
    y = b.add(x, bias)
    (gb,) = gradients(b, y, [bias])
    assert b.type_of(gb).shape == (3,)
    (out,) = run(b.graph, [gb], {x: np.zeros((2, 3)), bias: np.zeros(3)})
    np.testing.assert_allclose(out, [2.0, 2.0, 2.0])


def test_stop_gradient_and_integer_casts_block_and_are_named():
    b = Builder()
    w = b.param("w", TensorType(DType.f32, (3,)), init=("zeros",))
    v = b.param("v", TensorType(DType.f32, (3,)), init=("zeros",))
    b.param("unused", TensorType(DType.f32, (3,)), init=("zeros",))
    blocked = b.stop_gradient(w)
    as_int = b.cast(b.cast(v, dtype="i32"), dtype="f32")
    loss = b.add(blocked, as_int)
    params = b.graph.params
    grads = dict(zip(params, gradients(b, loss, list(params.values()))))
    assert grads == {"w": None, "v": None, "unused": None}
    with pytest.raises(GradientError) as err:
        check_all_reached(b.graph, loss, params, grads)
    text = str(err.value)
    assert "'w' gets no gradient: the path to the loss is blocked by stop_gradient" in text
    assert "'v' gets no gradient: the path to the loss is blocked by cast" in text
    assert "cast to i32 has no gradient" in text
    assert "'unused' gets no gradient: the loss does not depend on it" in text
