"""``netlang ir``: the IR text of a spec, as compiled or after a named pass."""
from __future__ import annotations

from pathlib import Path

import netlang
from netlang.cli import main

SPECS = Path(__file__).resolve().parents[2] / "specs"
GOLDEN = Path(__file__).resolve().parents[1] / "frontend" / "golden"


def ir(capsys, *args: str) -> str:
    assert main(["ir", *args]) == 0
    return capsys.readouterr().out


def test_ir_prints_the_compiled_graph(capsys):
    path = str(SPECS / "calc.net")
    assert ir(capsys, path) == netlang.compile(path).ir()


def test_ir_after_lowering_is_the_golden_text(capsys):
    text = ir(capsys, str(SPECS / "mnist.net"), "--after", "lowered")
    assert text == (GOLDEN / "mnist.ir").read_text()
    assert "%4: f32[N,24,24,32] = conv2d(%image, %conv1/W) {dilation=(1,1), padding=VALID, " \
           "stride=(1,1)}  # mnist.net:9:8" in text


def test_ir_without_spans(capsys):
    text = ir(capsys, str(SPECS / "calc.net"), "--after", "lowered", "--no-spans")
    assert "#" not in text
    assert "  %1: f32[] = mul(%x, %x)\n" in text


def test_ir_of_the_training_graph_has_gradients(capsys):
    path = str(SPECS / "spiral.net")
    assert (ir(capsys, path, "--train", "--after", "gradients")
            == netlang.compile(path).ir(training=True))


def test_ir_names_an_unknown_pass(capsys):
    assert main(["ir", str(SPECS / "calc.net"), "--after", "lowerd"]) == 1
    assert "no pass named 'lowerd'" in capsys.readouterr().err


def test_ir_train_shows_the_optimizer_updates_and_its_stage(capsys):
    """ir --train is the training step (the optimizer's updates included); --after optimizer
    names that stage, --after gradients stops before it."""
    from netlang.cli import main

    assert main(["ir", "specs/spiral.net", "--train", "--no-spans"]) == 0
    full = capsys.readouterr().out
    assert "  update dense3/b = %" in full and "  update adam/dense3/b/m = %" in full
    assert main(["ir", "specs/spiral.net", "--train", "--after", "optimizer", "--no-spans"]) == 0
    assert capsys.readouterr().out == full
    assert main(["ir", "specs/spiral.net", "--train", "--after", "gradients"]) == 0
    assert "update dense3/b" not in capsys.readouterr().out
    assert main(["ir", "specs/spiral.net", "--train", "--after", "nope"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "hint: passes: lowered, autodiff, gradients, optimizer, bind_mode, fold, simplify, "
        "cse, settle, dce, conv_bias, batchnorm, relu_mask, fusion")


def test_cast_to_an_unknown_dtype_is_an_argument_error(tmp_path, capsys):
    from netlang.cli import main

    spec = tmp_path / "c.net"
    spec.write_text("network n { input x: f32[3]\n output y = cast(x, dtype=f8) }\n")
    assert main(["check", str(spec)]) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        f"{spec}:2:13: argument error: cast: unknown dtype 'f8'")
