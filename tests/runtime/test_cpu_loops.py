"""The Numba loops of runtime/cpu_loops.py against the reference kernels in ops/.

Every op: random shapes (and pooling geometries), float32 and float64, serial and threaded,
fresh and ``out=`` buffers; bit for bit where the module says so, else float tolerance; and
the cases each factory declines.  The factories compile their loops (cached on disk after).
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netlang
from netlang.ops.registry import get_op
from netlang.runtime import cpu_loops, jit, onednn

FLOATS = st.sampled_from([np.float32, np.float64])
EXAMPLES = settings(max_examples=30, deadline=None)


@contextlib.contextmanager
def threaded(parallel: bool):
    """Factories made inside choose the threaded loops (``parallel``) or the serial ones."""
    keep = cpu_loops.PARALLEL_MIN
    cpu_loops.PARALLEL_MIN = 0 if parallel else 1 << 62
    try:
        yield
    finally:
        cpu_loops.PARALLEL_MIN = keep


def loop_for(op: str, arrays, attrs, parallel: bool = False):
    with threaded(parallel):
        return cpu_loops.LOOPS[op]([a.shape for a in arrays], [a.dtype for a in arrays],
                                   attrs, None)


def reference(op: str, arrays, attrs):
    return np.asarray(get_op(op).kernel(np, *arrays, **attrs))


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint64 if a.dtype == np.float64 else np.uint32)


def check_run(op: str, arrays, attrs, parallel: bool, exact: bool, tol: float = 1e-5,
              atol: float = 1e-6) -> np.ndarray:
    """The loop's result equals the reference's (bit for bit, or within ``tol``), fresh and
    written into a given buffer, which comes back.  The factory compiled every loop the run
    calls (in a binding: when it ends), so its calls compile nothing."""
    run = loop_for(op, arrays, attrs, parallel)
    assert run is not None and run.writes_out
    compiled = jit.signatures_compiled()
    want, got = reference(op, arrays, attrs), run(*arrays)
    assert jit.signatures_compiled() == compiled
    assert got.shape == want.shape and got.dtype == want.dtype
    if exact:
        np.testing.assert_array_equal(bits(got), bits(want))
    else:
        np.testing.assert_allclose(got, want, rtol=tol, atol=atol)
    buffer = np.full(want.shape, np.nan, want.dtype)
    assert run(*arrays, out=buffer) is buffer
    np.testing.assert_array_equal(bits(buffer), bits(got))
    return got


def normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# -- pooling ----------------------------------------------------------------------------------------

POOLS = {"n": st.integers(1, 3), "hw": st.tuples(st.integers(1, 9), st.integers(1, 9)),
         "c": st.sampled_from([1, 3, 4, 16, 19]),
         "window": st.sampled_from([1, 2, 3, (2, 3)]),
         "stride": st.sampled_from([None, 1, 2, 3, (1, 2)]),
         "padding": st.sampled_from(["SAME", "VALID", ((0, 0), (0, 0)), ((1, 0), (0, 1))]),
         "dtype": FLOATS,
         "parallel": st.booleans(), "ties": st.booleans()}


def pool_input(n, hw, c, dtype, ties, seed=0):
    """Normal values, or small integers so that windows hold equal maxima (ties)."""
    rng = np.random.default_rng(seed)
    if ties:
        return rng.integers(-2, 3, (n, *hw, c)).astype(dtype), rng
    return normal(rng, (n, *hw, c), dtype), rng


@EXAMPLES
@given(**POOLS)
def test_pooling_is_the_reference_bit_for_bit(n, hw, c, window, stride, padding, dtype,
                                              parallel, ties):
    attrs = {"window": window, "stride": stride, "padding": padding}
    x, rng = pool_input(n, hw, c, dtype, ties)
    if loop_for("maxpool", [x], attrs) is None:   # the window larger than x, or than its pads
        with pytest.raises(netlang.NetlangError):
            reference("maxpool", [x], attrs)
        return
    y = check_run("maxpool", [x], attrs, parallel, exact=True)
    g = normal(rng, y.shape, dtype)
    check_run("maxpool_grad", [x, y, g], attrs, parallel, exact=True)
    check_run("avgpool", [x], attrs, parallel, exact=True)
    check_run("avgpool_grad", [g, x], attrs, parallel, exact=True)


def test_maxpool_grad_routes_by_the_y_it_is_given():
    """The reference compares the cells with the given y, not a recomputed maximum: a y
    matching no cell sends g to each window's last tap."""
    attrs = {"window": 2, "stride": None, "padding": "VALID"}
    x = np.arange(32, dtype=np.float32).reshape(1, 4, 4, 2)
    y = np.full((1, 2, 2, 2), -7.0, np.float32)
    y[0, 0, 0, 0] = x[0, 0, 0, 0]
    check_run("maxpool_grad", [x, y, np.ones_like(y)], attrs, False, exact=True)


