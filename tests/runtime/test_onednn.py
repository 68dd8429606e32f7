"""oneDNN kernels against the NumPy reference kernels, on random geometries (hypothesis)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from netlang.errors import ShapeError
from netlang.ops.registry import get_op
from netlang.runtime import onednn
from netlang.runtime.onednn_kernels import (
    FEW_INPUT_CHANNELS,
    MATMUL_MIN_MACS,
    batchnorm_grad_gamma,
    conv2d_bias_relu,
    conv_backward_data,
    conv_forward,
    conv_geometry,
    matmul,
    onednn_kernels,
)

needs_onednn = pytest.mark.skipif(not onednn.available(), reason=onednn.unavailable_reason())
FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference(op: str, *arrays, **attrs) -> np.ndarray:
    return get_op(op).kernel(np, *arrays, **attrs)


def small_matmul(shapes, dtypes, attrs):
    """The matmul factory without its size threshold, so small shapes are compared too."""
    return matmul(shapes, dtypes, attrs, min_macs=0)


def factory_for(op: str, arrays, attrs):
    table = {**onednn_kernels(), "batchnorm_grad_gamma": batchnorm_grad_gamma,  # unregistered
             "small_matmul": small_matmul}
    return table[op]([a.shape for a in arrays], [a.dtype for a in arrays], attrs)


def check_parity(op: str, arrays, attrs, taps: int = 1, must_take: bool = False):
    """oneDNN == reference within float32 rounding of a ``taps``-term sum, and bitwise
    equal to itself when run twice.  A case the factory declines (an implementation it does
    not trust, see ``onednn_kernels.trusted``) passes unless ``must_take``."""
    run = factory_for(op, arrays, attrs)
    if run is None and not must_take:
        return
    assert run is not None, f"{op} {attrs} was not taken"
    want = reference(op.removeprefix("small_"), *arrays, **attrs)
    got = run(*arrays)
    assert got.shape == want.shape and got.dtype == np.float32
    scale = float(np.max(np.abs(want), initial=1.0))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * taps * scale)
    assert np.array_equal(run(*arrays), got), f"{op} is not deterministic"


# SAME, VALID, or explicit ((top, bottom), (left, right)) as ONNX and PyTorch give it
PADDINGS = st.one_of(st.sampled_from(["SAME", "VALID"]),
                     st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                               st.tuples(st.integers(0, 2), st.integers(0, 2))))


def window_fits(size: int, span: int, padding, axis: int) -> bool:
    if padding == "SAME":
        return True
    return size + (0 if padding == "VALID" else sum(padding[axis])) >= span


conv_cases = st.fixed_dictionaries({
    "n": st.integers(1, 3), "h": st.integers(1, 11), "w": st.integers(1, 11),
    "cin": st.sampled_from([1, 3, 8, 16]), "cout": st.sampled_from([1, 4, 8, 17]),
    "kh": st.integers(1, 4), "kw": st.integers(1, 4),
    "stride": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "dilation": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "padding": PADDINGS, "seed": st.integers(0, 2 ** 16)})


def conv_arrays(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["cin"]), np.float32)
    w = rng.standard_normal((case["kh"], case["kw"], case["cin"], case["cout"]), np.float32)
    attrs = {k: case[k] for k in ("stride", "padding", "dilation")}
    assume(window_fits(case["h"], (case["kh"] - 1) * case["dilation"][0] + 1, case["padding"], 0))
    assume(window_fits(case["w"], (case["kw"] - 1) * case["dilation"][1] + 1, case["padding"], 1))
    y = reference("conv2d", x, w, **attrs)
    g = rng.standard_normal(y.shape, np.float32)
    return x, w, g, attrs


@needs_onednn
@FAST
@given(conv_cases)
def test_conv2d_and_its_gradients_match_the_reference(case):
    x, w, g, attrs = conv_arrays(case)
    taps = w.shape[0] * w.shape[1] * w.shape[2]
    check_parity("conv2d", [x, w], attrs, taps)
    if w.shape[2] < FEW_INPUT_CHANNELS:       # the reference is faster there: declined
        assert factory_for("conv2d_backprop_input", [g, w, x], attrs) is None
    else:
        check_parity("conv2d_backprop_input", [g, w, x], attrs, taps * w.shape[3])
    check_parity("conv2d_backprop_filter", [x, g, w], attrs, g.size)


@needs_onednn
@FAST
@given(conv_cases)
def test_conv2d_transpose_matches_the_reference(case):
    assume(isinstance(case["padding"], str))       # conv2d_transpose takes SAME or VALID
    x, w, _, attrs = conv_arrays(case)
    wt = w.transpose(0, 1, 3, 2).copy()          # [kh, kw, cout, cin] of the transpose
    xt = np.random.default_rng(case["seed"]).standard_normal(
        (*x.shape[:3], wt.shape[3]), np.float32)
    if wt.shape[2] < FEW_INPUT_CHANNELS:
        assert factory_for("conv2d_transpose", [xt, wt], attrs) is None
    else:
        check_parity("conv2d_transpose", [xt, wt], attrs, wt.size)


pool_cases = st.fixed_dictionaries({
    "n": st.integers(1, 3), "h": st.integers(1, 10), "w": st.integers(1, 10),
    "c": st.sampled_from([1, 3, 16, 33]),
    "window": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "stride": st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
    "dilation": st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 2))),
    "padding": PADDINGS, "seed": st.integers(0, 2 ** 16),
    "ties": st.booleans()})


@needs_onednn
@FAST
@given(pool_cases)
def test_pooling_and_its_gradients_match_the_reference(case):
    """With ``ties`` the image holds a few small integers, so most windows have several
    maxima: oneDNN must route the gradient to the first, in row-major tap order."""
    rng = np.random.default_rng(case["seed"])
    shape = (case["n"], case["h"], case["w"], case["c"])
    x = (rng.integers(-2, 2, shape).astype(np.float32) if case["ties"]
         else rng.standard_normal(shape, np.float32))
    attrs = {k: case[k] for k in ("window", "stride", "padding", "dilation")}
    spans = [(k - 1) * d + 1 for k, d in zip(case["window"], case["dilation"] or (1, 1))]
    assume(window_fits(case["h"], spans[0], case["padding"], 0))
    assume(window_fits(case["w"], spans[1], case["padding"], 1))
    if not isinstance(case["padding"], str):       # pools pad less than the window
        assume(all(p < k for side, k in zip(case["padding"], spans) for p in side))
    try:
        y = reference("maxpool", x, **attrs)
    except ShapeError:                             # a dilated window all in the padding
        assume(False)
    g = rng.standard_normal(y.shape, np.float32)
    check_parity("maxpool", [x], attrs)
    check_parity("maxpool_grad", [x, y, g], attrs, 9)
    check_parity("avgpool", [x], attrs, 9)
    check_parity("avgpool_grad", [g, x], attrs, 9)


@needs_onednn
@pytest.mark.parametrize("shape", [(4, 5, 6, 8), (30, 17), (2, 3, 4, 5, 3)])
def test_batchnorm_apply_and_grad_gamma_match_the_reference(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, np.float32) * 3 + 1
    g = rng.standard_normal(shape, np.float32)
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axes), x.var(axes)
    gamma, beta = (rng.standard_normal(shape[-1], np.float32) for _ in range(2))
    attrs = {"axis": -1, "epsilon": 1e-3}
    check_parity("batchnorm_apply", [x, mean, var, gamma, beta], attrs, 4)
    check_parity("batchnorm_grad_gamma", [g, x, mean, var], attrs, x.size // shape[-1])


@needs_onednn
@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((4, 28, 28, 1), (5, 5, 1, 32), {"padding": "VALID"}),
    ((4, 12, 12, 32), (5, 5, 32, 64), {"padding": "VALID"}),
    ((4, 14, 14, 4), (3, 3, 4, 8), {"padding": "SAME"}),
    ((4, 14, 14, 16), (1, 1, 16, 32), {"padding": "VALID"}),
    ((4, 9, 9, 8), (3, 3, 8, 8), {"padding": "SAME", "stride": 2}),
])
def test_the_layers_of_the_seed_specs_are_taken(x_shape, w_shape, attrs):
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal(x_shape, np.float32), rng.standard_normal(w_shape, np.float32)
    g = rng.standard_normal(reference("conv2d", x, w, **attrs).shape, np.float32)
    taps = w.size // w.shape[3]
    check_parity("conv2d", [x, w], attrs, taps, must_take=True)
    check_parity("conv2d_backprop_filter", [x, g, w], attrs, g.size, must_take=True)
    if x_shape[3] >= FEW_INPUT_CHANNELS:
        check_parity("conv2d_backprop_input", [g, w, x], attrs, w.size, must_take=True)
    y = reference("maxpool", x, window=2, stride=None, padding="SAME")
    pool = {"window": 2, "stride": None, "padding": "SAME"}
    check_parity("maxpool_grad", [x, y, rng.standard_normal(y.shape, np.float32)], pool, 4,
                 must_take=True)
    check_parity("avgpool_grad", [y, x], pool, 4, must_take=True)


@needs_onednn
@pytest.mark.parametrize("cin, cout, direct", [(8, 1, True), (8, 8, True), (4, 8, True),
                                               (12, 12, True), (16, 16, False), (1, 8, True)])
def test_few_channel_convolutions_take_onednns_direct_kernel(cin, cout, direct):
    """Below 16 channels on both sides a convolution runs oneDNN's direct jit kernel where
    its first choice is a brgconv one (``direct_if_few_channels``); from 16 on, its first
    choice.  Either way the reference's numbers, the same bits run to run."""
    attrs = {"padding": "SAME"}
    geo = conv_geometry((4, 12, 12, cin), (3, 3, cin, cout), attrs)
    forward = conv_forward(geo, bias=True)
    data = conv_backward_data(geo)
    for run in (forward, data):
        if run is not None:
            assert ("brg" not in run.impl()) == direct
    first = geo.forward_pd(onednn.FORWARD_INFERENCE)
    names = [first.impl()]
    while first.next_impl():
        names.append(first.impl())
    assert len(names) == len(set(names)) > 1 and not first.next_impl()
    rng = np.random.default_rng(cin * cout)
    x = rng.standard_normal((4, 12, 12, cin), np.float32)
    w = rng.standard_normal((3, 3, cin, cout), np.float32)
    g = rng.standard_normal((4, 12, 12, cout), np.float32)
    taps = w.size // cout
    check_parity("conv2d", [x, w], attrs, taps, must_take=True)
    if cin >= FEW_INPUT_CHANNELS:
        check_parity("conv2d_backprop_input", [g, w, x], attrs, w.size, must_take=True)


