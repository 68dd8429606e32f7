"""The relu_mask pass: relu's gradient after a batchnorm taken from the batchnorm's input,
recomputed in the loop that reads it anyway, with the same bits."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import netlang
from netlang.ops.fused import fused_kernel
from netlang.passes.pipeline import OPTIMIZE, without
from netlang.passes.relu_mask import mask_from_input
from netlang.runtime import channel_sums, executor, generated
from tests.passes.test_batchnorm import SPEC, step_graph
from tests.passes.util import assert_same_training_bits

# The forward loop the batchnorm and fusion passes make of batchnorm -> relu, relu(x * s + t),
# and the backward loop this pass makes of its gradient: relu_grad(dy, x * s + t).
FORWARD = (("mul", ("x0", "x1"), ()), ("add", ("t0", "x2"), ()), ("relu", ("t1",), ()))
BACKWARD = (("mul", ("x1", "x2"), ()), ("add", ("t0", "x3"), ()),
            ("relu_grad", ("x0", "t1"), ()))
RELU_GRAD = (("relu_grad", ("x0", "x1"), ()),)


def test_each_relu_gradient_after_a_batchnorm_reads_the_batchnorms_input():
    model = netlang.compile(SPEC)
    before = step_graph(model, "batchnorm")
    after, rep = mask_from_input(before)
    assert rep.changed == 3 and rep.summary == "took 3 relu gradients from the batchnorm's input"
    assert all(line.endswith("(2 steps; 1 user with its own copy)") for line in rep.items)
    again, second = mask_from_input(after)
    assert second.changed == 0 and len(again) == len(after)

    fused = step_graph(model, "fusion")
    users = fused.users()
    relu_outputs = {n.id for n in fused if n.op == "fused" and n.attrs["expr"][-1][0] == "relu"}
    grads = [n for n in fused if n.op == "fused" and n.attrs["expr"][-1][0] == "relu_grad"]
    assert [[s[0] for s in n.attrs["expr"]] for n in grads] == [["mul", "add", "relu_grad"]] * 3
    for node in grads:          # only beta's and gamma's sums read it
        assert not relu_outputs.intersection(node.inputs)
        image = node.inputs[0]                       # x: mul(x, s) comes first
        assert sorted(fused.nodes[u].op for u in users[node.id]) == [
            "batchnorm_grad_gamma", "sum"]
        gammas = [fused.nodes[u] for u in users[node.id]
                  if fused.nodes[u].op == "batchnorm_grad_gamma"]
        assert [g.inputs[1] for g in gammas] == [image]
    # the gradient of x recomputes it in its own loop: dy * (x * s + t > 0) * s + ...
    grad_x = [n for n in fused if n.op == "fused" and n.type.rank == 4
              and [s[0] for s in n.attrs["expr"][:3]] == ["mul", "add", "relu_grad"]
              and len(n.attrs["expr"]) > 3]
    assert len(grad_x) == 3 and not any(relu_outputs.intersection(n.inputs) for n in grad_x)


@pytest.mark.parametrize("kernels", ["numpy", "builtin", "default"])
def test_training_computes_the_same_bits_with_and_without_the_pass(kernels):
    assert_same_training_bits(SPEC, "relu_mask", kernels, seed=1)


def test_the_loop_takes_betas_and_gammas_sums_and_stores_nothing(monkeypatch):
    """The recomputing loop is a generated kernel like relu_grad's: beta's and gamma's
    gradients are still summed in it (runtime/channel_sums.py), and as nothing else reads
    the gradient, a planned run's loop does not store it.  A run with a hook (no plan: the
    hook sees every value) stores it."""
    taken, stores = [], []
    real, sums = channel_sums.fuse_channel_sums, generated.with_channel_sums

    def counted(*args, **kwargs):
        taken.append(real(*args, **kwargs))
        return taken[-1]

    def storing(run, kinds, store=True):
        stores.append(store)
        return sums(run, kinds, store)
    monkeypatch.setattr(executor, "fuse_channel_sums", counted)
    monkeypatch.setattr(generated, "with_channel_sums", storing)
    feeds = {"x": np.ones((4, 6, 6, 3), np.float32), "label": np.zeros(4, np.int32)}
    counts, kept = [], []
    for passes in (OPTIMIZE, without(OPTIMIZE, "relu_mask")):
        taken.clear()
        stores.clear()
        model = netlang.compile(SPEC, passes=passes)
        model.session(seed=0).run([f"grad/{p}" for p in model.graph.params], feeds,
                                  training=True)
        counts.append(sum(taken))
        kept.append(stores.count(False))
    assert counts[0] == counts[1] > 0 and kept == [3, 0]
    stores.clear()
    session = netlang.compile(SPEC).session(seed=0)
    session.executor.on_step = lambda node, value: None
    session.run([f"grad/{p}" for p in model.graph.params], feeds, training=True)
    assert stores and all(stores)


def test_left_alone_where_nothing_else_reads_the_image():
    """A convolution's relu (no batchnorm before it), a relu of x * 2 + 1 (its gradient loop
    reads no x) and a batchnorm's relu before a max pooling (the pooled gradient loop reads
    relu's output anyway): nothing to save.  A batchnorm without gamma still is: the
    gradient of its variance takes the same sum of g * (x - mean)."""
    model = netlang.compile("""network n {
  input x: f32[N, 6, 6, 3]
  input label: i32[N]
  h = x |> conv2d(4, kernel=3, padding=same) |> relu
  k = relu(h * 2 + 1)
  p = (h + k) |> batchnorm |> relu |> maxpool(2)
  logits = p |> batchnorm(scale=false) |> relu |> flatten |> dense(2)
  loss xent = mean(softmax_cross_entropy(logits, label))
}""")
    graph = step_graph(model, "batchnorm")
    assert [n.op for n in graph].count("relu_grad") == 4
    rep = mask_from_input(graph)[1]
    assert rep.changed == 1 and "add [bn2]" in rep.items[0]


FLOATS = st.floats(width=32, allow_nan=True, allow_infinity=True)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.lists(st.integers(1, 7), min_size=2, max_size=4).map(tuple),
       data=st.data())
def test_relu_grad_of_the_recomputed_input_is_relu_grad_of_the_output(shape, data):
    """relu_grad(dy, v) = dy * (v > 0) and relu(v) > 0 exactly where v > 0 (NaN, -0.0,
    infinities included): the pass's loop gives the bits relu_grad of relu's output gives,
    in the generated kernels and the NumPy reference."""
    full = hnp.arrays(np.float32, shape, elements=FLOATS)
    vector = hnp.arrays(np.float32, shape[-1:], elements=FLOATS)
    dy, x, s, t = data.draw(full), data.draw(full), data.draw(vector), data.draw(vector)
    with np.errstate(all="ignore"):
        y = np.asarray(fused_kernel(np, x, s, t, expr=FORWARD))
        want = np.asarray(fused_kernel(np, dy, y, expr=RELU_GRAD))
        reference = np.asarray(fused_kernel(np, dy, x, s, t, expr=BACKWARD))
        arrays = [dy, x, s, t]
        run = generated.generated_kernel(BACKWARD, [a.shape for a in arrays],
                                         [a.dtype for a in arrays])
        got = run(*arrays)
        forward = generated.generated_kernel(FORWARD, [x.shape, s.shape, t.shape],
                                             [np.dtype(np.float32)] * 3)
        np.testing.assert_array_equal(forward(x, s, t), y)
    np.testing.assert_array_equal(reference, want)
    np.testing.assert_array_equal(got, want)