@pytest.mark.parametrize("c", [1, 4, 16, 19, 32, 64])
@pytest.mark.parametrize("ties", [False, True])
def test_the_2x2_gradient_loop_is_the_reference_bit_for_bit_at_any_width(c, ties):
    """2x2 windows tiling the image run ``_maxpool_grad_2x2`` below 8 channels and from 16:
    the first tap equal to y gets g, NaN windows send it to the last tap."""
    attrs = {"window": 2, "stride": None, "padding": "VALID"}
    x, rng = pool_input(3, (6, 8), c, np.float32, ties)
    x[0, 0, 0, 0] = np.nan
    assert cpu_loops.gradient_2x2_channels(c)
    y = reference("maxpool", [x], attrs)
    g = normal(rng, y.shape, np.float32)
    for parallel in (False, True):
        check_run("maxpool_grad", [x, y, g], attrs, parallel, exact=True)


@pytest.mark.parametrize("c", [1, 3, 4, 7])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_few_channels_run_the_2x2_gradient_with_the_channel_count_a_constant(
        c, dtype, monkeypatch):
    """Below 8 channels the 2x2 gradient runs its own copy of the loop with c a constant
    (``grad_2x2_loop``): the general loop's bits, with relu and both sums too."""
    loop = cpu_loops.grad_2x2_loop(c)
    assert loop is not cpu_loops._maxpool_grad_2x2 and cpu_loops.grad_2x2_loop(c) is loop
    assert cpu_loops.grad_2x2_loop(16) is cpu_loops._maxpool_grad_2x2
    attrs = {"window": 2, "stride": None, "padding": "VALID"}
    x, rng = pool_input(5, (6, 8), c, dtype, True)
    x[0, 0, 0, 0] = x[3, 5, 7, c - 1] = np.nan
    y = reference("maxpool", [x], attrs)
    g, xb, mean = normal(rng, y.shape, dtype), normal(rng, x.shape, dtype), normal(rng, c, dtype)
    results = []
    for general in (False, True):
        if general:
            monkeypatch.setattr(cpu_loops, "grad_2x2_loop", lambda _c: cpu_loops._maxpool_grad_2x2)
        run = cpu_loops.maxpool_relu_grad(x.shape, np.dtype(dtype), True, True)
        results.append((run(x, y, g, xb, mean), [t.copy() for t in run.totals]))
    (dx, totals), (want, want_totals) = results
    np.testing.assert_array_equal(bits(dx), bits(want))
    for got, expected in zip(totals, want_totals):
        np.testing.assert_array_equal(got, expected)


def test_a_nan_in_a_window_makes_its_max_nan_as_in_the_reference():
    attrs = {"window": 2, "stride": None, "padding": "SAME"}
    x = np.random.default_rng(1).standard_normal((2, 5, 5, 3)).astype(np.float32)
    x[0, 1, 2, 1] = x[1, 4, 4, 0] = np.nan
    got = loop_for("maxpool", [x], attrs)(x)
    want = reference("maxpool", [x], attrs)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