@needs_onednn
def test_factories_decline_what_they_do_not_handle():
    x64 = np.zeros((1, 5, 5, 2))
    w = np.zeros((3, 3, 2, 4), np.float32)
    assert factory_for("conv2d", [x64, w], {}) is None                        # float64
    assert factory_for("conv2d", [np.zeros((1, 2, 2, 2), np.float32), w], {}) is None  # VALID
    assert factory_for("batchnorm_apply", [np.zeros((2, 3, 4), np.float32)]
                       + [np.zeros(2, np.float32)] * 4, {"axis": 0, "epsilon": 1e-3}) is None


matmul_cases = st.fixed_dictionaries({
    "m": st.integers(1, 70), "k": st.integers(1, 300), "n": st.integers(1, 70),
    "transpose_a": st.booleans(), "transpose_b": st.booleans(), "seed": st.integers(0, 2 ** 16)})


def matmul_arrays(m: int, k: int, n: int, transpose_a: bool, transpose_b: bool, seed: int):
    """(a, b, attrs) for an [m,k] x [k,n] product, each operand stored as the op reads it."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if transpose_a else (m, k), np.float32)
    b = rng.standard_normal((n, k) if transpose_b else (k, n), np.float32)
    return a, b, {"transpose_a": transpose_a, "transpose_b": transpose_b}


@needs_onednn
@FAST
@given(matmul_cases)
def test_matmul_matches_the_reference_with_both_transposes(case):
    a, b, attrs = matmul_arrays(**case)
    check_parity("small_matmul", [a, b], attrs, case["k"], must_take=True)


@needs_onednn
@pytest.mark.parametrize("batch", [64, 256])
@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, False),
                                                      (False, True)])
def test_the_dense_layers_of_mnist_are_taken(batch, transpose_a, transpose_b):
    """mnist.net's [N,1024] x [1024,1024] layer and its two gradients: above the threshold."""
    m, k, n = {(False, False): (batch, 1024, 1024), (True, False): (1024, batch, 1024),
               (False, True): (batch, 1024, 1024)}[(transpose_a, transpose_b)]
    a, b, attrs = matmul_arrays(m, k, n, transpose_a, transpose_b, seed=batch)
    check_parity("matmul", [a, b], attrs, k, must_take=True)


