"""precision mixed: half-precision convolutions and matmuls, f32 master weights, and for f16
dynamic loss scaling; checked numerically against f32 training."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import netlang
from netlang.errors import SpecError
from netlang.ir.types import DType
from netlang.model import Model
from netlang.passes.autocast import autocast
from netlang.train.config import train_config
from netlang.train.optimizers import make_optimizer
from netlang.train.step import LR_INPUT, LossScale, build_train_graph

RNG = np.random.default_rng(0)
FEEDS = {"image": RNG.random((32, 28, 28, 1), dtype=np.float32),
         "label": RNG.integers(0, 10, 32).astype(np.int32), LR_INPUT: np.float32(1e-3)}


def session_for(mixed, spec="specs/mnist_small.net"):
    model = netlang.compile(spec)
    train = build_train_graph(model, make_optimizer("adam", {"lr": 1e-3}), mixed=mixed)
    return Model(train).session(seed=0)


def losses(session, steps=10):
    with np.errstate(all="ignore"):
        return [float(session.run("xent", FEEDS, training=True, updates=True))
                for _ in range(steps)]


def test_autocast_puts_only_the_gemms_in_half():
    graph = autocast(netlang.compile("specs/mnist_small.net").graph, DType.bf16)
    halves = sorted({n.op for n in graph if n.type.dtype is DType.bf16})
    assert halves == ["cast", "conv2d", "matmul"]
    assert all(graph.nodes[p].type.dtype is DType.f32 for p in graph.params.values())


@pytest.mark.parametrize("mixed", [DType.bf16, DType.f16], ids=str)
def test_mixed_training_follows_f32_training(mixed):
    reference = losses(session_for(None))
    session = session_for(mixed)
    got = losses(session)
    np.testing.assert_allclose(got, reference, rtol=2e-3)
    assert got[-1] < got[0] - 0.1
    assert session.state["conv1/W"].dtype == np.float32          # master weights
    state = {k: float(v) for k, v in session.state.arrays.items() if k.startswith("train/")}
    assert state == ({"train/loss_scale": LossScale.INITIAL, "train/clean_steps": 10.0}
                     if mixed is DType.f16 else {})


def test_an_overflowed_f16_step_is_skipped_and_halves_the_scale():
    session = session_for(DType.f16)
    session.state["train/loss_scale"] = np.float32(1e30)       # the f16 gradients overflow
    before = {k: v.copy() for k, v in session.state.arrays.items()}
    losses(session, steps=1)
    changed = [k for k in before if not np.array_equal(before[k], session.state[k])]
    assert changed == ["train/loss_scale"]
    assert float(session.state["train/loss_scale"]) == np.float32(5e29)


def test_the_scale_doubles_after_2000_clean_steps():
    session = session_for(DType.f16)
    session.state["train/loss_scale"] = np.float32(1024)
    session.state["train/clean_steps"] = np.float32(LossScale.GROWTH_EVERY - 1)
    losses(session, steps=1)
    assert float(session.state["train/loss_scale"]) == 2048
    assert float(session.state["train/clean_steps"]) == 0


def test_the_train_section_says_precision_mixed():
    text = pathlib.Path("specs/mnist_small.net").read_text()
    spec = text.replace(
        "train mnist_small {", "train mnist_small {\n  precision mixed(dtype=f16)")
    model = netlang.compile(spec)
    config = train_config(model.graph.spec.train, model.graph.name)
    assert config.mixed_dtype() is DType.f16
    plain = text.replace(
        "train mnist_small {", "train mnist_small {\n  precision mixed")
    assert train_config(netlang.compile(plain).graph.spec.train, "m").mixed_dtype() is DType.bf16


def test_netlang_train_runs_mixed_and_says_so(tmp_path):
    model = netlang.compile("""network tiny {
  input x: f32[N, 2]
  input label: i32[N]
  logits = x |> dense(16, activation=relu) |> dense(4)
  loss xent = mean(softmax_cross_entropy(logits, label))
}
train tiny { data spiral(points=30); optimizer adam(lr=1e-2); batch 16; epochs 2
             precision mixed(dtype=f16) }
""")
    lines = []
    result = model.fit(out=tmp_path / "run", say=lines.append, progress=False)
    assert lines[0].endswith(", mixed precision (f16)")
    assert result.history["xent"][1] < result.history["xent"][0]


def test_precision_that_is_not_a_name_is_a_spec_error():
    with pytest.raises(SpecError) as info:
        netlang.compile("network n {\n  input x: f32[N, 2]\n  output y = x\n}\n"
                        "train n { precision 1.5 }\n", "p.net")
    assert str(info.value).splitlines()[0] == (
        "p.net:5:21: argument error: precision must name one of f32, mixed, got the number 1.5")
    assert str(info.value).splitlines()[-1] == "hint: for example: precision mixed(dtype=bf16)"