def test_a_tie_of_signed_zeros_keeps_the_first_taps_zero():
    """+0 and -0 are equal maxima: the value matches the reference, and the sign is the
    first tap's (NumPy's own pick depends on its inner loop; module doc)."""
    attrs = {"window": 2, "stride": None, "padding": "VALID"}
    x = np.zeros((1, 2, 2, 20), np.float32)
    x[0, 0, 0, :10] = -0.0
    got = loop_for("maxpool", [x], attrs)(x)
    np.testing.assert_array_equal(got, reference("maxpool", [x], attrs))
    np.testing.assert_array_equal(np.signbit(got[0, 0, 0]), np.arange(20) < 10)


# -- reductions -------------------------------------------------------------------------------------

@EXAMPLES
@given(shape=st.lists(st.integers(2, 7), min_size=2, max_size=3), channels=st.integers(2, 9),
       first=st.integers(1, 2), keepdims=st.booleans(), dtype=FLOATS, parallel=st.booleans(),
       op=st.sampled_from(["sum", "mean"]))
def test_sums_over_middle_axes_match_the_reference(shape, channels, first, keepdims, dtype,
                                                   parallel, op):
    """Axes [first, last) of a 3- or 4-axis array (global average pooling is mean over 1, 2)."""
    shape = [*shape, channels]
    x = normal(np.random.default_rng(2), shape, dtype)
    first = min(first, len(shape) - 2)
    attrs = {"axis": tuple(range(first, len(shape) - 1)), "keepdims": keepdims}
    check_run(op, [x], attrs, parallel, exact=False, tol=1e-5, atol=1e-5)


@EXAMPLES
@given(lead=st.lists(st.integers(1, 9), min_size=1, max_size=3),
       rest=st.lists(st.integers(1, 9), min_size=0, max_size=2), keepdims=st.booleans(),
       dtype=FLOATS, op=st.sampled_from(["sum", "mean", "sum_to_like"]))
def test_sums_over_leading_axes_are_the_reference_bit_for_bit(lead, rest, keepdims, dtype, op):
    """The bias gradient's sum (a single channel's, and a sum of everything, too): the
    reference's BLAS product itself, into the planned buffer."""
    x = normal(np.random.default_rng(5), [*lead, *rest], dtype)
    if op == "sum_to_like":
        arrays, attrs = [x, np.zeros(rest, dtype)], {}
    else:
        arrays, attrs = [x], {"axis": tuple(range(len(lead))), "keepdims": keepdims}
    check_run(op, arrays, attrs, False, exact=True)


@EXAMPLES
@given(rows=st.integers(1, 3000), c=st.sampled_from([1, 3, 16, 32, 100]), dtype=FLOATS,
       op=st.sampled_from(["batch_variance", "batchnorm_grad_gamma"]))
def test_batch_reductions_match_the_reference_whatever_the_threads(rows, c, dtype, op):
    """Chunked sums: close to the reference (BLAS sums in another order), and the same bits
    serial, threaded, on one thread or two."""
    rng = np.random.default_rng(3)
    x = normal(rng, (rows, c), dtype)
    mean, var = x.mean(0).astype(dtype), x.var(0).astype(dtype)
    arrays = [x, mean] if op == "batch_variance" else [normal(rng, x.shape, dtype), x, mean,
                                                       var]
    attrs = {"axis": -1} if op == "batch_variance" else {"axis": -1, "epsilon": 1e-3}
    tol = 1e-4 if dtype == np.float32 else 1e-10
    first = check_run(op, arrays, attrs, False, exact=False, tol=tol, atol=tol)
    keep = jit.threads()
    try:
        for count in (1, 2):
            jit.set_threads(count)
            again = loop_for(op, arrays, attrs, parallel=True)(*arrays)
            np.testing.assert_array_equal(bits(again), bits(first))
    finally:
        jit.set_threads(keep)


# -- batchnorm's elementwise ops ----------------------------------------------------------------------

@EXAMPLES
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), dtype=FLOATS,
       parallel=st.booleans(), epsilon=st.sampled_from([1e-3, 1e-5, 0.1]))
