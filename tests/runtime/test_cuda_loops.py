"""The GPU backend's hand-written CUDA loops (runtime/cuda_loops.py) against the reference
kernels: pooling bit for bit, softmax and cross-entropy and the per-channel sums within
float32 rounding, outputs and gradients, on random shapes.  The loops' CUDA text runs on
the host (tests/runtime/host_cuda.py: every block and thread of each launch, one after
another) through the GPU backend's own kernel table, over the NumPy stand-in for CuPy; where
a GPU is present the parity tests run there too (``device``: nvcc's code, CUDA's libm)."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlang.ops.registry import get_op
from netlang.runtime import cuda_loops
from netlang.runtime.gpu_kernels import RawSource
from tests.ops.cases_pool import pool_setup
from tests.ops.harness import array, distinct
from tests.runtime.fake_cudnn import FakeCudnn
from tests.runtime.host_cuda import HostRawKernel
from tests.runtime.test_backend import (  # noqa: F401 (fixtures)
    GPU_OK,
    GPU_WHY,
    NumpyCupy,
    fresh_gpu_slot,
    numpy_as_gpu,
)

EXAMPLES = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture
def gpu(request):
    """The GPU backend over the NumPy stand-in for CuPy (test_backend.py's numpy_as_gpu)."""
    return request.getfixturevalue("numpy_as_gpu")


@pytest.fixture(params=["standin", pytest.param("gpu", marks=pytest.mark.skipif(
    not GPU_OK, reason=f"no GPU on this machine: {GPU_WHY}"))])
def device(request):
    """The GPU backend on the stand-in, and on the GPU where there is one."""
    if request.param == "gpu":
        from netlang.runtime.backend import get_backend

        return get_backend("gpu")
    return request.getfixturevalue("numpy_as_gpu")


def run_gpu(backend, op: str, *arrays, **attrs):
    """(the GPU backend's result for ``op`` on the host, the names of the raw kernels it
    launched; None on a real GPU, where launches are not recorded)."""
    before = len(HostRawKernel.launches)
    out = backend.kernel_for(get_op(op))(backend.xp, *[backend.asarray(a) for a in arrays],
                                         **attrs)
    if not isinstance(backend.xp, NumpyCupy):
        return backend.to_numpy(out), None
    return np.asarray(out), [name for name, _, _ in HostRawKernel.launches[before:]]


def launched_as(launched, *names: str) -> bool:
    """The launches were these kernels (anything, on a real GPU)."""
    return launched is None or launched == list(names)


def reference(op: str, *arrays, **attrs):
    return np.asarray(get_op(op).kernel(np, *arrays, **attrs))


def assert_same_bits(got, want, what: str):
    assert got.shape == want.shape and got.dtype == want.dtype, what
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), what


@pytest.mark.parametrize("cudnn", ["absent", "fake"])
def test_the_gpu_backend_runs_the_loops_with_and_without_cudnn(cudnn, request, monkeypatch):
    monkeypatch.setitem(sys.modules, "cudnn", FakeCudnn() if cudnn == "fake" else None)
    backend = request.getfixturevalue("numpy_as_gpu")
    assert bool(backend.factories) == (cudnn == "fake")
    for op in cuda_loops.LOOPS:
        assert backend.kernel_for(get_op(op)).__name__ == f"{op}_cuda"
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    y, launched = run_gpu(backend, "maxpool", x, window=(2, 2), stride=None,
                          padding="VALID", dilation=None)
    assert launched == ["netlang_maxpool_f32"]
    assert y.reshape(-1).tolist() == [5, 7, 13, 15]


# -- pooling -----------------------------------------------------------------------------------

def pool_input(draw, shape):
    """Distinct values, or (ties) relu of random values, sometimes with a NaN in a window."""
    kind = draw(st.sampled_from(["distinct", "ties", "nan"]))
    x = distinct(draw, shape) if kind == "distinct" else np.maximum(array(draw, shape), 0)
    if kind == "nan":
        x.reshape(-1)[draw(st.integers(0, x.size - 1))] = np.nan
    return x.astype(np.float32)


