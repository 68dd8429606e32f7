"""An ONNX model as plain Python values: what ``export`` writes and ``import`` reads.

Keeping the translation in these terms (op type strings, attribute dicts, NumPy arrays)
leaves the ``onnx`` package to ``onnx_lib.py`` alone, which turns them into protobufs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_OPSET = 17      # the widest reach among runtimes and converters today
MIN_OPSET = 13          # Softmax over one axis, ReduceSum's axes as an input


@dataclass
class OnnxNode:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass
class OnnxValue:
    """A graph input or output: name, NumPy dtype and shape (ints, or strings for dynamic
    dims such as ``N``).  A read value that is not a tensor of a NumPy type (a sequence, an
    optional, float8) has dtype None."""

    name: str
    dtype: np.dtype | None
    shape: tuple


@dataclass
class OnnxGraph:
    name: str
    opset: int = DEFAULT_OPSET
    nodes: list[OnnxNode] = field(default_factory=list)
    inputs: list[OnnxValue] = field(default_factory=list)
    outputs: list[OnnxValue] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    doc: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    # every value's dtype and shape that ONNX shape inference knows (read models only)
    types: dict[str, OnnxValue] = field(default_factory=dict)

    def op_types(self) -> list[str]:
        return sorted({n.op_type for n in self.nodes})


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``, ... whichever is not yet in ``taken`` (which
    then holds it)."""
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name