@needs_onednn
def test_matmul_declines_what_it_does_not_handle():
    f32 = np.float32
    assert factory_for("matmul", [np.zeros((64, 1024)), np.zeros((1024, 1024))], {}) is None
    assert factory_for("matmul", [np.zeros((2, 64, 1024), f32),          # a batch matmul
                                  np.zeros((2, 1024, 1024), f32)], {}) is None
    assert factory_for("small_matmul", [np.zeros((4, 5), f32), np.zeros((6, 7), f32)],
                       {}) is None                                      # inner dims disagree
    assert factory_for("small_matmul", [np.zeros((4, 5), f32), np.zeros((5, 7), f32)],
                       {"transpose_a": 1}) is None                      # not a bool
    assert factory_for("small_matmul", [np.zeros((0, 5), f32), np.zeros((5, 7), f32)],
                       {}) is None
    # mnist's 1024x10 layer at batch 64: 0.66M multiply-adds, NumPy's single thread is faster
    x, w = np.zeros((64, 1024), f32), np.zeros((1024, 10), f32)
    assert 64 * 1024 * 10 < MATMUL_MIN_MACS
    assert factory_for("matmul", [x, w], {}) is None
    assert factory_for("small_matmul", [x, w], {}) is not None


@needs_onednn
@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_bias_relu_is_conv_plus_bias_then_relu(relu):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 7, 5), np.float32)
    w = rng.standard_normal((3, 3, 5, 6), np.float32)
    b = rng.standard_normal(6, np.float32)
    attrs = {"stride": (2, 1), "padding": "SAME", "dilation": (1, 1)}
    run = conv2d_bias_relu([x.shape, w.shape, b.shape], [np.float32] * 3, attrs, relu=relu)
    want = reference("conv2d", x, w, **attrs) + b
    np.testing.assert_allclose(run(x, w, b), np.maximum(want, 0) if relu else want,
                               atol=1e-4)