@EXAMPLES
@given(data=st.data())
def test_maxpool_and_its_gradients_are_the_reference_bit_for_bit(device, data):
    """Each is one launch; ties go to the window's first maximum, a NaN window's gradient to
    its last tap, as in the reference."""
    shape, attrs = pool_setup(data.draw)
    x = pool_input(data.draw, shape)
    y, launched = run_gpu(device, "maxpool", x, **attrs)
    assert_same_bits(y, reference("maxpool", x, **attrs), f"maxpool {attrs}")
    g = array(data.draw, y.shape, dtype=np.float32)
    dx, launched_grad = run_gpu(device, "maxpool_grad", x, y, g, **attrs)
    assert_same_bits(dx, reference("maxpool_grad", x, y, g, **attrs), f"maxpool_grad {attrs}")
    h = array(data.draw, shape, dtype=np.float32)
    hy, launched_gg = run_gpu(device, "maxpool_grad_grad", x, y, h, **attrs)
    assert_same_bits(hy, reference("maxpool_grad_grad", x, y, h, **attrs),
                     f"maxpool_grad_grad {attrs}")
    assert launched_as(launched, "netlang_maxpool_f32")
    assert launched_as(launched_grad, "netlang_maxpool_grad_f32")
    assert launched_as(launched_gg, "netlang_maxpool_grad_grad_f32")


@EXAMPLES
@given(data=st.data())
def test_avgpool_and_its_gradient_are_the_reference_bit_for_bit(device, data):
    """The window's sum in tap order times float32(1 / cells inside), SAME's rule included."""
    shape, attrs = pool_setup(data.draw)
    x = array(data.draw, shape, dtype=np.float32)
    y, launched = run_gpu(device, "avgpool", x, **attrs)
    assert_same_bits(y, reference("avgpool", x, **attrs), f"avgpool {attrs}")
    g = array(data.draw, y.shape, dtype=np.float32)
    dx, launched_grad = run_gpu(device, "avgpool_grad", g, x, **attrs)
    assert_same_bits(dx, reference("avgpool_grad", g, x, **attrs), f"avgpool_grad {attrs}")
    assert launched_as(launched, "netlang_avgpool_f32")
    assert launched_as(launched_grad, "netlang_avgpool_grad_f32")


# -- softmax and cross-entropy -----------------------------------------------------------------

def logits_of(draw):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    scale = draw(st.sampled_from([1.0, 30.0]))    # 30: exp would overflow without the shift
    return array(draw, shape, dtype=np.float32) * np.float32(scale)


@EXAMPLES
@given(data=st.data())
def test_softmax_and_log_softmax_rows_match_the_reference(device, data):
    x = logits_of(data.draw)
    for op in ("softmax", "log_softmax"):
        got, launched = run_gpu(device, op, x, axis=-1)
        np.testing.assert_allclose(got, reference(op, x, axis=-1), rtol=1e-5, atol=1e-6,
                                   err_msg=op)
        assert got.dtype == np.float32 and launched_as(launched, "netlang_softmax_f32")


@EXAMPLES
@given(data=st.data(), labels=st.sampled_from(["i32", "i64", "probabilities"]))
def test_cross_entropy_and_its_gradient_match_the_reference(device, data, labels):
    z = logits_of(data.draw)
    if labels == "probabilities":      # rows that need not sum to 1 (soft targets)
        y = array(data.draw, z.shape, 0.0, 1.0, dtype=np.float32)
    else:
        y = np.random.default_rng(data.draw(st.integers(0, 99))).integers(
            0, z.shape[-1], z.shape[:-1]).astype(np.int32 if labels == "i32" else np.int64)
    loss, launched = run_gpu(device, "softmax_cross_entropy", z, y)
    np.testing.assert_allclose(loss, reference("softmax_cross_entropy", z, y), rtol=1e-5,
                               atol=2e-5)
    g = array(data.draw, z.shape[:-1], dtype=np.float32)
    dz, launched_grad = run_gpu(device, "softmax_cross_entropy_grad", g, z, y)
    np.testing.assert_allclose(dz, reference("softmax_cross_entropy_grad", g, z, y),
                               rtol=1e-5, atol=1e-6)
    assert loss.shape == z.shape[:-1] and dz.shape == z.shape
    suffix = {"i32": "int", "i64": "long_long", "probabilities": "probs"}[labels]
    assert launched_as(launched, f"netlang_xent_{suffix}_f32")
    assert launched_as(launched_grad, f"netlang_xent_grad_{suffix}_f32")


