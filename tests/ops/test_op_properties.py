"""Every registered op: shape rule == kernel, VJP == finite differences (float64).

Cases live in ``tests/ops/cases_*.py``; a new op without a case fails ``test_every_op_has_a_case``.
"""
from __future__ import annotations

import importlib
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlang.ops.registry import all_ops, get_op
from tests.ops.harness import CASES, check_shape_rule, check_vjp

for _path in sorted(pathlib.Path(__file__).parent.glob("cases_*.py")):
    importlib.import_module(f"tests.ops.{_path.stem}")

# Ops that are not computations: sources the executor supplies, and markers passes remove.
NOT_KERNELS = {"input", "param", "state", "const", "mode", "grad"}

ALL_CASES = [c for cases in CASES.values() for c in cases]
SETTINGS = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_every_op_has_a_case():
    missing = sorted(set(all_ops()) - NOT_KERNELS - set(CASES))
    assert not missing, f"ops without a property case in tests/ops/cases_*.py: {missing}"


def test_every_differentiable_op_checks_its_vjp():
    skipped = sorted({c.op for c in ALL_CASES if not c.grad and get_op(c.op).vjp is not None})
    unchecked = [op for op in skipped if all(not c.grad for c in CASES[op])]
    assert not unchecked, f"differentiable ops whose VJP no case checks: {unchecked}"


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: f"{c.op}-{c.name}")
@SETTINGS
@given(data=st.data())
def test_shape_rule_matches_kernel(case, data):
    arrays, attrs = case.draw(data.draw)
    check_shape_rule(case, arrays, attrs)


@pytest.mark.parametrize("case", [c for c in ALL_CASES if c.grad],
                         ids=lambda c: f"{c.op}-{c.name}")
@SETTINGS
@given(data=st.data())
def test_vjp_matches_finite_differences(case, data):
    arrays, attrs = case.draw(data.draw)
    check_vjp(case, arrays, attrs)
