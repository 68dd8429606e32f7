"""Half precision on the GPU backend, run here through the NumPy stand-in for CuPy whose
generated kernels g++ compiles with ``_Float16`` for CuPy's float16 (test_backend.py):
f16 fused kernels, ``precision mixed`` defaulting to f16 there, and bf16 (which CuPy lacks)
refused at the value that needs it."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.errors import DeviceError
from netlang.ir.types import DType
from netlang.model import Model
from netlang.train.config import train_config
from netlang.train.optimizers import make_optimizer
from netlang.train.step import LR_INPUT, build_train_graph
from tests.runtime.test_backend import (  # noqa: F401 (fixtures)
    DEVICES,
    HostElementwiseKernel,
    fresh_gpu_slot,
    numpy_as_gpu,
)

GPUS = DEVICES[1:]      # the stand-in here; a real GPU too where there is one (gpu_check.sh)


def gpu(device: str, request) -> None:
    """Make ``get_backend("gpu")`` the stand-in when ``device`` asks for it."""
    if device == "standin":
        request.getfixturevalue("numpy_as_gpu")

MLP = """network mlp {
  input x: f32[N, 6]
  input label: i32[N]
  logits = x |> dense(16) |> relu |> dense(16) |> tanh |> dense(3)
  output probs = softmax(logits)
  loss xent = mean(softmax_cross_entropy(logits, label))
}
train mlp {
  data spiral()
  optimizer sgd(lr=0.1)
  precision mixed
}
"""


def test_precision_mixed_is_bf16_on_the_cpu_and_f16_on_the_gpu():
    model = netlang.compile(MLP)
    config = train_config(model.train_config, "mlp")
    assert config.mixed_dtype("cpu") is DType.bf16 and config.mixed_dtype("gpu") is DType.f16


@pytest.mark.parametrize("device", GPUS)
def test_f16_groups_run_as_generated_kernels_that_round_each_step_like_numpy(device, request):
    """Each f16 step computes in float and rounds to half, as NumPy's float16 ufuncs do."""
    gpu(device, request)
    spec = ("network n {\n  input x: f32[N, 5]\n  h = cast(x, dtype=f16)\n"
            "  output y = relu(h * h - h / 3)\n}\n")
    x = np.random.default_rng(3).uniform(-4, 4, (64, 5)).astype(np.float32)
    got = netlang.compile(spec).session("gpu").run("y", {"x": x})
    want = netlang.compile(spec).session("cpu", kernels="numpy").run("y", {"x": x})
    assert got.dtype == want.dtype == np.float16
    np.testing.assert_array_equal(got, want)
    assert device == "gpu" or any("float16 x0" in key[0] for key in HostElementwiseKernel.built)


@pytest.mark.parametrize("device", GPUS)
def test_f16_mixed_precision_trains_on_the_gpu_as_on_the_cpu(device, request):
    """Matmuls in f16 with f32 master weights, on the GPU backend and on the CPU."""
    gpu(device, request)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((32, 6)).astype(np.float32),
             "label": rng.integers(0, 3, 32).astype(np.int32), LR_INPUT: np.float32(0.1)}
    model = netlang.compile(MLP)
    train = Model(build_train_graph(model, make_optimizer("sgd", {"lr": 0.1}), 0.0, DType.f16))
    losses = {}
    for where in ("cpu", "gpu"):
        session = train.session(where, seed=1)
        losses[where] = [float(session.run("xent", feeds, training=True, updates=True))
                          for _ in range(5)]
    assert losses["gpu"][-1] < losses["gpu"][0]
    np.testing.assert_allclose(losses["gpu"], losses["cpu"], rtol=2e-3)


@pytest.mark.parametrize("device", GPUS)
def test_bf16_on_the_gpu_is_one_error_at_its_line(device, request):
    gpu(device, request)
    spec = ("network n {\n  input x: f32[N, 2]\n  h = cast(x, dtype=bf16)\n"
            "  output y = cast(h * 2, dtype=f32)\n}\n")
    session = netlang.compile(spec).session("gpu")
    with pytest.raises(DeviceError) as err:
        session.run("y", {"x": np.ones((2, 2), np.float32)})
    assert str(err.value).splitlines()[0] == (
        "<string>:3:7: device error: bf16 runs on the CPU only: CuPy has no bfloat16")
    assert err.value.hint == "on the GPU use f16: precision mixed(dtype=f16), cast(x, dtype=f16)"
