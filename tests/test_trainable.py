"""Frozen layers (``trainable=false``) and ``stop_gradient`` in a training graph."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.errors import GradientError, SpecError
from netlang.model import Model
from netlang.train.optimizers import make_optimizer
from netlang.train.step import LR_INPUT, build_train_graph

FROZEN = """
block res(x) {
  return x |> dense(4, activation=relu) |> dense(4)
}
network f {
  input x: f32[N, 3]
  input t: f32[N, 2]
  h = dense(x, 4, activation=tanh, trainable=false)
  h2 = res(h, trainable=false)
  y = dense(h2 + res(h), 2)
  loss l = mse(y, t)
}
"""

FROZEN_NAMES = ["dense1/W", "dense1/b", "res1/dense1/W", "res1/dense1/b", "res1/dense2/W",
                "res1/dense2/b"]


def test_frozen_layers_and_block_uses_make_variables_the_optimizer_leaves_alone():
    model = netlang.compile(FROZEN)
    assert list(model.graph.state) == FROZEN_NAMES
    assert list(model.graph.params) == ["res2/dense1/W", "res2/dense1/b", "res2/dense2/W",
                                        "res2/dense2/b", "dense2/W", "dense2/b"]
    train = build_train_graph(model, make_optimizer("sgd", {"lr": 0.1}))
    session = Model(train).session(seed=0)
    before = {k: v.copy() for k, v in session.state.arrays.items()}
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((8, 3)).astype(np.float32),
             "t": rng.standard_normal((8, 2)).astype(np.float32), LR_INPUT: np.float32(0.1)}
    losses = [float(session.run("l", feeds, training=True, updates=True)) for _ in range(3)]
    assert losses[2] < losses[0]
    for name, old in before.items():
        changed = not np.array_equal(session.state[name], old)
        assert changed == (name not in FROZEN_NAMES), name


def test_stop_gradient_in_a_training_graph_is_allowed_when_what_it_cuts_is_frozen():
    spec = """network s {
  input x: f32[N, 3]
  input t: f32[N, 2]
  h = dense(x, 4, activation=tanh, trainable=false)
  loss l = mse(dense(stop_gradient(h), 2), t)
}"""
    train = build_train_graph(netlang.compile(spec), make_optimizer("sgd", {"lr": 0.1}))
    assert sorted(train.updates) == ["dense2/W", "dense2/b"]


def test_a_trainable_parameter_cut_off_by_stop_gradient_is_an_error_that_says_how_to_freeze():
    spec = """network s {
  input x: f32[N, 3]
  input t: f32[N, 2]
  h = dense(x, 4, activation=tanh)
  loss l = mse(dense(stop_gradient(h), 2), t)
}"""
    with pytest.raises(GradientError) as info:
        netlang.compile(spec, "s.net").training_graph()
    lines = str(info.value).splitlines()
    assert lines[0] == ("s.net:5:12: gradient error: 'dense1/W' gets no gradient: the path to "
                        "the loss is blocked by stop_gradient at s.net:5:22 (stop_gradient "
                        "blocks the gradient on purpose)")
    assert lines[-1] == ("hint: remove the blocking op from the loss path, or freeze these "
                         "parameters: trainable=false on the layer or block use that makes them")


def test_a_shared_frozen_layer_stays_frozen():
    model = netlang.compile("""network s {
  input x: f32[N, 3]
  a = dense(x, 3, trainable=false, name=fc)
  output y = dense(a, 3, share=fc)
}""")
    assert list(model.graph.state) == ["fc/W", "fc/b"] and not model.graph.params


def test_trainable_takes_true_or_false():
    with pytest.raises(SpecError) as info:
        netlang.compile("network s {\n  input x: f32[N, 3]\n  output y = dense(x, 3, "
                        "trainable=2)\n}", "s.net")
    assert "trainable" in str(info.value).splitlines()[0]
