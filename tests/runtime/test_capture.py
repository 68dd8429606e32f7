"""Steps replayed over fixed buffers (runtime/capture.py), on the GPU backend's code with the
NumPy stand-in for CuPy (test_backend.py), which cannot capture: every segment then replays
its calls into the buffers the recording run made, so these tests check the bookkeeping a
CUDA graph relies on (fixed feeds, values kept, variables committed in place, eager calls
between the graphs) against an uncaptured run, step after step."""
from __future__ import annotations

import types

import numpy as np
import pytest

import netlang
from netlang.cli.bench import build_train_model, synthetic_batch, train_config_of
from netlang.runtime import capture
from netlang.train.step import LR_INPUT
from tests.runtime.test_backend import fresh_gpu_slot, numpy_as_gpu  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("numpy_as_gpu")


def steps(spec: str, graphs: bool, count: int = 4, batch: int = 6):
    """Losses and final state of ``count`` train steps, each on its own batch."""
    model = netlang.compile(f"specs/{spec}")
    train, optimizer = build_train_model(model, train_config_of(model))
    session = train.session("gpu", seed=5)
    session.executor.graphs = graphs
    losses = []
    for step in range(count):
        feeds = step_feeds(model, batch, optimizer.lr, step)
        losses.append(float(session.run(model.graph.loss, feeds, training=True,
                                        updates=True)))
    return losses, session.state.to_numpy(), session


def step_feeds(model, batch: int, lr: float, step: int) -> dict:
    """A synthetic batch of its own for step ``step``: the float inputs moved by noise."""
    rng = np.random.default_rng(step)
    feeds = {**synthetic_batch(model.graph, batch), LR_INPUT: np.float32(lr)}
    return {k: (v + rng.standard_normal(v.shape).astype(v.dtype)
                if getattr(v, "dtype", None) is not None and v.dtype.kind == "f"
                and v.ndim else v) for k, v in feeds.items()}


@pytest.mark.parametrize("spec", ["mnist.net", "residual.net", "spiral.net"])
def test_replayed_steps_equal_launched_steps_bit_for_bit(spec):
    """mnist.net's dropout draws inside the graphs, keyed from the same host generator."""
    replayed, state, session = steps(spec, True)
    launched, plain, _ = steps(spec, False)
    assert replayed == launched
    for name, value in plain.items():
        np.testing.assert_array_equal(state[name], value, err_msg=name)
    graphed = [g for per in session.executor._graphed.values() for g in per.values()]
    assert graphed and all(isinstance(g, capture.GraphedProgram) for g in graphed)


def test_the_step_is_cut_at_what_cannot_be_captured():
    _, _, session = steps("mnist.net", True, count=1)
    (graphed,) = [g for per in session.executor._graphed.values() for g in per.values()]
    eager = [graphed.program.calls[[c.out for c in graphed.program.calls].index(s.calls[0][0])]
             for s in graphed.segments if not s.capturable]
    # only cuBLAS's matmuls: dropout's Philox draw is captured, its key filled before each
    # replay (runtime/gpu_draws.py), so it no longer cuts the step
    assert {c.opdef.name for c in eager} == {"matmul"}
    captured = [s for s in graphed.segments if s.capturable]
    assert sum(len(s.keys) for s in captured) == 1         # mnist.net's one dropout
    assert sum(len(s.calls) for s in captured) > 2 * len(eager)


def test_fetches_are_copies_and_a_restored_checkpoint_is_what_the_next_step_reads(tmp_path):
    session = steps("spiral.net", True, count=2)[2]
    path = session.save(tmp_path / "a.ckpt")
    loss_name = session.model.graph.loss
    feeds = {**synthetic_batch(netlang.compile("specs/spiral.net").graph, 6),
             LR_INPUT: np.float32(0.01)}
    first = session.run(loss_name, feeds, training=True, updates=True, to_host=False)
    kept = np.array(first, copy=True)
    session.run(loss_name, feeds, training=True, updates=True, to_host=False)
    assert np.array_equal(first, kept)                     # the next step left it alone
    session.restore(path)
    again = session.run(loss_name, feeds, training=True, updates=True)
    np.testing.assert_array_equal(again, kept)             # from the restored parameters


def test_a_capture_that_fails_says_so_once_and_runs_uncaptured(monkeypatch, capsys):
    class Refusing:
        def __init__(self, non_blocking=False):
            pass

        def begin_capture(self):
            raise NotImplementedError("cuBLAS in capture")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    import sys
    cupy = sys.modules["cupy"]
    monkeypatch.setattr(cupy, "cuda", types.SimpleNamespace(**{**vars(cupy.cuda),
                                                               "Stream": Refusing}))
    monkeypatch.setattr(capture, "_SAID", [])
    replayed = steps("spiral.net", True, count=2)[0]
    launched = steps("spiral.net", False, count=2)[0]
    assert replayed == launched
    err = capsys.readouterr().err
    assert err.count("note: the step runs without CUDA graphs (NotImplementedError: cuBLAS in "
                     "capture)") == 1


def test_an_array_of_the_state_held_before_a_step_keeps_its_values():
    """As the train loop keeps the state before each step (to re-run one that goes
    non-finite): the graphs write their own copies, never an array the store handed out."""
    session = steps("spiral.net", True, count=1)[2]
    held = dict(session.state.arrays)
    values = {k: np.array(v, copy=True) for k, v in held.items()}
    feeds = {**synthetic_batch(netlang.compile("specs/spiral.net").graph, 6),
             LR_INPUT: np.float32(0.01)}
    session.run(session.model.graph.loss, feeds, training=True, updates=True)
    for name, value in values.items():
        np.testing.assert_array_equal(held[name], value, err_msg=name)
    assert any(session.state.arrays[n] is not held[n] for n in held)