def test_batchnorm_elementwise_ops_are_the_reference_bit_for_bit(shape, dtype, parallel,
                                                                  epsilon):
    rng = np.random.default_rng(4)
    x, g = normal(rng, shape, dtype), normal(rng, shape, dtype)
    c = shape[-1]
    mean, gamma, beta = (normal(rng, c, dtype) for _ in range(3))
    var = np.abs(normal(rng, c, dtype))
    attrs = {"axis": len(shape) - 1, "epsilon": epsilon}
    check_run("batchnorm_apply", [x, mean, var, gamma, beta], attrs, parallel, exact=True)
    check_run("batchnorm_grad_x", [g, var, gamma], attrs, parallel, exact=True)
    check_run("batch_variance_grad", [gamma, x, mean], {"axis": -1}, parallel, exact=True)


# -- softmax cross-entropy -----------------------------------------------------------------------------

@EXAMPLES
@given(rows=st.lists(st.integers(1, 6), min_size=1, max_size=2),
       classes=st.integers(1, 12), dtype=FLOATS, ids=st.sampled_from([np.int32, np.int64,
                                                                      None]),
       scale=st.sampled_from([1.0, 30.0]))
def test_softmax_cross_entropy_and_its_gradient_match_the_reference(rows, classes, dtype,
                                                                     ids, scale):
    rng = np.random.default_rng(5)
    logits = normal(rng, (*rows, classes), dtype) * dtype(scale)
    if ids is None:                                # probability rows (soft labels)
        labels = rng.random((*rows, classes)).astype(dtype)
    else:
        labels = rng.integers(0, classes, rows).astype(ids)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    check_run("softmax_cross_entropy", [logits, labels], {}, False, False, tol, tol)
    g = normal(rng, rows, dtype)
    check_run("softmax_cross_entropy_grad", [g, logits, labels], {}, False, False, tol, tol)


@EXAMPLES
@given(rows=st.integers(1, 70), classes=st.integers(1, 12), dtype=FLOATS,
       scale=st.sampled_from([1.0, 30.0]), seed=st.integers(0, 2**16))
def test_the_gradient_takes_the_forwards_row_statistics_only_for_the_same_logits(
        rows, classes, dtype, scale, seed):
    """Within a run the cross-entropy's gradient reuses each row's max and log-sum-exp
    that the forward computed for the very same logits array (``KernelState.xent_rows``):
    the same bits as the gradient alone.  Other logits of the same shape, or a new run,
    are computed afresh."""
    from netlang.runtime.cpu_kernels import KernelState

    rng = np.random.default_rng(seed)
    logits = normal(rng, (rows, classes), dtype) * dtype(scale)
    other = normal(rng, (rows, classes), dtype)
    labels = rng.integers(0, classes, rows).astype(np.int32)
    g = normal(rng, (rows,), dtype)
    shapes, attrs = ([logits.shape, labels.shape], [g.shape, logits.shape, labels.shape]), {}
    alone = cpu_loops.LOOPS["softmax_cross_entropy_grad"](
        shapes[1], [g.dtype, logits.dtype, labels.dtype], attrs, None)
    state = KernelState()
    forward = cpu_loops.LOOPS["softmax_cross_entropy"](
        shapes[0], [logits.dtype, labels.dtype], attrs, state)
    grad = cpu_loops.LOOPS["softmax_cross_entropy_grad"](
        shapes[1], [g.dtype, logits.dtype, labels.dtype], attrs, state)
    for z in (logits, other):
        want = alone(g, z, labels)
        forward(logits, labels)
        assert state.xent_rows[0] is logits
        np.testing.assert_array_equal(bits(grad(g, z, labels)), bits(want))
        state.new_run()
        assert state.xent_rows is None
        np.testing.assert_array_equal(bits(grad(g, z, labels)), bits(want))


def test_a_class_id_out_of_range_is_the_references_error():
    logits = np.zeros((3, 4), np.float32)
    labels = np.array([0, 4, 1], np.int32)
    with pytest.raises(ValueError, match="label 4 is out of range for 4 classes"):
        loop_for("softmax_cross_entropy", [logits, labels], {})(logits, labels)
    g = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="label 4 is out of range"):
        loop_for("softmax_cross_entropy_grad", [g, logits, labels], {})(g, logits, labels)


