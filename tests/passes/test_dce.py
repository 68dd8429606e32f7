"""Dead-code elimination: prune to outputs (or fetches) and updates; report used inputs."""
from __future__ import annotations

import pytest

from netlang.passes.dce import eliminate_dead_code as dce
from netlang.passes.fold import fold_constants
from netlang.passes.mode import bind_mode
from tests.passes.util import builder, mode_node, ops, t, text


def two_branches():
    b = builder()
    x, y = b.input("x", t(3)), b.input("y", t(3))
    a = b.exp(x)
    s = b.sin(y)
    b.graph.values.update(a=a, s=s)
    b.graph.outputs["a"] = a
    b.graph.outputs["twice"] = b.add(a, a)
    return b.graph, s


def test_unreachable_nodes_and_inputs_go_and_are_reported():
    graph, _ = two_branches()
    new, report = dce(graph)
    assert (len(graph), len(new)) == (5, 3)
    assert ops(new) == ["input", "exp", "add"]
    assert "y" not in new.inputs and "s" not in new.values
    assert report.extra["used_inputs"] == ["x"] and report.extra["unused_inputs"] == ["y"]
    assert report.summary == ("removed 2 nodes (1 input, 1 sin); inputs used: x; unused: y")
    assert report.items == ("removed input 'y'", "removed sin 's'")


def test_given_roots_replace_the_outputs():
    graph, s = two_branches()
    new, report = dce(graph, [s])
    assert ops(new) == ["input", "sin"]
    assert report.extra["used_inputs"] == ["y"]
    assert new.values == {"s": 1}


@pytest.mark.parametrize("training, kept", [(False, []), (True, ["bn/mean"])])
def test_updates_that_become_no_ops_in_eval_mode_are_dropped(training, kept):
    b = builder()
    x = b.input("x", t(4, 2))
    moving = b.state("bn/mean", t(2))
    batch = b.mean(x, axis=0)
    used = b.select(mode_node(b), batch, moving)
    b.graph.outputs["y"] = b.sub(x, used)
    decayed = b.add(b.mul(moving, b.const(0.9)), b.mul(batch, b.const(0.1)))
    b.update(moving, b.select(mode_node(b), decayed, moving))
    folded, _ = fold_constants(bind_mode(b.graph, training)[0])
    new, report = dce(folded)
    assert list(new.updates) == kept
    if not training:
        assert report.extra["noop_updates"] == ["bn/mean"]
        assert "dropped 1 no-op update (bn/mean)" in report.summary
        assert "mean" not in ops(new)     # no batch statistics at all in eval
    else:
        assert ops(new).count("mean") == 1


def test_update_values_are_roots():
    b = builder()
    x = b.input("x", t(3))
    count = b.state("count", t(3))
    b.update(count, b.add(count, b.exp(x)))
    new, report = dce(b.graph)
    assert report.changed == 0 and len(new) == len(b.graph)


def test_dce_is_idempotent():
    graph, _ = two_branches()
    once, _ = dce(graph)
    twice, report = dce(once)
    assert report.changed == 0 and text(twice) == text(once)
