"""f16 and bf16 networks (seed 002's 32 -> 16 -> 32): types, casts, feeds and training."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import netlang
from netlang.model import Model
from netlang.runtime import executor
from netlang.train.optimizers import make_optimizer
from netlang.train.step import LR_INPUT, build_train_graph

HALF = """network h {
  input x: f32[N, 8, 8, 1]
  input label: i32[N]
  xh = cast(x, dtype=DT)
  logits = xh |> conv2d(4, kernel=3, padding=same) |> relu |> maxpool(2) |> batchnorm
    |> flatten |> dense(10)
  output probs = softmax(logits)
  output back = cast(probs, dtype=f32)
  loss xent = mean(softmax_cross_entropy(logits, label))
}"""

RNG = np.random.default_rng(0)
X = RNG.standard_normal((16, 8, 8, 1)).astype(np.float32)
LABEL = RNG.integers(0, 10, 16).astype(np.int32)


def train_losses(dtype: str, kernels: str, optimizer: str = "adam", steps: int = 6):
    model = netlang.compile(HALF.replace("DT", dtype))
    train = build_train_graph(model, make_optimizer(optimizer, {"lr": 1e-2}))
    session = Model(train).session(kernels=kernels, seed=0)
    feeds = {"x": X, "label": LABEL, LR_INPUT: np.float32(1e-2)}
    losses = [float(session.run("xent", feeds, training=True, updates=True))
              for _ in range(steps)]
    return losses, session


@pytest.mark.parametrize("dtype, numpy_dtype", [("f16", np.float16),
                                                ("bf16", ml_dtypes.bfloat16)])
def test_layers_after_a_cast_compute_and_keep_their_parameters_in_half(dtype, numpy_dtype):
    model = netlang.compile(HALF.replace("DT", dtype))
    assert str(model.types()["probs"]) == f"{dtype}[N,10]"
    assert str(model.types()["back"]) == "f32[N,10]"
    session = model.session()
    assert session.state["conv1/W"].dtype == numpy_dtype
    probs, back = session.run(["probs", "back"], {"x": X})
    assert probs.dtype == numpy_dtype and back.dtype == np.float32
    np.testing.assert_allclose(back.sum(axis=1), 1, atol=0.02)


def test_bf16_trains_and_the_default_kernels_give_the_reference_bits(capsys):
    executor._HALF_NOTED.clear()
    losses, session = train_losses("bf16", "default")
    assert losses[-1] < 0.6 * losses[0]
    assert session.state["dense1/W"].dtype == ml_dtypes.bfloat16
    assert capsys.readouterr().err.count(executor.HALF_NOTE) == 1      # said once
    reference, _ = train_losses("bf16", "numpy")
    assert losses == reference


def test_f16_trains_with_plain_gradient_descent():
    # (Adam's epsilon 1e-8 is 0 in f16: half weights need f32 master weights for it)
    losses, _ = train_losses("f16", "default", optimizer="sgd", steps=10)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_a_half_input_takes_float32_and_bfloat16_feeds():
    model = netlang.compile("network h {\n  input x: bf16[2]\n  output y = x * 2.0\n}")
    session = model.session()
    for fed in (np.array([1.5, 2], np.float32), np.array([1.5, 2], ml_dtypes.bfloat16)):
        y = session.run("y", {"x": fed})
        assert y.dtype == ml_dtypes.bfloat16 and y.astype(np.float32).tolist() == [3.0, 4.0]


def test_ml_dtypes_is_loaded_only_when_bf16_is_used():
    """Importing ml_dtypes takes ~0.6 s: a run without bf16 must not pay it."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, netlang\n"
            "s = netlang.compile('specs/mnist_small.net').session()\n"
            "s.run('probs', {'image': np.zeros((2, 28, 28, 1), np.float32)})\n"
            "print('ml_dtypes' in sys.modules)\n"
            "netlang.compile('network h {\\n input x: bf16[2]\\n output y = x * 2.0\\n}')\n"
            "print('ml_dtypes' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]
