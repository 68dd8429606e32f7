"""The GPU backend's cuDNN convolutions (runtime/cudnn_kernels.py): the graphs netlang builds,
run by a NumPy stand-in for the ``cudnn`` module that reads every tensor through the dims and
strides it is given (tests/runtime/fake_cudnn.py), against the reference kernels; and the
executor taking them on the GPU backend (the NumPy stand-in for CuPy).  On a GPU
(tools/gpu_check.sh) the real module runs the same graphs."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netlang
from netlang.ops.conv import backprop_filter_kernel, backprop_input_kernel, conv2d_kernel
from netlang.runtime import cudnn_kernels
from tests.runtime.fake_cudnn import FakeCudnn
from tests.runtime.test_backend import fresh_gpu_slot, numpy_as_gpu  # noqa: F401 (fixtures)

EXAMPLES = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def convolutions(draw):
    """(x, w, attrs): a random NHWC image and HWIO filter, padding, stride and dilation."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.sampled_from(["SAME", "VALID", ((1, 0), (0, 2))]))
    h, w = draw(st.integers(5, 9)), draw(st.integers(5, 9))
    cin, cout = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    x = rng.standard_normal((draw(st.integers(1, 3)), h, w, cin)).astype(np.float32)
    f = rng.standard_normal((kh, kw, cin, cout)).astype(np.float32)
    return x, f, {"stride": stride, "padding": padding, "dilation": dilation, "groups": None}


def factories(fake=None):
    return cudnn_kernels.cudnn_factories(fake or FakeCudnn(), StandIn)


class StandIn:
    """The CuPy functions the factories call, from NumPy (and a current stream)."""

    empty, ascontiguousarray, transpose = np.empty, np.ascontiguousarray, np.transpose
    cuda = type("cuda", (), {"get_current_stream": staticmethod(
        lambda: type("stream", (), {"ptr": 0})())})


@EXAMPLES
@given(case=convolutions(), relu=st.booleans())
def test_each_cudnn_graph_computes_what_the_reference_computes(case, relu):
    x, w, attrs = case
    made = factories()
    y = conv2d_kernel(np, x, w, **{k: v for k, v in attrs.items()})
    run = made["conv2d"][0]([x.shape, w.shape], [x.dtype] * 2, attrs, None)
    np.testing.assert_allclose(run(x, w), y, rtol=1e-4, atol=1e-4)
    b = np.linspace(-1, 1, w.shape[3]).astype(np.float32)
    run = made["conv2d_bias"][0]([x.shape, w.shape, b.shape], [x.dtype] * 3,
                                 {**attrs, "relu": relu}, None)
    want = y + b
    np.testing.assert_allclose(run(x, w, b), np.maximum(want, 0) if relu else want,
                               rtol=1e-4, atol=1e-4)
    g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    run = made["conv2d_backprop_input"][0]([g.shape, w.shape, x.shape], [x.dtype] * 3, attrs,
                                           None)
    np.testing.assert_allclose(run(g, w, x), backprop_input_kernel(np, g, w, x, **attrs),
                               rtol=1e-4, atol=1e-4)
    run = made["conv2d_backprop_filter"][0]([x.shape, g.shape, w.shape], [x.dtype] * 3, attrs,
                                            None)
    np.testing.assert_allclose(run(x, g, w), backprop_filter_kernel(np, x, g, w, **attrs),
                               rtol=1e-4, atol=1e-4)


def test_the_graphs_use_nhwc_strides_krsc_filters_and_tensorflow_padding():
    fake = FakeCudnn()
    run = factories(fake)["conv2d_bias"][0](
        [(2, 7, 7, 3), (3, 3, 3, 8), (8,)], [np.float32] * 3,
        {"stride": (2, 2), "padding": "SAME", "dilation": (1, 1), "relu": True}, None)
    assert run is not None
    (graph,) = fake.graphs
    assert graph.options["io_data_type"] == "FLOAT"
    assert graph.options["compute_data_type"] == "FLOAT"
    conv, bias, relu = graph.nodes
    x, w = conv.inputs
    assert (x.dim, x.stride) == ([2, 3, 7, 7], [147, 1, 21, 3])
    assert (w.dim, w.stride) == ([8, 3, 3, 3], [27, 1, 9, 3])
    # SAME over 7 with stride 2 and a 3-tap window: 4 outputs, 2 rows of padding, 1 a side
    assert conv.attrs == {"pre_padding": [1, 1], "post_padding": [1, 1], "stride": [2, 2],
                          "dilation": [1, 1]}
    assert (bias.op, relu.op, relu.output) == ("bias", "relu", True)
    assert (relu.dim, relu.stride) == ([2, 8, 4, 4], [128, 1, 32, 8])


