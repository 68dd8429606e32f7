"""Inputs with default values and a dropout rate fed at run time (seed 004's keep_prob)."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.cli import main
from netlang.errors import ExecutionError, SpecError
from netlang.train.feeding import user_inputs

FED = """network d {
  input x: f32[N, 1000]
  input rate: f32[] = 0.5
  output y = dropout(x, rate)
}"""

FIXED = """network d {
  input x: f32[N, 1000]
  output y = dropout(x, 0.5)
}"""

X = np.ones((4, 1000), np.float32)


@pytest.mark.parametrize("kernels", ["numpy", "default"])
def test_a_fed_rate_draws_the_masks_a_fixed_rate_draws(kernels):
    fed = netlang.compile(FED).session(seed=7, kernels=kernels)
    fixed = netlang.compile(FIXED).session(seed=7, kernels=kernels)
    for _ in range(2):
        np.testing.assert_array_equal(fed.run("y", {"x": X}, training=True),
                                      fixed.run("y", {"x": X}, training=True))


def test_one_compiled_step_serves_every_rate():
    model = netlang.compile(FED)
    session = model.session(seed=1)
    for rate in (0.5, 0.2, 0.0):
        y = session.run("y", {"x": X, "rate": rate}, training=True)
        assert abs((y == 0).mean() - rate) < 0.05 and y.max() == np.float32(1 / (1 - rate))
    assert len(model._programs) == 1
    np.testing.assert_array_equal(session.run("y", {"x": X, "rate": 0.9}), X)  # eval: no drop


def test_a_rate_outside_0_1_stops_the_run_naming_the_op():
    session = netlang.compile(FED, "d.net").session()
    with pytest.raises(ExecutionError) as info:
        session.run("y", {"x": X, "rate": 1.5}, training=True)
    assert str(info.value).splitlines()[0] == (
        "d.net:4:14: execution error: the dropout rate is 1.5, outside [0, 1)")


def test_an_input_with_a_default_is_fed_it_unless_given(capsys):
    spec = "network d {\n  input x: f32[2]\n  input s: f32[] = 2\n  output y = x * s\n}"
    session = netlang.compile(spec).session()
    assert session.run("y", {"x": [1.0, 2.0]}).tolist() == [2.0, 4.0]
    assert session.run("y", {"x": [1.0, 2.0], "s": 3}).tolist() == [3.0, 6.0]
    assert user_inputs(netlang.compile(spec).graph) == ["x"]   # data never feeds s


@pytest.mark.parametrize("spec, message", [
    ("network d {\n  input r: f32[N] = 0.5\n  output y = r\n}",
     "d.net:2:12: shape error: an input with a default value needs a fixed shape, got f32[N]"),
    ("network d {\n  input r: f32[2] = [1, 2, 3]\n  output y = r\n}",
     "d.net:2:21: shape error: the value of 'r' is shaped [3], but 'r' is f32[2]"),
    (("network d {\n  input x: f32[N, 4]\n  input r: f32[2] = 0.5\n"
     "  output y = dropout(x, r)\n}"),
     ("d.net:4:14: argument error: a dropout rate given as a tensor must be a float scalar, "
     "got f32[2]")),
])
def test_bad_defaults_and_rates_are_spec_errors(spec, message):
    with pytest.raises(SpecError) as info:
        netlang.compile(spec, "d.net")
    assert str(info.value).splitlines()[0] == message


def test_netlang_run_uses_the_default(tmp_path, capsys):
    path = tmp_path / "d.net"
    path.write_text("network d {\n  input x: f32[2]\n  input s: f32[] = 2\n  output y = x * s\n}")
    assert main(["run", str(path), "--fetch", "y", "--feed", "x=[1,2]"]) == 0
    assert capsys.readouterr().out == "y = [2., 4.]\n"


def test_training_feeds_the_data_and_leaves_the_rate_at_its_default(tmp_path):
    model = netlang.compile("""network tiny {
  input x: f32[N, 2]
  input rate: f32[] = 0.2
  input label: i32[N]
  logits = x |> dense(16, activation=relu) |> dropout(rate) |> dense(4)
  loss xent = mean(softmax_cross_entropy(logits, label))
}
train tiny { data spiral(points=30); optimizer adam(lr=1e-2); batch 16; epochs 1 }
""")
    result = model.fit(out=tmp_path / "run", say=lambda line: None, progress=False)
    assert len(result.history["xent"]) == 1 and np.isfinite(result.history["xent"][0])
