"""conv1d: a convolution along the length of [N, length, channels] (seed 002 names it), as
conv2d over a height of 1."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.errors import ShapeError
from netlang.gradcheck import gradcheck

SPEC = """
network seq {
  input x: f32[N, 12, 3]
  input label: i32[N]
  h = x |> conv1d(8, kernel=3, padding=same) |> relu
    |> conv1d(4, kernel=2, stride=2, padding=(1, 0), groups=2)
  logits = h |> flatten |> dense(2)
  loss xent = mean(softmax_cross_entropy(logits, label))
  output probs = softmax(logits)
}
"""


def test_conv1d_shapes_parameters_and_gradients():
    model = netlang.compile(SPEC)
    assert str(model.types()["h"]) == "f32[N,6,4]"
    shapes = {k: str(model.graph.nodes[v].type) for k, v in model.graph.params.items()}
    assert shapes["conv1d_1/W"] == "f32[3,3,8]" and shapes["conv1d_2/W"] == "f32[2,4,4]"
    for check in gradcheck(model):
        assert check.worst_rel_error < 1e-6, check


def test_conv1d_equals_a_direct_sum():
    spec = ("network c {\n  input x: f32[N, 7, 2]\n  output y = conv1d(x, 3, kernel=3, "
            "dilation=2, use_bias=false)\n}\n")
    session = netlang.compile(spec).session(seed=4)
    w = session.state.to_numpy()["conv1d_1/W"]
    x = np.random.default_rng(0).standard_normal((2, 7, 2)).astype(np.float32)
    want = np.stack([sum(x[:, t + 2 * i] @ w[i] for i in range(3)) for t in range(3)], axis=1)
    np.testing.assert_allclose(session.run("y", {"x": x}), want, rtol=1e-5, atol=1e-6)


def test_conv1d_wants_a_sequence():
    with pytest.raises(ShapeError, match=r"conv1d expects a float \[N, length, channels\] "
                                         r"input, got f32\[N,4\]"):
        netlang.compile("network c {\n  input x: f32[N, 4]\n  output y = conv1d(x, 2, "
                        "kernel=3)\n}\n")