# -- what the factories decline -----------------------------------------------------------------------

F32, I32 = np.dtype(np.float32), np.dtype(np.int32)
POOL = {"window": 2, "stride": None, "padding": "VALID"}
NORM = {"axis": 3, "epsilon": 1e-3}
DECLINED = [
    ("maxpool", [(2, 4, 4, 3)], [I32], POOL),                           # integers
    ("maxpool", [(2, 4, 4, 3)], [np.dtype(np.float16)], POOL),
    ("maxpool", [(4, 4, 3)], [F32], POOL),                              # not an image
    ("maxpool", [(0, 4, 4, 3)], [F32], POOL),                           # empty
    ("maxpool", [(2, 4, 4, 3)], [F32], {**POOL, "padding": "FULL"}),    # the reference raises
    ("maxpool", [(2, 1, 1, 3)], [F32], POOL),                           # window > image
    ("maxpool_grad", [(2, 4, 4, 3), (2, 2, 2, 3), (2, 2, 3, 3)], [F32] * 3, POOL),
    ("avgpool_grad", [(2, 3, 3, 3), (2, 4, 4, 3)], [F32] * 2, POOL),
    ("sum", [(2, 3, 4)], [F32], {"axis": (0, 2), "keepdims": False}),   # not one block
    ("mean", [(2, 3, 4)], [I32], {"axis": 1, "keepdims": False}),
    ("sum", [(8, 3)], [F32], {"axis": 1, "keepdims": False}),           # trailing: NumPy
    ("sum_to_like", [(8, 3), (8, 3)], [F32] * 2, {}),                    # nothing to sum
    ("batchnorm_apply", [(2, 3, 3, 4)] + [(4,)] * 4, [F32] * 5, {**NORM, "axis": 1}),
    ("batchnorm_apply", [(2, 3, 3, 4)] + [(3,)] * 4, [F32] * 5, NORM),
    ("batch_variance", [(2, 3, 3, 4), (4,)], [F32, np.dtype(np.float64)], NORM),
    ("batchnorm_grad_x", [(2, 3, 3, 4), (4,), (4,)], [F32] * 3, {"axis": 3, "epsilon": "x"}),
    ("softmax_cross_entropy", [(4, 5), (5,)], [F32, I32], {}),           # labels per class?
    ("softmax_cross_entropy", [(4, 5), (4, 5)], [F32, np.dtype(np.float64)], {}),
    ("softmax_cross_entropy", [(4, 0), (4,)], [F32, I32], {}),
    ("softmax_cross_entropy_grad", [(3,), (4, 5), (4,)], [F32, F32, I32], {}),
]


@pytest.mark.parametrize("op, shapes, dtypes, attrs", DECLINED)
def test_factories_decline_what_they_do_not_loop_over(op, shapes, dtypes, attrs):
    assert cpu_loops.LOOPS[op](shapes, dtypes, attrs, None) is None


def test_registered_loops_defer_to_onednn_where_it_was_faster():
    """float32 pooling over few channels goes to oneDNN's primitives when the library is
    there (measured faster, see the module doc), but for 2x2 windows tiling the image;
    float64, which oneDNN does not take, and many channels to the loops; without oneDNN the
    loops take everything."""
    table = cpu_loops.loop_factories(library=True)
    (maxpool,), (maxpool_grad,), (avgpool,) = (table["maxpool"], table["maxpool_grad"],
                                               table["avgpool"])
    few, many, tiled = [(2, 5, 5, 3)], [(2, 5, 5, 32)], [(2, 4, 4, 3)]
    assert maxpool(few, [np.dtype(np.float64)], POOL, None) is not None
    assert maxpool(few, [F32], POOL, None) is None
    assert maxpool(many, [F32], POOL, None) is not None
    assert maxpool(tiled, [F32], POOL, None) is not None
    assert maxpool_grad(tiled + [(2, 2, 2, 3)] * 2, [F32] * 3, POOL, None) is not None
    assert maxpool_grad(few + [(2, 2, 2, 3)] * 2, [F32] * 3, POOL, None) is None
    for c, loop in [(4, True), (8, False), (12, False), (16, True), (64, True)]:
        shapes = [(2, 256, 256, c), (2, 128, 128, c), (2, 128, 128, c)]   # large images
        assert (maxpool_grad(shapes, [F32] * 3, POOL, None) is not None) == loop, c
    assert avgpool(many, [F32], POOL, None) is None
    (alone,) = cpu_loops.loop_factories(library=False)["maxpool"]
    assert alone(few, [F32], POOL, None) is not None
    default = cpu_loops.loop_factories()["maxpool"][0](few, [F32], POOL, None)
    assert (default is None) == onednn.available()