def test_without_the_library_there_are_no_kernels_and_a_reason(monkeypatch):
    missing = onednn.Library(candidates=lambda: ["/nonexistent/libdnnl.so.3"])
    monkeypatch.setattr(onednn, "LIBRARY", missing)
    assert onednn_kernels() == {}
    assert not onednn.available()
    reason = onednn.unavailable_reason()
    assert reason.startswith("oneDNN not loaded: ") and "/nonexistent/libdnnl.so.3" in reason
    assert "\n" not in reason


def test_a_library_without_the_functions_is_refused(monkeypatch):
    not_dnnl = onednn.Library(candidates=lambda: ["libc.so.6"])
    monkeypatch.setattr(onednn, "LIBRARY", not_dnnl)
    assert onednn_kernels() == {}
    assert "dnnl_" in onednn.unavailable_reason()


def test_configure_cpu_threads_says_what_it_set(monkeypatch):
    from threadpoolctl import threadpool_limits

    from netlang.runtime.threads import configure_cpu_threads

    monkeypatch.setenv("OMP_WAIT_POLICY", "unset-by-test")   # restored after the test
    monkeypatch.setenv("OMP_NUM_THREADS", "0")
    with threadpool_limits(limits=None):                     # restores the pools on exit
        setting = configure_cpu_threads(threads=2)
    assert setting.threads == 2
    assert "1 threads" in setting.blas or "none loaded" in setting.blas   # BLAS_THREADS
    if onednn.available():      # loading oneDNN brings libgomp, whose pool is then sized
        assert "libgomp: 2 threads, OMP_WAIT_POLICY=" in setting.openmp
    assert setting.describe().startswith(setting.blas)


