"""Constant folding: pure nodes over constants become constants; the mode picks a branch."""
from __future__ import annotations

import numpy as np
import pytest

from netlang.ir.types import DType
from netlang.passes.fold import FOLD_LIMIT, fold_constants
from netlang.passes.mode import bind_mode
from tests.passes.util import builder, mode_node, noise_op, ops, run, t, text


def test_seed_product_folds_to_one_constant():
    b = builder()
    a, c = b.const(5.0), b.const(6.0)
    b.graph.values.update(a=a, b=c)
    b.graph.outputs["c"] = b.mul(a, c)
    new, report = fold_constants(b.graph)
    assert (len(b.graph), len(new)) == (3, 1)
    (node,) = new
    assert node.op == "const" and node.attrs["value"] == np.float32(30.0)
    assert node.attrs["value"].dtype == np.float32
    assert new.outputs["c"] == node.id and "a" not in new.values
    assert report.summary == "folded 1 node, removing 2 nodes only they used"
    assert report.items == ("mul 'c' -> 30.0",)


def test_constant_part_of_an_expression_folds_the_rest_stays():
    b = builder()
    x = b.input("x", t(3))
    k = b.sqrt(b.add(b.const(2.0), b.const(2.0)))     # sqrt(2 + 2) = 2
    b.graph.outputs["y"] = b.mul(x, k)
    new, report = fold_constants(b.graph)
    assert report.changed == 2
    assert ops(new) == ["input", "const", "mul"]
    (out,) = run(new, [new.outputs["y"]], {new.inputs["x"]: np.ones(3, np.float32)})
    np.testing.assert_array_equal(out, [2, 2, 2])


def test_folded_values_are_the_kernels_values_in_the_declared_dtype():
    b = builder()
    value = np.linspace(-3, 3, 7).astype(np.float32)
    b.graph.outputs["y"] = y = b.tanh(b.sin(b.const(value)))
    (expected,) = run(b.graph, [y])
    new, _ = fold_constants(b.graph)
    folded = new.nodes[new.outputs["y"]].attrs["value"]
    assert folded.dtype == np.float32
    np.testing.assert_array_equal(folded, expected)


@pytest.mark.parametrize("training, kept", [(True, "a"), (False, "b")])
def test_bound_mode_selects_one_branch(training, kept):
    b = builder()
    a, c = b.input("a", t(2)), b.input("b", t(2))
    b.graph.outputs["y"] = b.select(mode_node(b), b.exp(a), b.exp(c))
    bound, _ = bind_mode(b.graph, training)
    new, report = fold_constants(bound)
    assert report.changed == 1
    assert report.items[0].startswith("select 'y'")
    y = new.nodes[new.outputs["y"]]
    assert y.op == "exp" and new.nodes[y.inputs[0]].name == kept
    assert ops(new) == ["input", "input", "exp"]   # the mode, select and other exp are gone


def test_eval_mode_removes_dropout_entirely_training_keeps_it():
    with noise_op() as noise:
        b = builder()
        x = b.input("x", t(4))
        b.graph.outputs["h"] = b.select(mode_node(b), b.mul(x, b.op(noise, x)), x)
        evaluating, _ = fold_constants(bind_mode(b.graph, False)[0])
        training, _ = fold_constants(bind_mode(b.graph, True)[0])
        assert ops(evaluating) == ["input"]
        assert ops(training) == ["input", noise, "mul"]


def test_select_keeps_a_broadcast_it_cannot_drop():
    b = builder()
    x, y = b.input("x", t(3)), b.input("y", t(2, 3))
    b.graph.outputs["o"] = b.select(b.const(True), x, y)    # o is [2,3]: x alone is not
    new, report = fold_constants(b.graph)
    assert report.changed == 0 and ops(new)[-1] == "select"


def test_random_ops_and_sources_are_never_folded():
    with noise_op() as noise:
        b = builder()
        w = b.param("w", t(3), init=("ones",))
        s = b.state("s", t(3))
        b.graph.outputs.update(n=b.op(noise, b.const(np.ones(3, np.float32))),
                               w2=b.exp(w), s2=b.exp(s))
        new, report = fold_constants(b.graph)
        assert report.changed == 0 and text(new) == text(b.graph)


def test_huge_results_are_left_to_run_time():
    b = builder()
    big = b.const(np.zeros((1000, 1001), np.float32))
    ok = b.const(np.zeros((1000, 1000), np.float32))
    b.graph.outputs.update(big=b.exp(big), ok=b.exp(ok))
    assert 1000 * 1000 <= FOLD_LIMIT < 1000 * 1001
    new, report = fold_constants(b.graph)
    assert report.changed == 1 and report.items[0].startswith("exp 'ok'")
    assert new.nodes[new.outputs["big"]].op == "exp"


def test_integer_and_boolean_constants_fold_too():
    b = builder()
    flag = b.equal(b.const(np.array([1, 2, 3])), b.const(np.array([1, 0, 3])))
    b.graph.outputs["f"] = b.cast(flag, dtype="f32")
    new, _ = fold_constants(b.graph)
    value = new.nodes[new.outputs["f"]].attrs["value"]
    assert value.dtype == np.float32 and value.tolist() == [1.0, 0.0, 1.0]
    assert new.nodes[new.outputs["f"]].type.dtype is DType.f32


def test_fold_is_idempotent():
    b = builder()
    x = b.input("x", t(3))
    b.graph.outputs["y"] = b.add(x, b.exp(b.const(1.0)))
    once, _ = fold_constants(b.graph)
    twice, report = fold_constants(once)
    assert report.changed == 0 and text(twice) == text(once)
