"""float32 stays float32, and every op counts its FLOPs (what ``netlang summary`` shows).

Reuses the property cases with their float inputs cast to float32: the shape rule then says
f32, and the kernel must agree (NumPy silently widens in places: int32 sums, f32 / int64).
Covers the families named in FAMILIES; add a module there once its kernels keep f32.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlang.ir.types import Sym
from netlang.ops.registry import get_op
from tests.ops import test_op_properties  # noqa: F401  (loads every cases_*.py)
from tests.ops.harness import CASES, build, check_shape_rule

FAMILIES = {"netlang.ops.reduce", "netlang.ops.shape", "netlang.ops.linalg",
            "netlang.ops.loss", "netlang.ops.activations"}
NEW_ELEMENTWISE = {"abs", "sign", "maximum", "minimum", "pow", "rsqrt", "greater", "less"}


def covered(op: str) -> bool:
    kernel = get_op(op).kernel
    return op in NEW_ELEMENTWISE or getattr(kernel, "__module__", None) in FAMILIES


OUR_CASES = [c for cases in CASES.values() for c in cases if covered(c.op)]
SETTINGS = settings(max_examples=6, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def to_f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) if a.dtype == np.float64 else a


@pytest.mark.parametrize("case", OUR_CASES, ids=lambda c: f"{c.op}-{c.name}")
@SETTINGS
@given(data=st.data())
def test_float32_in_float32_out(case, data):
    arrays, attrs = case.draw(data.draw)
    check_shape_rule(case, [to_f32(np.asarray(a)) for a in arrays], attrs)


@pytest.mark.parametrize("case", OUR_CASES, ids=lambda c: f"{c.op}-{c.name}")
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_every_op_counts_flops(case, data):
    arrays, attrs = case.draw(data.draw)
    b, ins, y = build(case.op, arrays, attrs)
    node = b.graph.nodes[y]
    opdef = get_op(case.op)
    assert opdef.flops is not None, f"{case.op} has no flops rule"
    flops = opdef.flops(node.type, *[b.type_of(i) for i in ins], **node.attrs)
    assert isinstance(flops, (int, Sym)) and not isinstance(flops, bool)
    assert flops >= 0 if isinstance(flops, int) else flops.coef > 0


def test_the_families_are_covered():
    assert {"sum", "matmul", "reshape", "softmax", "softmax_cross_entropy", "abs"} <= {
        c.op for c in OUR_CASES}