def test_class_ids_out_of_range_pick_nothing_as_the_references_cupy_path(gpu):
    """On the GPU the reference does not read the ids back to check them (it would stall the
    device): an id outside [0, C) leaves the row's loss at its log-sum-exp."""
    z = np.float32([[1, 2, 3], [0, 0, 0]])
    ids = np.int32([5, -1])
    xp = gpu.xp
    loss, _ = run_gpu(gpu, "softmax_cross_entropy", z, ids)
    np.testing.assert_allclose(loss, get_op("softmax_cross_entropy").kernel(xp, z, ids),
                               rtol=1e-6)
    g = np.float32([1, 2])
    dz, _ = run_gpu(gpu, "softmax_cross_entropy_grad", g, z, ids)
    np.testing.assert_allclose(dz, get_op("softmax_cross_entropy_grad").kernel(xp, g, z, ids),
                               rtol=1e-6)


# -- sums over the leading axes ----------------------------------------------------------------

def leading_case(draw):
    """An f32 array and how many leading axes to sum (at least one)."""
    shape = tuple(draw(st.lists(st.integers(1, 40), min_size=1, max_size=4)))
    count = draw(st.integers(1, len(shape)))
    offset = draw(st.sampled_from([0.0, 100.0]))   # a large mean: rounding shows
    return array(draw, shape, dtype=np.float32) + np.float32(offset), count


TWO_STAGES = ("netlang_channel_partials_f32", "netlang_channel_finish_f32")


def wide_sum(x, count: int):
    """The float64 sum over the first ``count`` axes, rounded once to float32."""
    return x.astype(np.float64).sum(axis=tuple(range(count))).astype(np.float32)


