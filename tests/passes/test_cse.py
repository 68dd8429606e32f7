"""CSE: same op, attributes and inputs merge; impure ops and sources never do."""
from __future__ import annotations

import numpy as np

from netlang.ir.types import DType
from netlang.passes.autodiff import gradients
from netlang.passes.cse import eliminate_common_subexpressions as cse
from tests.passes.util import builder, noise_op, ops, run, t, text


def test_duplicate_expression_merges_and_roles_follow():
    b = builder()
    x = b.input("x", t(3))
    y1, y2 = b.exp(x), b.exp(x)
    b.graph.outputs.update(y1=y1, y2=y2, s=b.add(y1, y2))
    new, report = cse(b.graph)
    assert (len(b.graph), len(new)) == (4, 3)
    assert ops(new) == ["input", "exp", "add"]
    assert new.outputs["y1"] == new.outputs["y2"]
    assert report.changed == 1
    assert report.summary == "merged 1 node"
    assert report.items == ("exp 'y1' <- 1 copy: 'y2'",)


def test_whole_duplicate_chains_merge_bottom_up():
    b = builder()
    x = b.input("x", t(3))
    a = b.exp(b.sin(x))
    c = b.exp(b.sin(x))
    b.graph.outputs["y"] = b.mul(a, c)
    new, report = cse(b.graph)
    assert (len(b.graph), len(new), report.changed) == (6, 4, 2)
    mul = new.nodes[new.outputs["y"]]
    assert mul.inputs[0] == mul.inputs[1]


def test_commutative_ops_merge_in_either_order_but_sub_does_not():
    b = builder()
    x, y = b.input("x", t(3)), b.input("y", t(3))
    b.graph.outputs.update(a=b.add(x, y), b=b.add(y, x), c=b.sub(x, y), d=b.sub(y, x))
    new, report = cse(b.graph)
    assert report.changed == 1
    assert ops(new) == ["input", "input", "add", "sub", "sub"]


def test_constants_merge_by_value_and_dtype():
    b = builder()
    x = b.input("x", t(3))
    one_a, one_b = b.const(1.5), b.const(1.5)
    other = b.const(2.5)
    wide = b.const(1.5, DType.f64)
    b.graph.outputs.update(p=b.mul(x, one_a), q=b.mul(x, one_b), r=b.mul(x, other),
                           s=b.mul(b.cast(x, dtype="f64"), wide))
    new, report = cse(b.graph)
    # one_b merges into one_a, then q = x*one_a merges into p.
    assert report.changed == 2
    assert ops(new).count("const") == 3


def test_attributes_distinguish_nodes():
    b = builder()
    x = b.input("x", t(3))
    b.graph.outputs.update(a=b.pow(x, exponent=2.0), b=b.pow(x, exponent=3.0),
                           c=b.pow(x, exponent=2.0))
    new, report = cse(b.graph)
    assert report.changed == 1 and ops(new).count("pow") == 2


def test_sources_and_random_ops_never_merge():
    with noise_op() as noise:
        b = builder()
        x, y = b.input("x", t(3)), b.input("y", t(3))
        w1 = b.param("w1", t(3), init=("zeros",))
        w2 = b.param("w2", t(3), init=("zeros",))
        s1 = b.state("s1", t(3))
        s2 = b.state("s2", t(3))
        m1, m2 = b.op(noise, x), b.op(noise, x)
        b.graph.outputs.update(o=b.add(b.add(b.add(x, y), b.add(w1, w2)),
                                       b.add(b.add(s1, s2), b.add(m1, m2))))
        new, report = cse(b.graph)
        assert report.changed == 0
        assert len(new) == len(b.graph)
        assert ops(new).count(noise) == 2


def test_merges_across_forward_and_gradient_nodes():
    # y = sin(x) + cos(x): the VJP of sin emits cos(x) and the VJP of cos emits sin(x),
    # both already computed by the forward pass.
    b = builder()
    x = b.input("x", t(4, dtype=DType.f64))
    y = b.add(b.sin(x), b.cos(x))
    (g,) = gradients(b, y, [x])
    b.graph.outputs.update(y=y, g=g)
    new, report = cse(b.graph)
    assert report.changed == 2
    # the forward node is kept; the gradient's copy goes
    assert sorted(report.items) == ["cos <- 1 copy: (grad)", "sin <- 1 copy: (grad)"]
    assert len(new) == len(b.graph) - 2
    xs = np.linspace(-1, 1, 4)
    before = run(b.graph, [y, g], {x: xs})
    after = run(new, [new.outputs["y"], new.outputs["g"]], {new.inputs["x"]: xs})
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(after[1], np.cos(xs) - np.sin(xs))


def test_cse_is_idempotent():
    b = builder()
    x = b.input("x", t(3))
    b.graph.outputs.update(a=b.exp(b.sin(x)), b=b.exp(b.sin(x)))
    once, _ = cse(b.graph)
    twice, report = cse(once)
    assert report.changed == 0 and text(twice) == text(once)
