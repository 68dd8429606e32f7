"""``netlang check``: one line per layer, warnings, and errors with exit status 1."""
from __future__ import annotations

from pathlib import Path

from netlang.cli import main

SPECS = Path(__file__).resolve().parents[2] / "specs"


def test_check_lists_every_layer(capsys):
    assert main(["check", str(SPECS / "mnist_small.net")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("mnist_small.net: network mnist_small, 17 layers, 4,266 parameters")
    assert out[1:12] == [
        "  image                   input                  f32[N,28,28,1]",
        "  label                   input                  i32[N]",
        "  conv1                   conv2d                 f32[N,28,28,4]",
        "  relu1                   relu                   f32[N,28,28,4]",
        "  maxpool1                maxpool                f32[N,14,14,4]",
        "  conv2                   conv2d                 f32[N,14,14,8]",
        "  relu2                   relu                   f32[N,14,14,8]",
        "  maxpool2                maxpool                f32[N,7,7,8]",
        "  flatten1                flatten                f32[N,392]",
        "  dense1                  dense                  f32[N,10]       logits",
        "  softmax1                softmax                f32[N,10]       probs",
    ]


def test_check_prints_errors_and_fails(tmp_path, capsys):
    bad = tmp_path / "bad.net"
    bad.write_text("network n {\n  input x: f32[N, 28, 28, 1]\n  y = x |> dense(10)\n}\n")
    assert main(["check", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"{bad}:3:12: shape error: dense expects a 2-D input [N, features], got "
        "f32[N,28,28,1]\n"
        "      y = x |> dense(10)\n"
        "               ^^^^^^^^^\n"
        "hint: add flatten before dense?\n")


def test_check_warns_about_an_unused_input_and_passes(tmp_path, capsys):
    spec = tmp_path / "warn.net"
    spec.write_text("network n {\n  input x: f32[N, 2]\n  input unused: i32[N]\n"
                    "  output y = relu(x)\n}\n")
    assert main(["check", "--quiet", str(spec)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{spec}:3:9: warning: input 'unused' is never used\n")


def test_check_names_a_missing_file(capsys):
    assert main(["check", "no/such/spec.net"]) == 1
    assert "cannot read spec 'no/such/spec.net'" in capsys.readouterr().err


def test_every_shipped_spec_checks(capsys):
    for path in sorted(SPECS.glob("*.net")):
        assert main(["check", "-q", str(path)]) == 0, path.name
    assert capsys.readouterr().err == ""