@EXAMPLES
@given(data=st.data(), keepdims=st.booleans())
def test_sum_mean_and_sum_to_like_over_leading_axes_match_the_reference(device, data,
                                                                        keepdims):
    """Two launches each; the float64 partial sums give the float64 total rounded once."""
    x, count = leading_case(data.draw)
    spellings = [tuple(range(count)), list(range(count))] + [0] * (count == 1) + [
        None] * (count == x.ndim)
    axis = data.draw(st.sampled_from(spellings))
    for op in ("sum", "mean"):
        got, launched = run_gpu(device, op, x, axis=axis, keepdims=keepdims)
        want = reference(op, x, axis=axis, keepdims=keepdims)
        assert got.shape == want.shape and got.dtype == np.float32, op
        scale = np.abs(x).sum(axis=tuple(range(count))).max() / (
            x.size // max(want.size, 1) if op == "mean" else 1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale, err_msg=op)
        assert launched_as(launched, *TWO_STAGES)
    exact = wide_sum(x, count)
    np.testing.assert_allclose(run_gpu(device, "sum", x, axis=axis, keepdims=False)[0],
                               exact, rtol=2e-7, atol=1e-30)
    like = np.zeros((1,) * count * keepdims + x.shape[count:], np.float32)
    got, _ = run_gpu(device, "sum_to_like", x, like)
    assert got.shape == like.shape
    np.testing.assert_allclose(got.reshape(exact.shape), exact, rtol=2e-7, atol=1e-30)


@EXAMPLES
@given(data=st.data())
def test_batch_variance_and_gamma_gradient_match_the_reference(device, data):
    shape = tuple(data.draw(st.lists(st.integers(1, 12), min_size=2, max_size=4)))
    x = array(data.draw, shape, dtype=np.float32) + np.float32(3)
    mean = x.mean(axis=tuple(range(x.ndim - 1)), dtype=np.float64).astype(np.float32)
    var, launched = run_gpu(device, "batch_variance", x, mean, axis=-1)
    np.testing.assert_allclose(var, reference("batch_variance", x, mean, axis=-1),
                               rtol=1e-5, atol=1e-7)
    g = array(data.draw, shape, dtype=np.float32)
    dgamma, launched_gamma = run_gpu(device, "batchnorm_grad_gamma", g, x, mean, var,
                                     axis=x.ndim - 1, epsilon=1e-3)
    want = reference("batchnorm_grad_gamma", g, x, mean, var, axis=x.ndim - 1, epsilon=1e-3)
    scale = np.abs(g * (x - mean)).sum(axis=tuple(range(x.ndim - 1))) / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(dgamma, want, rtol=1e-5, atol=1e-6 * scale.max())
    assert launched_as(launched, *TWO_STAGES) and launched_as(launched_gamma, *TWO_STAGES)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(rows=st.integers(1, 10**7), cols=st.integers(1, 10**5))
def test_the_chunks_cover_every_row_once_and_depend_on_the_shape_alone(rows, cols):
    chunk, chunks = cuda_loops.chunking(rows, cols)
    assert (chunks - 1) * chunk < rows <= chunks * chunk
    assert chunks <= cuda_loops.MAX_CHUNKS and cuda_loops.chunking(rows, cols) == (chunk,
                                                                                   chunks)
    assert chunks * cols <= 65536 or chunks == 1


def test_a_sum_over_many_chunks_repeats_bit_for_bit(device):
    x = np.random.default_rng(0).standard_normal((3000, 5)).astype(np.float32)
    assert cuda_loops.chunking(3000, 5)[1] > 1
    first, _ = run_gpu(device, "sum", x, axis=0, keepdims=False)
    again, _ = run_gpu(device, "sum", x, axis=0, keepdims=False)
    assert_same_bits(first, again, "sum")
    np.testing.assert_allclose(first, wide_sum(x, 1), rtol=2e-7)


# -- what the loops leave to the reference -----------------------------------------------------

POOL = {"window": (2, 2), "stride": None, "padding": "SAME", "dilation": None}
IMAGE = np.random.default_rng(1).standard_normal((2, 5, 5, 3))
DECLINED = [
    ("maxpool", [IMAGE], POOL),                                   # f64
    ("avgpool", [IMAGE.astype(np.float16)], POOL),                # f16
    ("softmax", [IMAGE.astype(np.float32)], {"axis": 1}),         # not the last axis
    ("sum", [IMAGE.astype(np.float32)], {"axis": (1, 2), "keepdims": False}),   # middle axes
    ("mean", [IMAGE.astype(np.float32)], {"axis": -1, "keepdims": True}),
    ("sum", [np.ones((2, 3), np.int32)], {"axis": 0, "keepdims": False}),
    ("sum_to_like", [IMAGE.astype(np.float32), np.zeros((5, 1, 3))], {}),
    ("batch_variance", [IMAGE.astype(np.float32), np.zeros(5, np.float32)], {"axis": 1}),
    ("softmax_cross_entropy", [IMAGE[0, 0].astype(np.float32), np.int16([0, 1, 2, 0, 1])], {}),
]


@pytest.mark.parametrize("op, arrays, attrs", DECLINED,
                         ids=[f"{op}-{i}" for i, (op, _, _) in enumerate(DECLINED)])
def test_what_a_loop_does_not_take_runs_the_reference(gpu, op, arrays, attrs):
    got, launched = run_gpu(gpu, op, *arrays, **attrs)
    assert launched == []
    want = reference(op, *arrays, **attrs)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_a_strided_input_is_copied_and_a_broadcast_gradient_read_in_place(gpu):
    """Which kernel runs does not depend on a value's layout (a captured step's values are
    all fresh buffers); the gradient of a mean of losses, one scalar broadcast over the
    batch, is read where it is."""
    x = IMAGE.astype(np.float32).transpose(0, 2, 1, 3)
    y, launched = run_gpu(gpu, "maxpool", x, **POOL)
    assert launched == ["netlang_maxpool_f32"]
    assert_same_bits(y, reference("maxpool", x, **POOL), "maxpool of a transposed image")
    z = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)
    ids = np.int32([0, 1, 2, 3, 0, 1])
    g = np.broadcast_to(np.float32(1 / 6), (6,))
    dz, launched = run_gpu(gpu, "softmax_cross_entropy_grad", g, z, ids)
    assert launched == ["netlang_xent_grad_int_f32"]
    np.testing.assert_allclose(dz, reference("softmax_cross_entropy_grad", g, z, ids),
                               rtol=1e-6, atol=1e-8)


