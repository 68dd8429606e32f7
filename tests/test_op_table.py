"""tools/op_table.py: every op's facets on one table, pinned by a golden file.

A change to an op's arity, attributes, shape rule, VJP, kernels or flags shows in the diff of
tests/golden/op_table.txt (regenerate with ``python3 tools/op_table.py --write``)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from netlang.ops.registry import all_ops

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location("op_table", ROOT / "tools" / "op_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_op_table_matches_its_golden_file():
    tool = load_tool()
    assert tool.table() == tool.GOLDEN.read_text(), (
        "the op table changed: review `python3 tools/op_table.py --write` and its diff")


def test_every_op_is_on_the_table_with_its_facets():
    text = load_tool().table()
    for name in all_ops():
        assert f"\n{name}/" in "\n" + text, name
    assert "add/2()  shape: binary_rule\n    vjp: sum_to_like\n" in text
    assert "kernels: xp cpu:generated  pure fold comm expr `{0} + {1}`" in text
    assert ("maxpool/1(window=(2, 2), stride=None, padding='VALID', dilation=None)  shape: "
            "maxpool_shape\n"
            "    vjp: maxpool_grad\n    kernels: xp cpu:loops+onednn gpu  pure fold") in text
    assert "grad/2()  shape: <lambda>\n    -- expanded by the autodiff pass" in text
    assert "conv2d/2(stride=(1, 1), padding='VALID', dilation=(1, 1), groups=None)" in text
