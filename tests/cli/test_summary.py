"""``netlang summary``: the Keras-like table and its totals."""
from __future__ import annotations

from pathlib import Path

from netlang.cli import main

SPECS = Path(__file__).resolve().parents[2] / "specs"


def summary(capsys, *args: str) -> list[str]:
    assert main(["summary", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_mnist_totals(capsys):
    lines = summary(capsys, str(SPECS / "mnist.net"))
    assert lines[0] == "network mnist (activations at batch 64)"   # the train section's
    assert "Total params:         1,111,946" in lines
    assert "Trainable params:     1,111,946" in lines
    assert "Non-trainable params: 0" in lines


def test_rows_have_shape_params_flops_and_bytes(capsys):
    lines = summary(capsys, str(SPECS / "mnist.net"), "--batch", "2")
    header = next(line for line in lines if line.startswith("Layer"))
    assert header.split() == ["Layer", "Kind", "Output", "shape", "Params", "FLOPs/example",
                              "Activations"]
    conv1 = next(line for line in lines if line.startswith("conv1 "))
    assert conv1.split() == ["conv1", "conv2d", "f32[N,24,24,32]", "832", "940,032", "144",
                             "KiB"]
    assert lines[0] == "network mnist (activations at batch 2)"


def test_batch_must_be_positive(capsys):
    assert main(["summary", str(SPECS / "calc.net"), "--batch", "0"]) == 1
    assert "--batch must be at least 1" in capsys.readouterr().err
