"""The IR verifier: broken invariants are reported with the printed IR around the node."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from netlang.ir.types import DType
from netlang.passes import pipeline
from netlang.passes.verify import IRError, verify_graph
from tests.passes.util import builder, t


def small():
    b = builder()
    x = b.input("x", t(3))
    a = b.exp(x)
    s = b.sin(a)
    c = b.cos(s)
    b.graph.outputs["y"] = b.add(c, a)
    return b, x, a, s, c


def test_a_well_formed_graph_passes_unchanged():
    b, *_ = small()
    graph, report = verify_graph(b.graph)
    assert graph is b.graph and report == "5 nodes well formed"


def test_a_wrong_type_shows_the_ir_around_the_node():
    b, _x, _a, s, _c = small()
    node = b.graph.nodes[s]
    b.graph.nodes[s] = dataclasses.replace(node, type=t(4))
    with pytest.raises(IRError) as info:
        verify_graph(b.graph)
    assert str(info.value) == (
        "IR check failed: %2 is typed f32[4] but sin's shape rule gives f32[3]\n"
        "   %x: f32[3] = input()\n"
        "   %1: f32[3] = exp(%x)\n"
        ">> %2: f32[4] = sin(%1)\n"
        "   %3: f32[3] = cos(%2)\n"
        "   %4: f32[3] = add(%3, %1)")


@pytest.mark.parametrize("breakage, message", [
    (lambda g, ids: g.nodes.update({ids[1]: dataclasses.replace(g.nodes[ids[1]],
                                                                inputs=(ids[3],))}),
     "%1 uses %3 before it is defined"),
    (lambda g, ids: g.nodes.update({ids[2]: dataclasses.replace(g.nodes[ids[2]], op="nope")}),
     "%2 has an unknown op 'nope'"),
    (lambda g, ids: g.nodes.update({ids[4]: dataclasses.replace(g.nodes[ids[4]],
                                                                inputs=(ids[3],))}),
     "%4 add takes 2 input(s) but has 1"),
    (lambda g, ids: g.nodes.update({ids[2]: dataclasses.replace(g.nodes[ids[2]],
                                                                attrs={"axis": 1})}),
     "%2 sin has unknown attribute(s) axis"),
    (lambda g, ids: g.outputs.update(y=99), "outputs entry 'y' points at %99"),
    (lambda g, ids: g.inputs.update(x=ids[1]), "inputs entry 'x' points at %1, which is not"),
])
def test_each_invariant_is_checked(breakage, message):
    b = small()[0]
    ids = list(b.graph.nodes)
    breakage(b.graph, ids)
    with pytest.raises(IRError, match=message.replace("(", r"\(").replace(")", r"\)")):
        verify_graph(b.graph)


def test_constants_and_updates_must_match_their_types():
    b = builder()
    k = b.const(np.ones(3, np.float32))
    node = b.graph.nodes[k]
    b.graph.nodes[k] = dataclasses.replace(node, attrs={"value": np.ones(3, np.float64)})
    with pytest.raises(IRError, match="constant typed f32\\[3\\] holding float64\\[3\\]"):
        verify_graph(b.graph)
    b = builder()
    s = b.state("s", t(3))
    b.update(s, b.cast(s, dtype="f64"))
    with pytest.raises(IRError, match="update of 's' has type f64\\[3\\]"):
        verify_graph(b.graph)


def test_the_pipeline_names_the_pass_that_broke_the_graph():
    def broken(graph):
        graph = graph.copy()
        nid = graph.outputs["y"]
        graph.nodes[nid] = dataclasses.replace(graph.nodes[nid], type=t(3, dtype=DType.f64))
        return graph, "broke it"

    b, *_ = small()
    with pytest.raises(IRError, match="after pass 'broken': %4 is typed f64"):
        list(pipeline.each_pass(b.graph, [("broken", broken)]))
    steps = list(pipeline.each_pass(b.graph, [("broken", broken)], verify=False))
    assert [(name, rep) for name, _, rep in steps] == [("broken", "broke it")]
