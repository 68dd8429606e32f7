"""Per-layer parameters, FLOPs and activation bytes (what ``netlang summary`` prints)."""
from __future__ import annotations

from pathlib import Path

from netlang.frontend import load_spec
from netlang.frontend.summary import format_bytes, summarize

SPECS = Path(__file__).resolve().parents[2] / "specs"


def summary_of(name: str, batch: int = 1):
    return summarize(load_spec((SPECS / name).read_text(), name), batch)


def row(summary, name: str):
    (found,) = [r for r in summary.rows if r.name == name]
    return found


def test_mnist_parameter_total_is_the_seeds():
    s = summary_of("mnist.net")
    assert (s.trainable, s.non_trainable, s.total_params) == (1_111_946, 0, 1_111_946)
    assert [row(s, n).params for n in ("conv1", "conv2", "dense1", "dense2")] == [
        832, 51_264, 1_049_600, 10_250]


def test_flops_per_example_use_each_ops_rule():
    s = summary_of("mnist.net")
    conv = 2 * 24 * 24 * 32 * 5 * 5 * 1
    assert row(s, "conv1").flops == conv + 24 * 24 * 32          # plus the bias add
    assert row(s, "dense2").flops == 2 * 1024 * 10 + 10
    assert row(s, "flatten1").flops == 0 and row(s, "image").flops == 0


def test_activation_bytes_scale_with_the_batch():
    one, many = summary_of("mnist.net", 1), summary_of("mnist.net", 64)
    assert row(one, "conv1").activation_bytes == 24 * 24 * 32 * 4
    assert row(many, "conv1").activation_bytes == 64 * 24 * 24 * 32 * 4
    assert row(many, "argmax1").activation_bytes == 64 * 8


def test_batchnorm_statistics_are_non_trainable():
    s = summary_of("residual.net")
    bn = row(s, "residual1/bn1")
    assert (bn.params, bn.state) == (32, 32)
    assert s.non_trainable == sum(r.state for r in s.rows) > 0


def test_rows_know_the_user_names():
    s = summary_of("mnist.net")
    assert row(s, "dense2").names == ("logits",)
    assert row(s, "softmax1").names == ("probs",)


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 2**20, 3 * 2**30)] == [
        "0 B", "1023 B", "1 KiB", "1.5 KiB", "5 MiB", "3 GiB"]
