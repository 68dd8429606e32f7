"""The shipped specs: each compiles through ``netlang.compile`` and checks clean, fast."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

import netlang
from netlang.frontend import load_spec

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.net"))
EXPECTED = {"calc", "counter", "fashion", "fashion_aug", "filters", "mnist", "mnist_aug",
            "mnist_fast", "mnist_seed000", "mnist_seed004", "mnist_small", "residual", "spiral",
            "srcnn"}
UNTRAINED = {"calc", "counter", "filters"}     # seed-002/003 programs: run, not trained


def test_the_expected_specs_ship():
    assert {p.stem for p in SPECS} == EXPECTED


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_compiles_clean(path):
    model = netlang.compile(str(path))
    assert model.warnings == []
    assert model.graph.outputs


@pytest.mark.parametrize("path", [p for p in SPECS if p.stem not in UNTRAINED],
                         ids=lambda p: p.stem)
def test_trainable_specs_have_a_loss_and_a_train_section(path):
    graph = load_spec(path.read_text(), str(path))
    assert graph.loss is not None
    assert {"data", "optimizer", "batch", "epochs"} <= set(graph.spec.train)


def test_compile_accepts_spec_text():
    model = netlang.compile("network t {\n  input x: f32[]\n  output y = x * 2\n}\n")
    assert str(model.types()["y"]) == "f32[]"


def test_parsing_and_lowering_mnist_is_fast():
    text = (SPECS[0].parent / "mnist.net").read_text()
    load_spec(text, "mnist.net")  # builds the parser once
    start = time.perf_counter()
    for _ in range(5):
        load_spec(text, "mnist.net")
    per_spec = (time.perf_counter() - start) / 5
    assert per_spec < 0.05, f"parse + lower took {per_spec * 1000:.1f} ms"
