"""f16 and bf16 (ml_dtypes) through every op: the dtype the rule infers is the kernel's.

Each property case with its float inputs re-typed to a half dtype (integer and bool inputs
stay): the shape rule accepts or refuses with a spec error; an accepted one runs the
reference kernel, which must return exactly the inferred dtype and shape (NumPy and
ml_dtypes widen in places: a bf16 matmul gives f32, f16 with an int32 gives f64).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from netlang.ir.types import DType
from netlang.runtime.backend import get_backend
from netlang.runtime.executor import Executor
from netlang.runtime.program import plan
from netlang.runtime.state import State
from tests.ops.harness import build, call_kernel
from tests.ops.test_dtype_sweep import SWEPT, inferred

SETTINGS = settings(max_examples=2, deadline=None, derandomize=True, phases=[Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("dtype", [DType.f16, DType.bf16], ids=str)
@pytest.mark.parametrize("case", SWEPT, ids=lambda c: f"{c.op}-{c.name}")
@SETTINGS
@given(data=st.data())
def test_half_inputs_give_the_inferred_dtype(case, dtype, data):
    arrays, attrs = case.draw(data.draw)
    arrays = [np.asarray(a) for a in arrays]
    arrays = [a.astype(dtype.numpy) if a.dtype.kind == "f" else a for a in arrays]
    declared = inferred(case.op, arrays, attrs)
    if declared is None:
        return
    with np.errstate(all="ignore"):
        out = np.asarray(call_kernel(case.op, arrays, attrs))
    assert DType.of(out.dtype) == declared.dtype, (
        f"{case.op}: the rule infers {declared.dtype}, the kernel makes {out.dtype}")
    assert tuple(out.shape) == declared.shape


@pytest.mark.parametrize("dtype", [DType.f16, DType.bf16], ids=str)
@pytest.mark.parametrize("case", SWEPT, ids=lambda c: f"{c.op}-{c.name}")
@SETTINGS
@given(data=st.data())
def test_the_default_cpu_kernels_keep_half_dtypes_too(case, dtype, data):
    """oneDNN, the generated loops and cpu_loops take f32 (and f64) only; for halves they
    decline and the reference runs, so the dtype is the rule's there as well."""
    arrays, attrs = case.draw(data.draw)
    arrays = [np.asarray(a) for a in arrays]
    arrays = [a.astype(dtype.numpy) if a.dtype.kind == "f" else a for a in arrays]
    if inferred(case.op, arrays, attrs) is None:
        return
    b, ins, y = build(case.op, arrays, attrs)
    program = plan(b.graph, [y], set(ins))
    executor = Executor(get_backend("cpu"), np.random.default_rng(0))
    with np.errstate(all="ignore"):
        (out,) = executor.run(program, dict(zip(ins, arrays)), State(get_backend("cpu")))
    declared = b.graph.nodes[y].type
    assert DType.of(out.dtype) == declared.dtype, (
        f"{case.op}: the rule infers {declared.dtype}, the default kernels make {out.dtype}")
