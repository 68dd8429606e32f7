"""Algebraic simplification: each exact rule fires, and never where it would drop a broadcast
or a dtype promotion."""
from __future__ import annotations

import numpy as np
import pytest

from netlang.ir.types import DType
from netlang.passes.simplify import simplify
from tests.passes.util import builder, ops, run, t, text


def simplified(build):
    """Build ``y`` from input ``x`` (f32[2,3]) with ``build(b, x)``; simplify the graph."""
    b = builder()
    x = b.input("x", t(2, 3))
    b.graph.outputs["y"] = build(b, x)
    new, report = simplify(b.graph)
    return b.graph, new, report


@pytest.mark.parametrize("build, formula", [
    (lambda b, x: b.mul(x, b.const(1.0)), "x * 1 = 1 * x = x"),
    (lambda b, x: b.mul(b.const(np.ones(3, np.float32)), x), "x * 1 = 1 * x = x"),
    (lambda b, x: b.div(x, b.const(1.0)), "x / 1 = x"),
    (lambda b, x: b.add(x, b.const(0.0)), "x + 0 = 0 + x = x"),
    (lambda b, x: b.add(b.fill_like(x, value=0.0), x), "x + 0 = 0 + x = x"),
    (lambda b, x: b.sub(x, b.const(np.zeros((1, 3), np.float32))), "x - 0 = x"),
    (lambda b, x: b.neg(b.neg(x)), "neg(neg(x)) = x"),
    (lambda b, x: b.identity(x), "identity(x) = x"),
    (lambda b, x: b.stop_gradient(x), "stop_gradient(x) = x"),
    (lambda b, x: b.cast(x, dtype="f32"), "cast(x) = x"),
    (lambda b, x: b.select(b.greater(x, x), x, x), "select(c, x, x) = x"),
    (lambda b, x: b.transpose(b.transpose(x)), ("transpose(transpose(x, p), q) = "
                                               "transpose(x, p[q]);  transpose(x, identity) = x")),
    (lambda b, x: b.reshape(b.reshape(x, shape=(6,)), shape=(2, 3)),
     "reshape(reshape(x, s), t) = reshape(x, t);  reshape(x, shape of x) = x"),
])
def test_rule_replaces_the_node_by_x(build, formula):
    _before, after, report = simplified(build)
    assert after.outputs["y"] == after.inputs["x"]
    assert ops(after) == ["input"]          # the constants it used went with it
    assert report.changed == 1 and report.summary.startswith("rewrote 1 node")
    assert report.items[0].endswith(formula)


@pytest.mark.parametrize("build", [
    lambda b, x: b.mul(x, b.const(np.ones((4, 2, 3), np.float32))),   # broadcasts to more
    lambda b, x: b.add(x, b.const(np.zeros((4, 1, 1), np.float32))),
    lambda b, x: b.mul(x, b.const(1.0, DType.f64)),                    # promotes to f64
    lambda b, x: b.mul(x, b.const(np.array([1.0, 2.0, 1.0], np.float32))),
    lambda b, x: b.add(x, b.const(1e-30)),
    lambda b, x: b.sub(b.const(0.0), x),                               # 0 - x is -x
    lambda b, x: b.div(b.const(1.0), x),
    lambda b, x: b.neg(b.exp(x)),
])
def test_inexact_or_type_changing_cases_are_left_alone(build):
    before, after, report = simplified(build)
    assert report.changed == 0 and text(after) == text(before)


def test_transposes_compose_into_one():
    b = builder()
    x = b.input("x", t(2, 3, 4))
    b.graph.outputs["y"] = y = b.transpose(b.transpose(x, perm=(1, 0, 2)), perm=(0, 2, 1))
    new, report = simplify(b.graph)
    assert ops(new) == ["input", "transpose"] and report.changed == 1
    assert new.nodes[new.outputs["y"]].attrs["perm"] == (1, 2, 0)
    xs = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    (want,) = run(b.graph, [y], {x: xs})
    (got,) = run(new, [new.outputs["y"]], {new.inputs["x"]: xs})
    np.testing.assert_array_equal(got, want)


def test_chains_collapse_in_one_pass():
    b = builder()
    x = b.input("x", t(2, 6))
    three_negs = b.neg(b.neg(b.neg(x)))
    reshapes = b.reshape(b.reshape(b.reshape(x, shape=(12,)), shape=(3, 4)), shape=(4, 3))
    b.graph.outputs.update(n=three_negs, r=reshapes)
    new, report = simplify(b.graph)
    assert report.changed == 3   # neg(neg) once, then the outer reshapes twice
    assert ops(new) == ["input", "neg", "reshape"]
    assert new.nodes[new.outputs["r"]].attrs["shape"] == (4, 3)


def test_reshape_like_chains_and_no_op_broadcasts():
    b = builder()
    x = b.input("x", t(2, 3))
    flat = b.input("flat", t(6))
    back = b.reshape_like(b.reshape(x, shape=(3, 2)), x)
    same = b.sum_to_like(b.broadcast_like(x, x), x)
    b.graph.outputs.update(back=back, same=same, f=b.reshape_like(flat, flat))
    new, report = simplify(b.graph)
    assert new.outputs["back"] == new.outputs["same"] == new.inputs["x"]
    assert new.outputs["f"] == new.inputs["flat"]
    assert report.changed == 4


def test_simplify_is_idempotent():
    b = builder()
    x = b.input("x", t(2, 3))
    y = b.transpose(b.transpose(b.neg(b.neg(b.neg(x))), perm=(1, 0)), perm=(1, 0))
    b.graph.outputs["y"] = b.mul(y, b.const(1.0))
    once, first = simplify(b.graph)
    twice, second = simplify(once)
    assert first.changed == 3 and second.changed == 0
    assert text(twice) == text(once)
