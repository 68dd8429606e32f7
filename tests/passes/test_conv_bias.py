"""The conv_bias pass: conv2d + bias (+ relu) -> one conv2d_bias node, same numbers."""
from __future__ import annotations

import numpy as np

import netlang
from netlang.passes.conv_bias import find_conv_bias, fuse_conv_bias
from netlang.passes.pipeline import OPTIMIZE, without
from tests.passes.util import ops

SPEC = """
network c {
  input x: f32[N, 6, 6, 2]
  input label: i32[N]
  h = x |> conv2d(3, kernel=3, padding=same) |> relu
  z = conv2d(h, 4, kernel=3)
  named = conv2d(h, 4, kernel=3, name=kept)
  logits = flatten(z + named) |> dense(2)
  loss xent = mean(softmax_cross_entropy(logits, label))
}
"""


def optimized(model, training: bool):
    return model.trace(training, model.training_graph() if training else model.graph)[-1].graph


def after_dce(model):
    """The eval graph as conv_bias gets it."""
    return next(step.graph for step in model.trace(False) if step.name == "dce")


def test_a_conv_layer_becomes_one_node_with_its_bias_and_relu():
    model = netlang.compile(SPEC)
    before = after_dce(model)
    after, rep = fuse_conv_bias(before)
    assert rep.summary == "fused 3 convolutions with their bias (and relu)"
    assert ops(after).count("conv2d_bias") == 3 and "conv2d" not in ops(after)
    assert len(before) - len(after) == 4        # 3 adds and one relu absorbed
    relu = [n.attrs["relu"] for n in after if n.op == "conv2d_bias"]
    assert relu == [True, False, False]
    again, second = fuse_conv_bias(after)
    assert second.changed == 0 and len(again) == len(after)


def test_relu_stays_apart_when_the_biased_value_is_read_elsewhere():
    model = netlang.compile("network c { input x: f32[N, 5, 5, 1]\n"
                            "  h = conv2d(x, 2, kernel=3)\n"
                            "  output y = relu(h)\n  output s = sin(h) }")
    graph = after_dce(model)
    ((conv, _bias, relu, absorbed),) = find_conv_bias(graph).values()
    assert relu is False and absorbed == [conv]
    after, _ = fuse_conv_bias(graph)
    assert ops(after).count("relu") == 1 and ops(after).count("conv2d_bias") == 1


def test_training_computes_the_same_with_and_without_the_pass():
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((3, 6, 6, 2)).astype(np.float32),
             "label": np.array([0, 1, 1], np.int32)}
    fused = netlang.compile(SPEC)
    plain = netlang.compile(SPEC, passes=without(OPTIMIZE, "conv_bias"))
    names = ["xent", *(f"grad/{p}" for p in fused.graph.params)]
    for kernels in ("builtin", "numpy", "default"):
        got = fused.session(seed=3, kernels=kernels).run(names, feeds, training=True)
        want = plain.session(seed=3, kernels=kernels).run(names, feeds, training=True)
        for name, a, b in zip(names, got, want):
            if kernels == "default":    # oneDNN's fused primitive sums in its own order
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
            else:
                np.testing.assert_array_equal(a, b, err_msg=name)
    assert "conv2d_bias" in ops(optimized(fused, True))
