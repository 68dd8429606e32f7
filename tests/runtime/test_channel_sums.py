"""Per-channel sums taken in the generated loop that writes their input
(runtime/channel_sums.py, ``generated.with_channel_sums``), against the reference kernels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netlang
from netlang.model import Model
from netlang.ops.fused import fused_kernel
from netlang.ops.registry import get_op
from netlang.runtime import channel_sums, executor, generated
from netlang.train.optimizers import make_optimizer
from netlang.train.step import LR_INPUT, build_train_graph

SPECS = Path(__file__).resolve().parents[2] / "specs"
EXAMPLES = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
# A batchnorm's backward as the fusion pass leaves it: relu's gradient alone, and the
# gradient of x as one group over [C] vectors.
GROUPS = {
    "relu_grad": ((("relu_grad", ("x0", "x1"), ()),), ["full", "full"]),
    "grad_x": ((("mul", ("x0", "x1"), ()), ("sub", ("x2", "x3"), ()),
                ("mul", ("t1", "x4"), ()), ("add", ("t0", "t2"), ()),
                ("add", ("t3", "x5"), ())), ["full", "vector", "full", "vector", "vector",
                                             "vector"]),
    "add": ((("add", ("x0", "x1"), ()),), ["full", "full"]),
}


def arrays_for(kinds, shape, dtype, rng):
    return [np.asarray(rng.standard_normal(shape if k == "full" else shape[-1:]), dtype)
            for k in kinds]


@EXAMPLES
@given(group=st.sampled_from(sorted(GROUPS)),
       shape=st.lists(st.integers(1, 9), min_size=2, max_size=4).map(tuple),
       dtype=st.sampled_from([np.float32, np.float64]),
       sums=st.lists(st.sampled_from(["sum", "centered", "squares"]), min_size=1, max_size=3),
       seed=st.integers(0, 2**16))
def test_a_kernel_with_sums_writes_the_same_output_and_sums_it_per_channel(
        group, shape, dtype, sums, seed):
    expr, kinds = GROUPS[group]
    rng = np.random.default_rng(seed)
    arrays = arrays_for(kinds, shape, dtype, rng)
    run = generated.generated_kernel(expr, [a.shape for a in arrays],
                                     [a.dtype for a in arrays])
    sums_run = generated.with_channel_sums(run, sums)
    assert sums_run is not None
    extras = []
    for how in sums:
        if how == "centered":
            extras += arrays_for(["full", "vector"], shape, dtype, rng)
    out = np.full(shape, 7, dtype)
    assert sums_run(*arrays, *extras, out=out) is out
    want = np.asarray(fused_kernel(np, *arrays, expr=expr))
    np.testing.assert_array_equal(out, want)          # the same steps: the same bits
    leading = tuple(range(len(shape) - 1))
    pairs = iter(zip(extras[::2], extras[1::2]))
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12}
    assert len(sums_run.totals) == len(sums)
    for total, how in zip(sums_run.totals, sums):
        term = want.astype(np.float64)
        if how == "centered":
            x, mean = next(pairs)
            term = (want * (x - mean).astype(dtype)).astype(np.float64)
        elif how == "squares":
            term = term * term
        assert total.shape == shape[-1:] and total.dtype == np.float64
        np.testing.assert_allclose(total, term.sum(axis=leading), **tolerance)


@EXAMPLES
@given(shape=st.lists(st.integers(1, 40), min_size=2, max_size=4).map(tuple),
       dtype=st.sampled_from([np.float32, np.float64]),
       offset=st.floats(-100, 100), seed=st.integers(0, 2**16))
def test_moments_are_the_sums_and_squares_per_channel_and_finish_a_batch_variance(
        shape, dtype, offset, seed):
    """One pass over x gives its float64 sums and sums of squares per channel; the variance
    finished from them about x's mean matches the reference's batch_variance."""
    from netlang.runtime.cpu_loops import channel_moments

    x = (np.random.default_rng(seed).standard_normal(shape) + offset).astype(dtype)
    run = channel_moments(shape, dtype)
    wide = x.astype(np.float64).reshape(-1, shape[-1])
    sums, squares = run(x)
    np.testing.assert_allclose(sums, wide.sum(axis=0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(squares, (wide * wide).sum(axis=0), rtol=1e-12)
    again = run(x)
    assert all(np.array_equal(a, b) for a, b in zip(again, (sums, squares)))
    n = wide.shape[0]
    mean = (sums / n).astype(dtype)
    variance = np.maximum(squares / n - 2 * mean * (sums / n) + mean.astype(np.float64) ** 2,
                          0)
    want = get_op("batch_variance").kernel(np, x, mean, axis=-1)
    tolerance = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(variance, want, rtol=tolerance,
                               atol=tolerance * (1 + offset * offset))


@pytest.mark.parametrize("shape", [(3, 5, 130), (2, 200), (7, 3, 129), (5, 67),
                                   (20001, 16), (2000, 130), (50000, 3), (9000, 67)])
def test_moments_of_wide_rows_and_many_chunks_are_the_same_bits_on_one_thread_or_two(shape):
    """From 65 channels the moments' lanes hold one row at a time; a chunk's last rows fill
    only part of a group; the chunks sum apart and then in order, so running them on one
    thread or on two gives the same bits (close to NumPy's float64 sums)."""
    from netlang.runtime import cpu_loops

    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32) + 3
    rows, width = int(np.prod(shape[:-1])), shape[-1]
    _, per_chunk, chunks = cpu_loops._chunking(rows, width)
    results = []
    for parallel in (False, True):
        sums, squares = np.zeros((chunks, width)), np.zeros((chunks, width))
        cpu_loops._moment_chunks(x.reshape(rows, width), per_chunk, chunks, sums, squares,
                                 parallel)
        results.append((sums.sum(axis=0), squares.sum(axis=0)))
    (sums, squares), (sums2, squares2) = results
    assert np.array_equal(sums, sums2) and np.array_equal(squares, squares2)
    wide = x.astype(np.float64).reshape(rows, width)
    np.testing.assert_allclose(sums, wide.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(squares, (wide * wide).sum(axis=0), rtol=1e-12)


@EXAMPLES
@given(parts=st.integers(1, 70), channels=st.integers(1, 9), tiles=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_the_blocks_sums_fold_per_channel_in_a_fixed_order(parts, channels, tiles, seed):
    """``fold_parts`` adds each accumulator column over the blocks of rows in order, then
    the channel tiles in order: the same bits as that order in Python, close to NumPy's."""
    acc = np.random.default_rng(seed).standard_normal((parts, channels * tiles)) * 1e3
    total = np.full(channels, np.nan)
    generated.fold_parts(acc, channels, total)
    want = []
    for c in range(channels):
        value = 0.0
        for t in range(tiles):
            column = 0.0
            for p in range(parts):
                column += float(acc[p, t * channels + c])
            value += column
        want.append(value)
    assert total.tolist() == want
    np.testing.assert_allclose(total, acc.sum(axis=0).reshape(-1, channels).sum(axis=0),
                               rtol=1e-12, atol=1e-9)


def test_what_it_does_not_take():
    assert generated.with_channel_sums(lambda x: x, ["sum"]) is None     # not generated
    expr, _ = GROUPS["add"]
    empty = (0, 16)
    run = generated.generated_kernel(expr, [empty, empty], [np.float32] * 2)
    assert generated.with_channel_sums(run, ["sum"]) is None


@pytest.mark.parametrize("shape", [(3, 5), (64, 28, 28, 16), (1000, 7)])
def test_the_sums_are_the_same_bits_on_one_thread_or_two(shape, monkeypatch):
    expr, _ = GROUPS["add"]
    rng = np.random.default_rng(7)
    a, b = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    results = []
    for serial_below in (1 << 62, 1):       # one thread, then the threads from 1 element
        monkeypatch.setattr(generated, "SERIAL_BELOW", serial_below)
        run = generated.with_channel_sums(
            generated.generated_kernel(expr, [shape, shape], [np.float32] * 2), ["sum"])
        out = run(a, b)
        results.append((out, run.totals[0]))
    np.testing.assert_array_equal(results[0][0], a + b)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_allclose(results[0][1], (a.astype(np.float64) + b).reshape(-1, shape[-1])
                               .sum(axis=0), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("group, sums", [("relu_grad", ["sum", "centered"]),
                                         ("grad_x", ["sum"]), ("add", ["sum", "squares"])])
def test_sums_taken_without_storing_are_the_same_bits(group, sums):
    """``store=False``: the loop leaves ``out`` as it was and takes the sums the storing
    loop takes, bit for bit (a gradient only sums read: passes/relu_mask.py)."""
    expr, kinds = GROUPS[group]
    rng = np.random.default_rng(11)
    shape = (6, 5, 5, 8)
    arrays = arrays_for(kinds, shape, np.float32, rng)
    extras = arrays_for(["full", "vector"], shape, np.float32, rng) if "centered" in sums else []
    run = generated.generated_kernel(expr, [a.shape for a in arrays], [a.dtype for a in arrays])
    totals = []
    for store in (True, False):
        sums_run = generated.with_channel_sums(run, sums, store)
        out = np.full(shape, 7, np.float32)
        assert sums_run(*arrays, *extras, out=out) is out
        totals.append([t.copy() for t in sums_run.totals])
    assert (out == 7).all()
    for stored, not_stored in zip(*totals):
        np.testing.assert_array_equal(stored, not_stored)


def train_step(spec: str, fuse: bool, monkeypatch) -> tuple[list, dict, int]:
    """(losses, state) after three SGD steps of ``spec`` on a fixed batch (each parameter
    moves by its gradient: Adam would turn rounding in a near-zero gradient into a full
    step), and how many reductions the kernels took."""
    moved = []
    real = channel_sums.fuse_channel_sums

    def counted(*args, **kwargs):
        moved.append(real(*args, **kwargs) if fuse else 0)
        return moved[-1]
    monkeypatch.setattr(executor, "fuse_channel_sums", counted)
    model = netlang.compile(SPECS / spec)
    train = build_train_graph(model, make_optimizer("sgd", {"lr": 0.1}))
    session = Model(train).session("cpu", seed=0)
    rng = np.random.default_rng(0)
    feeds = {"image": rng.standard_normal((8, 28, 28, 1)).astype(np.float32),
             "label": rng.integers(0, 10, 8).astype(np.int32), LR_INPUT: np.float32(0.1)}
    losses = [float(session.run(model.graph.loss, feeds, training=True, updates=True))
              for _ in range(3)]
    return losses, {k: v.copy() for k, v in session.state.arrays.items()}, sum(moved)


def test_a_residual_train_step_takes_every_batchnorm_and_bias_sum_and_stays_in_tolerance(
        monkeypatch):
    """residual.net: 7 batchnorms (beta's and gamma's gradients, and the batch variances:
    each taken with its mean in one pass), 3 skip adds whose batch mean reads them, the conv
    biases' gradients: the step trains as it did without."""
    losses, state, moved = train_step("residual.net", True, monkeypatch)
    plain_losses, plain_state, none = train_step("residual.net", False, monkeypatch)
    assert none == 0 and moved >= 7 * 3 + 7
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-5)
    for name in plain_state:
        np.testing.assert_allclose(state[name], plain_state[name], rtol=1e-4, atol=1e-6,
                                   err_msg=name)
    again_losses, again, _ = train_step("residual.net", True, monkeypatch)
    assert again_losses == losses                       # the same bits on every run
    for name in state:
        np.testing.assert_array_equal(again[name], state[name], err_msg=name)


@pytest.mark.parametrize("op, attrs, like, expected", [
    ("sum", {"axis": (0, 1, 2), "keepdims": False}, None, channel_sums.ChannelSum()),
    ("mean", {"axis": (0, 1, 2), "keepdims": True}, None,
     channel_sums.ChannelSum(divisor=2 * 3 * 4)),
    ("batch_variance", {"axis": -1}, (5,), channel_sums.ChannelSum("moments", 2 * 3 * 4)),
    ("batch_variance", {"axis": 1}, (3,), None),                 # not the last axis
    ("sum", {"axis": (1, 2), "keepdims": False}, None, None),     # not every leading axis
    ("sum_to_like", {}, (5,), channel_sums.ChannelSum()),
    ("sum_to_like", {}, (1, 1, 1, 5), channel_sums.ChannelSum()),
    ("sum_to_like", {}, (4, 5), None),
])
def test_which_reductions_are_per_channel_sums(op, attrs, like, expected):
    source, shape = 10, ((2, 3, 4, 5), np.dtype(np.float32))
    types = {10: shape, 11: (like, np.dtype(np.float32)), 12: ((5,), np.dtype(np.float32))}
    args = (10, 11) if op in ("sum_to_like", "batch_variance") else (10,)

    class Call:
        opdef, out = get_op(op), 12
    Call.args, Call.attrs = args, attrs
    assert channel_sums.channel_sum(Call, source, shape, types.get) == expected
