"""A max pooling's gradient, the relu gradient after it and a bias's sum as one loop
(runtime/pool_gradients.py): which calls it takes, and the same results as the two calls."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.runtime.executor import _kept_in_registers
from tests.runtime.test_buffer_plan import step, train_session

POOLED = """network n {
  input image: f32[N, 8, 8, 2]
  input label: i32[N]
  h = image |> conv2d(16, kernel=3, padding=same) |> relu |> maxpool(2) |> flatten
  logits = dense(h, 3)
  loss xent = mean(softmax_cross_entropy(logits, label))
}"""


def bound_calls(session) -> list[tuple[str, object]]:
    """(op, run) of each call of the session's bound program that differentiates a pool."""
    for program, per_size in session.executor._bound.items():
        ops = [call.opdef.name for call in program.calls]
        if "maxpool_grad" in ops:
            (bound,) = per_size.values()
            return [(op, call[1]) for op, call in zip(ops, bound.calls)]
    raise AssertionError("no bound program differentiates a pool")


def test_mnist_runs_each_pooled_relu_gradient_as_one_loop():
    """mnist.net's two conv -> relu -> maxpool blocks: each maxpool_grad call makes nothing
    and the relu_grad after it runs the pooled loop, which also sums for the bias."""
    session, feeds, loss = train_session("mnist.net")
    step(session, feeds, loss)
    calls = bound_calls(session)
    assert [run for op, run in calls if op == "maxpool_grad"] == [_kept_in_registers] * 2
    pooled = [getattr(run, "func", run) for op, run in calls if op == "relu_grad"]
    assert len(pooled) == 2 and all(len(run.totals) == 1 for run in pooled)


def test_a_hook_still_sees_the_pooling_gradient():
    """Without the buffer plan (a run with an ``on_step`` hook) the maxpool_grad calls still
    run, so the hook sees their values; the relu gradients are the planned run's."""
    session, feeds, loss = train_session("mnist.net")
    seen = {}

    def hook(node, value):
        seen[node.op] = seen.get(node.op, 0) + isinstance(value, np.ndarray)
    session.executor.on_step = hook
    step(session, feeds, loss)
    assert seen["maxpool_grad"] == 2 and seen["relu_grad"] == 2


def feeds_for(batch: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(6)
    return {"image": rng.standard_normal((batch, 8, 8, 2)).astype(np.float32),
            "label": rng.integers(0, 3, batch).astype(np.int32)}


@pytest.mark.parametrize("layers, totals", [("|> relu", 1), ("|> batchnorm |> relu", 2)])
def test_a_pooled_step_matches_the_reference_kernels_and_repeats_bit_for_bit(layers, totals):
    """conv -> relu -> maxpool: the loop takes the bias's sum; conv -> batchnorm -> relu ->
    maxpool: beta's sum and gamma's centered sum.  Every gradient equals the NumPy reference
    kernels' within float32 rounding, and a second session's and an unplanned run's (the
    maxpool_grad call then still runs) bit for bit."""
    model = netlang.compile(POOLED.replace("|> relu", layers))
    names = ["xent", *(f"grad/{p}" for p in model.graph.params)]
    sessions = [model.session(kernels=k) for k in ("default", "default", "default", "numpy")]
    sessions[2].executor.buffer_plan = False
    runs = [s.run(names, feeds_for(), training=True) for s in sessions]
    calls = bound_calls(sessions[0])
    assert [op for op, run in calls if run is _kept_in_registers] == ["maxpool_grad"]
    (pooled,) = [getattr(run, "func", run) for op, run in calls if op == "relu_grad"]
    assert len(pooled.totals) == totals
    for other in runs[1:3]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
    for got, want in zip(runs[0], runs[3]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_few_channels_keep_the_two_calls():
    """Below ``FROM_CHANNELS`` the window loop is too short to hide the sums."""
    model = netlang.compile(POOLED.replace("conv2d(16", "conv2d(4"))
    session = model.session()
    session.run([f"grad/{p}" for p in model.graph.params], feeds_for(), training=True)
    assert not [op for op, run in bound_calls(session) if run is _kept_in_registers]
