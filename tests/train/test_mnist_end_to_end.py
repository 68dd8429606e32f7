"""End to end on real MNIST: fetch and verify the idx files (user cache, else npm pack), train
seed 000's small CNN (specs/mnist_small.net) for one epoch on a 30,000-image subset, and
measure the full 10,000-image test set: 92.2% measured, 90% asserted; about 20 s on two
cores.  The full recipes' numbers are measured outside CI (README)."""
from __future__ import annotations

import json
from pathlib import Path

from netlang.cli import main

SPEC = Path(__file__).resolve().parents[2] / "specs" / "mnist_small.net"


def test_mnist_small_cnn_learns_real_mnist(tmp_path, capsys):
    code = main(["train", str(SPEC), "--epochs", "1", "--limit", "30000",
                 "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0, out
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").open()]
    test = next(r for r in records if r["event"] == "test")
    assert test["accuracy"] >= 0.90, out
    assert code == 0 and main(["eval", str(SPEC), "--checkpoint",
                               str(tmp_path / "run" / "last.ckpt")]) == 0
    evaluated = capsys.readouterr().out
    assert evaluated.startswith("test (10000 examples, epoch 1): xent ")
    assert f"accuracy {test['accuracy']:.4f}" in evaluated