# -- through the executor ------------------------------------------------------------------------------

SPEC = """network n {
  input image: f32[N, 8, 8, 2]
  input label: i32[N]
  h = image |> conv2d(4, kernel=3, padding=same) |> batchnorm |> relu |> maxpool(2)
    |> batchnorm |> global_avgpool
  logits = dense(h, 3)
  loss xent = mean(softmax_cross_entropy(logits, label))
}"""


def test_a_training_step_matches_the_reference_kernels_and_repeats_bit_for_bit():
    model = netlang.compile(SPEC)
    rng = np.random.default_rng(6)
    feeds = {"image": rng.standard_normal((5, 8, 8, 2)).astype(np.float32),
             "label": rng.integers(0, 3, 5).astype(np.int32)}
    names = ["xent", *(f"grad/{p}" for p in model.graph.params)]
    runs = [model.session(kernels=k).run(names, feeds, training=True)
            for k in ("default", "default", "numpy")]
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a, b)
    for got, want in zip(runs[0], runs[2]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@EXAMPLES
@given(n=st.integers(1, 3), hw=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       c=st.sampled_from([1, 4, 16, 19, 32]), ties=st.booleans(), dtype=FLOATS)
def test_the_pooled_relu_gradient_is_the_two_calls_bit_for_bit(n, hw, c, ties, dtype):
    """``maxpool_relu_grad`` (runtime/pool_gradients.py): relu_grad(maxpool_grad(x, y, g), x)
    in one loop, bit for bit the reference's two calls (zeros, ties and a NaN window
    included), into a given buffer too; its sums, of the result and of the result times
    (xb - mean) in the dtype (batchnorm's gamma gradient), are those sums in float64, the
    same bits on one thread or two."""
    attrs = {"window": 2, "stride": None, "padding": "VALID"}
    x, rng = pool_input(n, (2 * hw[0], 2 * hw[1]), c, dtype, ties)
    x = np.maximum(x, 0)             # a relu's output: many zeros, ties of zeros
    x[0, 0, 0, 0] = np.nan
    y = reference("maxpool", [x], attrs)
    g = normal(rng, y.shape, dtype)
    xb, mean = normal(rng, x.shape, dtype), normal(rng, (c,), dtype)
    want = reference("relu_grad", [reference("maxpool_grad", [x, y, g], attrs), x], {})
    run = cpu_loops.maxpool_relu_grad(x.shape, np.dtype(dtype), sums=True, centered=True)
    compiled = jit.signatures_compiled()
    got = run(x, y, g, xb, mean)
    assert jit.signatures_compiled() == compiled and got.dtype == want.dtype
    np.testing.assert_array_equal(bits(got), bits(want))
    exact = [want.astype(np.float64).sum(axis=(0, 1, 2)),
             (want * (xb - mean)).astype(np.float64).sum(axis=(0, 1, 2))]
    for total, sums in zip(run.totals, exact):
        np.testing.assert_allclose(total, sums, rtol=1e-12, atol=1e-12)
    totals = [t.copy() for t in run.totals]
    buffer = np.full(x.shape, np.nan, dtype)
    keep = jit.threads()
    try:
        jit.set_threads(1)
        assert run(x, y, g, xb, mean, out=buffer) is buffer
    finally:
        jit.set_threads(keep)
    np.testing.assert_array_equal(bits(buffer), bits(want))
    for total, before in zip(run.totals, totals):
        np.testing.assert_array_equal(bits(total), bits(before))
