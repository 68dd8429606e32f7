"""The optimizer as a whole: on random networks it changes nothing a user can measure.

Random graphs mix inputs, constants, the train/eval mode and the patterns each pass looks
for (duplicates, ``x*1``, ``neg(neg x)``, transposes, constant subexpressions, selects).
For random inputs the fully optimized graph must give the same outputs and the same
gradients as the graph with only the mode bound; every pass, and the pipeline, must be
idempotent.
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from netlang.compiler import run_passes
from netlang.errors import ShapeError
from netlang.ir.types import DType
from netlang.passes.autodiff import gradients
from netlang.passes.mode import bind_mode
from netlang.passes.pipeline import OPTIMIZE, PREPARE, pass_names
from tests.passes.util import builder, mode_node, run, t, text

F64 = DType.f64
INPUTS = {"x0": (3, 4), "x1": (4,), "x2": (3, 1)}

PATTERNS = {
    "add": lambda b, a, c, m: b.add(a, c),
    "sub": lambda b, a, c, m: b.sub(a, c),
    "mul": lambda b, a, c, m: b.mul(a, c),
    "div": lambda b, a, c, m: b.div(a, b.exp(b.tanh(c))),
    "maximum": lambda b, a, c, m: b.maximum(a, c),
    "sin": lambda b, a, c, m: b.sin(a),
    "cos": lambda b, a, c, m: b.cos(a),
    "tanh": lambda b, a, c, m: b.tanh(a),
    "sigmoid": lambda b, a, c, m: b.sigmoid(a),
    "square": lambda b, a, c, m: b.square(b.tanh(a)),
    "exp": lambda b, a, c, m: b.exp(b.tanh(a)),
    "relu": lambda b, a, c, m: b.relu(a),
    "identity": lambda b, a, c, m: b.identity(a),
    "stop_gradient": lambda b, a, c, m: b.stop_gradient(a),
    "neg_neg": lambda b, a, c, m: b.neg(b.neg(a)),
    "mul_one": lambda b, a, c, m: b.mul(b.const(1.0, F64), a),
    "add_zero": lambda b, a, c, m: b.add(a, b.const(0.0, F64)),
    "div_one": lambda b, a, c, m: b.div(a, b.const(1.0, F64)),
    "transposes": lambda b, a, c, m: b.transpose(b.transpose(a)),
    "reshapes": lambda b, a, c, m: b.reshape(b.reshape(a, shape=(-1,)),
                                             shape=b.type_of(a).shape),
    "select_mode": lambda b, a, c, m: b.select(m, a, c),
    "select_compare": lambda b, a, c, m: b.select(b.greater(a, c), a, c),
    "constant_expr": lambda b, a, c, m: b.mul(a, b.exp(b.const(0.5, F64))),
    "mean": lambda b, a, c, m: b.mean(a, axis=-1, keepdims=True),
}


@st.composite
def networks(draw):
    """A random valid network with outputs ``y`` and ``z``, and its gradients ``g/x*``."""
    b = builder("random")
    xs = [b.input(name, t(*shape, dtype=F64)) for name, shape in INPUTS.items()]
    pool = [*xs, b.const(1.0, F64), b.const(0.0, F64),
            b.const(np.array([0.5, -1.0, 2.0, 0.0]), F64)]
    mode = mode_node(b)
    for _ in range(draw(st.integers(1, 12))):
        pattern = PATTERNS[draw(st.sampled_from(sorted(PATTERNS)))]
        a, c = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
        repeat = draw(st.integers(1, 3)) if draw(st.booleans()) else 1
        for _ in range(repeat):      # identical copies for CSE
            try:
                pool.append(pattern(b, a, c, mode))
            except ShapeError:
                break
    y, z = pool[-1], draw(st.sampled_from(pool[len(xs):]))
    loss = b.add(b.sum(y), b.sum(z))
    b.graph.outputs.update(y=y, z=z)
    for name, g in zip(INPUTS, gradients(b, loss, xs)):
        if g is not None:
            b.graph.outputs[f"g/{name}"] = g
    return b.graph


def feeds_for(graph, seed):
    rng = np.random.default_rng(seed)
    arrays = {name: rng.uniform(-2, 2, shape) for name, shape in INPUTS.items()}
    return {nid: arrays[name] for name, nid in graph.inputs.items()}


def outputs(graph, seed):
    names = sorted(graph.outputs)
    return dict(zip(names, run(graph, [graph.outputs[n] for n in names],
                               feeds_for(graph, seed))))


@settings(max_examples=60, deadline=None)
@given(networks(), st.booleans(), st.integers(0, 2**31 - 1))
def test_optimized_graph_computes_the_same_outputs_and_gradients(graph, training, seed):
    bound, _ = bind_mode(graph, training)
    optimized, _ = run_passes(bound, OPTIMIZE)
    want, got = outputs(bound, seed), outputs(optimized, seed)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-14,
                                   equal_nan=True, err_msg=name)
    assert len(optimized) <= len(bound)


@settings(max_examples=40, deadline=None)
@given(networks(), st.booleans())
def test_every_pass_and_the_pipeline_are_idempotent(graph, training):
    bound, _ = bind_mode(graph, training)
    for name, fn in OPTIMIZE:
        once, _ = fn(bound)
        twice, report = fn(once)
        assert text(twice) == text(once), name
        assert getattr(report, "changed", 0) == 0, name
    once, _ = run_passes(bound, OPTIMIZE)
    twice, _ = run_passes(once, OPTIMIZE)
    assert text(twice) == text(once)


def test_the_pass_lists():
    assert next(name for name, _ in PREPARE) == "autodiff"
    assert [name for name, _ in OPTIMIZE][:5] == ["fold", "simplify", "cse", "settle", "dce"]
    assert pass_names()[:6] == ["autodiff", "fold", "simplify", "cse", "settle", "dce"]
