"""Grouped and depthwise convolutions: conv2d(..., groups=G) and depthwise_conv2d, as a
user writes them (the op's own property cases are in tests/ops/cases_conv.py)."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.errors import ShapeError
from netlang.gradcheck import gradcheck

SPEC = """
network g {
  input x: f32[N, 8, 8, 4]
  input label: i32[N]
  h = x |> conv2d(6, kernel=3, groups=2, padding=same) |> relu
  d = h |> depthwise_conv2d(kernel=3, multiplier=2) |> relu
  logits = d |> global_avgpool |> dense(3)
  loss xent = mean(softmax_cross_entropy(logits, label))
  output probs = softmax(logits)
}
"""


def test_grouped_and_depthwise_layers_have_their_shapes_and_parameters():
    model = netlang.compile(SPEC)
    types = {name: str(model.graph.nodes[nid].type) for name, nid in model.graph.params.items()}
    assert types == {"conv1/W": "f32[3,3,2,6]", "conv1/b": "f32[6]",
                     "dwconv1/W": "f32[3,3,1,12]", "dwconv1/b": "f32[12]",
                     "dense1/W": "f32[12,3]", "dense1/b": "f32[3]"}
    assert str(model.types()["d"]) == "f32[N,6,6,12]"
    assert "groups=2" in model.ir() and "groups=6" in model.ir()


def test_gradients_of_grouped_convolutions_match_finite_differences():
    for check in gradcheck(netlang.compile(SPEC)):
        assert check.worst_rel_error < 1e-6, check


def test_the_fast_kernels_leave_grouped_convolutions_to_the_reference():
    model = netlang.compile(SPEC)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((5, 8, 8, 4)).astype(np.float32),
             "label": rng.integers(0, 3, 5).astype(np.int32)}
    names = ["probs", "grad/conv1/W", "grad/dwconv1/W"]
    fast = model.session(seed=1).run(names, feeds, training=True)
    reference = model.session(seed=1, kernels="numpy").run(names, feeds, training=True)
    for a, b in zip(fast, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("call, message", [
    ("conv2d(6, kernel=3, groups=3)",
     "conv2d: 3 groups do not divide the 4 input channels"),
    ("conv2d(5, kernel=3, groups=2)", "conv2d: 2 groups do not divide the 5 filters"),
])
def test_groups_that_do_not_divide_the_channels_are_shape_errors(call, message):
    spec = f"network g {{\n  input x: f32[N, 8, 8, 4]\n  output y = x |> {call}\n}}\n"
    with pytest.raises(ShapeError) as err:
        netlang.compile(spec)
    assert err.value.message == message
    assert err.value.span.line == 3