@pytest.mark.parametrize("user, kept", [({}, "GOMP_SPINCOUNT=10000"),
                                         ({"OMP_WAIT_POLICY": "passive"}, "OMP_WAIT_POLICY=passive"),
                                         ({"GOMP_SPINCOUNT": "0"}, "GOMP_SPINCOUNT=0")])
def test_idle_workers_spin_a_while_unless_the_user_said_otherwise(user, kept, monkeypatch):
    from threadpoolctl import threadpool_limits

    from netlang.runtime import threads

    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)             # restored after the test
    for name, value in user.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(threads, "libgomp_loaded", lambda: False)   # as in a fresh process
    with threadpool_limits(limits=None):
        setting = threads.configure_cpu_threads(threads=2)
    assert threads.wait_line() == kept
    assert len({"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ)) == 1
    if onednn.available():
        assert setting.openmp.endswith(kept)


@needs_onednn
def test_a_primitive_oneDNN_refuses_to_build_falls_back(monkeypatch):
    from netlang.runtime import onednn_kernels as kernels

    def refused(*_):
        raise onednn.OneDNNError("dnnl_convolution_forward_primitive_desc_create", 2)
    monkeypatch.setitem(kernels.FACTORIES, "conv2d", refused)
    x, w = np.zeros((1, 4, 4, 4), np.float32), np.zeros((3, 3, 4, 4), np.float32)
    assert factory_for("conv2d", [x, w], {}) is None


@needs_onednn
def test_attributes_as_the_reference_takes_them():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 9, 9, 4), np.float32)
    w = rng.standard_normal((2, 3, 4, 5), np.float32)
    check_parity("conv2d", [x, w], {"stride": [2, 1], "padding": "same", "dilation": 2}, 24)
    check_parity("maxpool", [x], {"window": 3, "stride": None, "padding": "valid"})


