"""The batchnorm pass: batchnorm's ops as elementwise steps that fusion merges, same bits."""
from __future__ import annotations

import pytest

import netlang
from netlang.passes.batchnorm import expand_batchnorm
from tests.passes.util import assert_same_training_bits, ops

SPEC = """
network b {
  input x: f32[N, 6, 6, 3]
  input label: i32[N]
  h = x |> conv2d(4, kernel=3, padding=same)
  a = h |> batchnorm |> relu |> conv2d(4, kernel=3, padding=same)
  r = a |> batchnorm |> relu |> conv2d(4, kernel=3, padding=same)
  logits = (r + h) |> batchnorm |> relu |> flatten |> dense(2)
  loss xent = mean(softmax_cross_entropy(logits, label))
}
"""

BN_OPS = ("batchnorm_apply", "batchnorm_grad_x", "batch_variance_grad", "mean_grad")


def step_graph(model, name: str, training: bool = True):
    graph = model.training_graph() if training else model.graph
    return next(s.graph for s in model.trace(training, graph) if s.name == name)


def test_the_gradient_of_x_becomes_one_fused_loop_per_batchnorm():
    model = netlang.compile(SPEC)
    before = step_graph(model, "conv_bias")
    after, rep = expand_batchnorm(before)
    counts = {op: ops(before).count(op) for op in BN_OPS}
    assert counts == {"batchnorm_apply": 3, "batchnorm_grad_x": 3, "batch_variance_grad": 3,
                      "mean_grad": 4}
    # the mean over the batch before the loss keeps its mean_grad (not an add's operand)
    assert rep.changed == 12 and rep.summary == (
        "wrote 12 batchnorm ops as elementwise steps over per-channel vectors")
    assert [op for op in BN_OPS if op in ops(after)] == ["mean_grad"]
    assert ops(after).count("count") == 6
    fused = step_graph(model, "fusion")
    exprs = [[step[0] for step in n.attrs["expr"]] for n in fused if n.op == "fused"
             and n.type.rank == 4]
    # forward: normalize, scale, shift and relu in one loop
    assert exprs.count(["mul", "add", "relu"]) == 3
    # backward: dy * s + (x - m) * (dv / n + dv / n) + dm / n (+ the skip's gradient)
    assert sum(1 for e in exprs if e[:1] == ["mul"] and "sub" in e and e.count("add") >= 2) == 3
    again, second = expand_batchnorm(after)
    assert second.changed == 0 and len(again) == len(after)


@pytest.mark.parametrize("kernels", ["numpy", "builtin", "default"])
def test_training_computes_the_same_bits_with_and_without_the_pass(kernels):
    assert_same_training_bits(SPEC, "batchnorm", kernels)


def test_ops_fusion_would_not_take_are_left_to_their_kernels():
    model = netlang.compile("""network c {
  input x: f32[N, 3, 4]
  input y: f32[N, 4, 3]
  output a = batchnorm(x)                  # fetched by name: fusion must keep it visible
  output b = y |> batchnorm(axis=1) |> relu  # channels not last
}""")
    graph = step_graph(model, "conv_bias", training=False)
    after, rep = expand_batchnorm(graph)
    assert rep.changed == 0 and ops(after).count("batchnorm_apply") == 2