@pytest.mark.parametrize("dtypes, attrs", [
    ([np.float64] * 2, {}),                                   # cuDNN's doubles: not taken
    ([np.float32] * 2, {"groups": 2}),                        # grouped: the reference
    ([np.float32, np.float16], {}),                           # mixed dtypes
])
def test_what_the_factories_decline(dtypes, attrs):
    made = factories()
    assert made["conv2d"][0]([(1, 5, 5, 4), (3, 3, 4, 4)], dtypes, attrs, None) is None


def test_a_graph_cudnn_cannot_build_declines():
    fake = FakeCudnn()

    def refuse(**options):
        raise RuntimeError("cudnnGraphNotSupportedError: no engine")
    fake.pygraph = refuse
    assert factories(fake)["conv2d"][0]([(1, 5, 5, 4), (3, 3, 4, 4)], [np.float32] * 2, {},
                                        None) is None


@pytest.mark.usefixtures("fresh_gpu_slot")
def test_the_gpu_backend_trains_residual_through_cudnn_as_the_cpu_does(request, monkeypatch):
    """The executor takes the factories on the GPU backend (the stand-ins for CuPy and cuDNN):
    every convolution of a residual train step runs as a cuDNN graph."""
    fake = FakeCudnn()
    monkeypatch.setitem(sys.modules, "cudnn", fake)
    backend = request.getfixturevalue("numpy_as_gpu")
    assert backend.library == "cuDNN 90000" and backend.describe() == "gpu (cuDNN 90000)"
    from netlang.cli.bench import build_train_model, synthetic_batch, train_config_of
    from netlang.train.step import LR_INPUT

    model = netlang.compile("specs/residual.net")
    train, optimizer = build_train_model(model, train_config_of(model))
    feeds = {**synthetic_batch(model.graph, 4), LR_INPUT: np.float32(optimizer.lr)}
    losses = {}
    for device in ("cpu", "gpu"):
        session = train.session(device, seed=3)
        before = FakeCudnn.executed
        losses[device] = [float(session.run(model.graph.loss, feeds, training=True,
                                            updates=True)) for _ in range(2)]
    assert FakeCudnn.executed - before >= 2 * 8 * 2        # forward and both gradients
    np.testing.assert_allclose(losses["gpu"], losses["cpu"], rtol=1e-4)


@pytest.mark.usefixtures("fresh_gpu_slot")
def test_without_the_frontend_the_gpu_says_why(request, monkeypatch):
    monkeypatch.setitem(sys.modules, "cudnn", None)
    backend = request.getfixturevalue("numpy_as_gpu")
    assert not backend.factories
    assert backend.describe() == (
        "gpu (cuDNN is not used: nvidia-cudnn-frontend is not installed; convolutions run "
        "CuPy's GEMMs (pip install nvidia-cudnn-frontend nvidia-cudnn-cu12))")


@EXAMPLES
@given(m=st.integers(1, 9), k=st.integers(1, 9), n=st.integers(1, 9),
       ta=st.booleans(), tb=st.booleans(), seed=st.integers(0, 2**16))
def test_matmul_graphs_transpose_by_strides(m, k, n, ta, tb, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    run = factories()["matmul"][0]([a.shape, b.shape], [np.float32] * 2,
                                   {"transpose_a": ta, "transpose_b": tb}, None)
    assert run.capturable
    want = (a.T if ta else a) @ (b.T if tb else b)
    np.testing.assert_allclose(run(a, b), want, rtol=1e-5, atol=1e-5)


def test_matmul_declines_batches_and_mismatched_sizes():
    made = factories()["matmul"][0]
    assert made([(2, 3, 4), (4, 5)], [np.float32] * 2, {}, None) is None
    assert made([(3, 4), (5, 6)], [np.float32] * 2, {}, None) is None
    assert made([(3, 4), (4, 6)], [np.float64] * 2, {}, None) is None


@pytest.mark.usefixtures("fresh_gpu_slot")
def test_with_cudnns_matmul_a_whole_mlp_step_is_one_graph(request, monkeypatch):
    """spiral's step: every call capturable, so one segment (no cuBLAS call between graphs)."""
    monkeypatch.setitem(sys.modules, "cudnn", FakeCudnn())
    request.getfixturevalue("numpy_as_gpu")
    from netlang.cli.bench import build_train_model, synthetic_batch, train_config_of
    from netlang.runtime import capture
    from netlang.train.step import LR_INPUT

    model = netlang.compile("specs/spiral.net")
    train, optimizer = build_train_model(model, train_config_of(model))
    session = train.session("gpu", seed=3)
    feeds = {**synthetic_batch(model.graph, 8), LR_INPUT: np.float32(optimizer.lr)}
    session.run(model.graph.loss, feeds, training=True, updates=True)
    (graphed,) = [g for per in session.executor._graphed.values() for g in per.values()]
    assert isinstance(graphed, capture.GraphedProgram) and len(graphed.segments) == 1