@needs_onednn
def test_implementations_seen_touching_memory_outside_their_buffers_are_declined():
    """oneDNN 3.2's strided jit_1x1 backward passes read past src/diff_dst and corrupted the
    heap (found with inputs against a guard page): such a case must run the reference."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 8, 9, 8), np.float32)
    w = rng.standard_normal((1, 1, 8, 4), np.float32)
    attrs = {"stride": (1, 3), "padding": "VALID", "dilation": (1, 1)}
    g = reference("conv2d", x, w, **attrs)
    for op, arrays in [("conv2d_backprop_filter", [x, g, w]),
                       ("conv2d_backprop_input", [g, w, x])]:
        run = factory_for(op, arrays, attrs)
        assert run is None or not ("1x1" in run.impl() or "gemm" in run.impl()), run.impl()


# Cases that oneDNN 3.2 ran outside its buffers before ``trusted`` declined them (strided
# jit_1x1 backward passes), then random ones.
GUARDED_CASES = [
    ((3, 8, 9, 8), (1, 1, 8, 4), {"stride": (1, 3), "dilation": (2, 2), "padding": "VALID"}),
    ((3, 10, 9, 8), (1, 1, 8, 1), {"stride": (1, 3), "dilation": (2, 1), "padding": "SAME"}),
    ((1, 4, 11, 4), (1, 1, 4, 4), {"stride": (2, 1), "dilation": (2, 2), "padding": "SAME"}),
]


def random_conv_case(rng):
    n, h, w = (int(v) for v in rng.integers(1, 10, 3))
    cin, cout = (int(rng.choice([1, 4, 8, 17])) for _ in range(2))
    k, s, d = (tuple(int(v) for v in rng.integers(1, top, 2)) for top in (4, 4, 3))
    return (n, h, w, cin), (*k, cin, cout), {"stride": s, "dilation": d, "padding": "SAME"}


def guarded_empty_factory(keep: list, at_end: bool):
    """``np.empty`` for float32 whose buffer touches a PROT_NONE page right after its end
    (``at_end``) or right before its start, so a stray read or write there faults."""
    import ctypes
    import mmap

    libc = ctypes.CDLL("libc.so.6")
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE

    def empty(shape, dtype=np.float32):
        count = int(np.prod(shape))
        pages = -(-max(count * 4, 4) // page) + 2
        buf = mmap.mmap(-1, pages * page)
        keep.append(buf)
        base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        prot_none = 0
        assert libc.mprotect(base, page, prot_none) == 0
        assert libc.mprotect(base + (pages - 1) * page, page, prot_none) == 0
        offset = (pages - 1) * page - count * 4 if at_end else page
        return np.frombuffer(buf, np.float32, count, offset).reshape(shape)
    return empty


@needs_onednn
@pytest.mark.skipif(sys.platform != "linux", reason="uses Linux's mprotect through libc")
@pytest.mark.parametrize("at_end", [True, False])
def test_kernels_stay_inside_their_buffers(monkeypatch, at_end):
    """Inputs and outputs against guard pages on random geometries: a kernel reading or
    writing past either end of a buffer crashes this test instead of corrupting memory."""
    import types

    from netlang.runtime import onednn_kernels as kernels

    keep: list = []
    empty = guarded_empty_factory(keep, at_end)
    shim = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if k[:2] != "__"})
    shim.empty = empty
    monkeypatch.setattr(kernels, "np", shim)          # the kernels' outputs, guarded too
    rng = np.random.default_rng(5 + at_end)
    for x_shape, w_shape, attrs in GUARDED_CASES + [random_conv_case(rng) for _ in range(12)]:
        x = rng.standard_normal(x_shape, np.float32)
        wt = rng.standard_normal(w_shape, np.float32)
        g = rng.standard_normal(reference("conv2d", x, wt, **attrs).shape, np.float32)
        pool = {"window": w_shape[:2], "stride": attrs["stride"], "padding": "SAME"}
        y = reference("maxpool", x, **pool)
        for op, arrays, a in [("conv2d", [x, wt], attrs), ("conv2d_backprop_input", [g, wt, x],
                              attrs), ("conv2d_backprop_filter", [x, g, wt], attrs),
                              ("maxpool_grad", [x, y, y], pool), ("avgpool_grad", [y, x], pool)]:
            run = onednn_kernels()[op]([b.shape for b in arrays], [b.dtype for b in arrays], a)
            if run is not None:
                guarded = [empty(b.shape) for b in arrays]
                for dst, src in zip(guarded, arrays):
                    dst[...] = src
                np.testing.assert_allclose(run(*guarded), reference(op, *arrays, **a),
                                           rtol=1e-4, atol=1e-3 * np.sqrt(x.size + 1))
    for _ in range(40):
        m, k, n = (int(v) for v in rng.integers(1, 80, 3))
        a, b, attrs = matmul_arrays(m, k, n, *(bool(t) for t in rng.integers(0, 2, 2)), seed=m)
        guarded = [empty(a.shape), empty(b.shape)]
        guarded[0][...], guarded[1][...] = a, b
        np.testing.assert_allclose(small_matmul([a.shape, b.shape], [a.dtype] * 2, attrs)(
            *guarded), reference("matmul", a, b, **attrs), rtol=1e-4, atol=1e-4 * np.sqrt(k))
