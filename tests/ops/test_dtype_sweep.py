"""Every op over every dtype combination: what the shape rule infers is what the kernel makes.

For each property case (``tests/ops/cases_*.py``) the inputs are re-typed to every combination
of f32, f64, i32, i64 and bool.  The shape rule either refuses a combination with a spec error
(``ShapeError``, ``ArgumentError``: a located message at ``check``) or accepts it; an accepted
one runs the reference NumPy kernel (``get_op(name).kernel(np, *arrays, **attrs)``), which must
not fail and must return exactly the inferred dtype and shape.  Issue 14, item 11.

Size: 102 cases (every op with a kernel) x 2 drawn examples x 5**inputs dtype combinations
= 13,320 combinations, of which 1,690 the shape rules accept and run.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from netlang.errors import NetlangError, ShapeError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType
from netlang.ops.builder import Builder
from netlang.ops.registry import all_ops, get_op
from tests.ops.harness import CASES, call_kernel
from tests.ops.test_op_properties import NOT_KERNELS  # also loads every cases_*.py

DTYPES = (DType.f32, DType.f64, DType.i32, DType.i64, DType.bool)
SWEPT = [c for cases in CASES.values() for c in cases if get_op(c.op).kernel is not None]
SETTINGS = settings(max_examples=2, deadline=None, derandomize=True, phases=[Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TRIED = {"combinations": 0, "accepted": 0}


def retype(a: np.ndarray, dtype: DType) -> np.ndarray:
    """The drawn array as ``dtype``: integers keep integer values, bools are ``a != 0``."""
    if dtype is DType.bool:
        return np.asarray(a) != 0
    if dtype.is_int and np.asarray(a).dtype.kind == "f":
        with np.errstate(invalid="ignore"):     # all_finite's cases hold inf and nan
            return np.round(a).astype(dtype.numpy)
    return np.asarray(a).astype(dtype.numpy)


def inferred(op: str, arrays, attrs) -> TensorType | None:
    """The shape rule's type, or None when it refuses with a spec error."""
    b = Builder(Graph(name=op))
    ins = [b.input(f"x{i}", TensorType(DType.of(a.dtype), tuple(a.shape)))
           for i, a in enumerate(arrays)]
    try:
        return b.type_of(b.op(op, *ins, **attrs))
    except NetlangError:
        return None


def check_combination(op: str, arrays, attrs) -> None:
    TRIED["combinations"] += 1
    declared = inferred(op, arrays, attrs)   # any exception but a spec error fails here
    if declared is None:
        return
    TRIED["accepted"] += 1
    types = ", ".join(str(DType.of(a.dtype)) for a in arrays)
    with np.errstate(all="ignore"):
        out = np.asarray(call_kernel(op, arrays, attrs))
    assert DType.of(out.dtype) == declared.dtype, (
        f"{op}({types}): the rule infers {declared.dtype}, the kernel makes {out.dtype}")
    assert tuple(out.shape) == declared.shape, (
        f"{op}({types}): the rule infers {declared}, the kernel makes shape {out.shape}")


@pytest.mark.parametrize("case", SWEPT, ids=lambda c: f"{c.op}-{c.name}")
@SETTINGS
@given(data=st.data())
def test_inferred_dtype_is_executed_dtype(case, data):
    arrays, attrs = case.draw(data.draw)
    arrays = [np.asarray(a) for a in arrays]
    for dtypes in itertools.product(DTYPES, repeat=len(arrays)):
        check_combination(case.op, [retype(a, d) for a, d in zip(arrays, dtypes)], attrs)


def test_the_sweep_tries_every_op():
    assert set(all_ops()) - NOT_KERNELS <= {c.op for c in SWEPT}


# The four mismatches issue 14 names, pinned one by one.
F32, F64, I32 = DType.f32, DType.f64, DType.i32


@pytest.mark.parametrize("op", ["relu_grad", "leaky_relu_grad", "elu_grad"])
def test_activation_gradients_compute_in_the_cotangents_dtype(op):
    """3 cases: a cotangent and a value of different dtypes is a shape error at check."""
    a = np.ones((2, 3), np.float32)
    assert inferred(op, [a, a], {}) == TensorType(F32, (2, 3))
    check_combination(op, [a, a], {})
    b = Builder(Graph(name=op))
    with pytest.raises(ShapeError) as err:
        b.op(op, b.input("g", TensorType(F32, (2, 3))), b.input("y", TensorType(F64, (2, 3))))
    assert err.value.message == f"{op}: the cotangent is f32[2,3] but an operand is f64[2,3]"
    assert err.value.hint == "a gradient op computes in one float dtype: cast them alike"


def test_select_of_mixed_dtypes_runs_in_the_promoted_dtype():
    cond = np.array([True, False])
    a, c = np.array([1.5, 2.5], np.float32), np.array([3, 4], np.int32)
    assert inferred("select", [cond, a, c], {}) == TensorType(F32, (2,))
    out = call_kernel("select", [cond, a, c], {})
    assert out.dtype == np.float32 and out.tolist() == [1.5, 4.0]