# -- the CUDA compiler's view -------------------------------------------------------------------

def every_source() -> list:
    fixed = [v for v in vars(cuda_loops).values() if isinstance(v, RawSource)]
    labels = [None, *cuda_loops.LABEL_CTYPES.values()]
    return fixed + [make(k) for k in labels
                    for make in (cuda_loops.xent_source, cuda_loops.xent_grad_source)]


def test_nvcc_compiles_every_loop_and_the_exact_ones_round_every_step(tmp_path):
    """Where the CUDA toolkit is installed (no GPU needed): every source compiles to PTX with
    no warning, and the loops that match the reference bit for bit (pooling) or sum in a
    fixed order (the two stages) hold no fused multiply-add."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc (CUDA toolkit) on this machine")
    exact = ("netlang_maxpool", "netlang_avgpool", "netlang_channel")
    sources = every_source()
    assert len(sources) == 14
    for source in sources:
        cu = tmp_path / f"{source.name}.cu"
        cu.write_text(source.text())
        done = subprocess.run([nvcc, "-ptx", str(cu), "-o", str(cu.with_suffix(".ptx"))],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
        ptx = cu.with_suffix(".ptx").read_text()
        assert f".entry {source.name}(" in ptx
        if source.name.startswith(exact):
            assert "fma." not in ptx, source.name


# -- a whole training step ---------------------------------------------------------------------

def test_mnist_small_trains_through_the_loops_as_on_the_cpu(gpu):
    """Three Adam steps of specs/mnist_small.net (SAME maxpools, softmax cross-entropy, bias
    gradients) on the GPU backend give the CPU's losses and parameters; its pooling,
    cross-entropy and bias sums ran as the loops.  The CPU's convolutions sum in another
    order, and Adam turns a tiny gradient's difference into a step of up to lr (1e-3)."""
    import netlang
    from netlang.cli.bench import build_train_model, synthetic_batch, train_config_of
    from netlang.train.step import LR_INPUT

    model = netlang.compile(pathlib.Path(__file__).parents[2] / "specs" / "mnist_small.net")
    train, optimizer = build_train_model(model, train_config_of(model))
    feeds = {**synthetic_batch(model.graph, 8), LR_INPUT: np.float32(optimizer.lr)}
    runs = {}
    for device in ("cpu", "gpu"):
        session = train.session(device, seed=3)
        losses = [float(session.run(model.graph.loss, feeds, training=True, updates=True))
                  for _ in range(3)]
        runs[device] = (losses, session.state.to_numpy())
    assert session.backend is gpu
    launched = {name for name, _, _ in HostRawKernel.launches}
    assert {"netlang_maxpool_f32", "netlang_maxpool_grad_f32", "netlang_xent_int_f32",
            "netlang_xent_grad_int_f32", "netlang_channel_partials_f32"} <= launched
    np.testing.assert_allclose(runs["gpu"][0], runs["cpu"][0], rtol=1e-5)
    for name, value in runs["cpu"][1].items():
        np.testing.assert_allclose(runs["gpu"][1][name], value, rtol=1e-4, atol=3e-3,
                                   err_msg=name)
