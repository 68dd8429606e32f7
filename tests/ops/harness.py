"""Table-driven op checks (in the spirit of JAX's lax_autodiff_test).

Each op family has a ``tests/ops/cases_<family>.py`` that registers, per op, a ``draw``
function: given hypothesis's ``draw``, it returns ``(inputs, attrs)`` — the NumPy input
arrays and the op's attributes.  The table-driven tests then check, for every op:

(a) the shape rule's type equals the kernel's output shape and dtype;
(b) the VJP (built as IR by autodiff and run) equals central finite differences in float64.

Ops with kinks (relu, max, maxpool) draw inputs away from the kink.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType
from netlang.ops.builder import Builder
from netlang.ops.registry import get_op
from netlang.passes.autodiff import gradients
from netlang.runtime.backend import CPU_REFERENCE
from netlang.runtime.executor import Executor
from netlang.runtime.program import plan
from netlang.runtime.state import State


@dataclass
class Case:
    op: str
    draw: Callable            # (draw) -> (list[np.ndarray], dict)
    grad: bool = True         # check the VJP (False for ops without a gradient)
    wrt: tuple | None = None  # inputs to differentiate (default: every float input)
    rtol: float = 1e-5
    atol: float = 1e-7
    name: str = ""


CASES: dict[str, list[Case]] = {}


def op_case(op: str, **options):
    """Register a drawing function as a property case for ``op``."""
    def register(fn):
        CASES.setdefault(op, []).append(Case(op, fn, name=fn.__name__, **options))
        return fn
    return register


# -- drawing helpers -----------------------------------------------------------------------

def shape(draw, min_rank: int = 0, max_rank: int = 3, min_side: int = 1,
          max_side: int = 4) -> tuple[int, ...]:
    return tuple(draw(st.lists(st.integers(min_side, max_side), min_size=min_rank,
                               max_size=max_rank)))


def array(draw, shp, lo: float = -2.0, hi: float = 2.0, away_from: float | None = None,
          gap: float = 0.05, dtype=np.float64) -> np.ndarray:
    """A float array drawn from a seed; values within ``gap`` of ``away_from`` are pushed out."""
    seed = draw(st.integers(0, 2**31 - 1))
    out = np.random.default_rng(seed).uniform(lo, hi, size=shp)
    if away_from is not None:
        near = np.abs(out - away_from) < gap
        out = np.where(near, away_from + np.where(out >= away_from, gap, -gap) * 2, out)
    return np.asarray(out, dtype=dtype)


def distinct(draw, shp, lo: float = -2.0, hi: float = 2.0, gap: float = 0.05) -> np.ndarray:
    """Values pairwise at least ``gap`` apart (for max/argmax/maxpool: no ties, no kinks)."""
    n = int(np.prod(shp)) if shp else 1
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    values = lo + gap * rng.permutation(n) + rng.uniform(0, gap / 4, n)
    return values.reshape(shp).astype(np.float64)


# -- running -------------------------------------------------------------------------------

def _types(arrays) -> list[TensorType]:
    return [TensorType(DType.of(a.dtype), tuple(a.shape)) for a in arrays]


def build(op: str, arrays, attrs) -> tuple[Builder, list[int], int]:
    b = Builder(Graph(name=op))
    ins = [b.input(f"x{i}", t) for i, t in enumerate(_types(arrays))]
    y = b.op(op, *ins, **attrs)
    return b, ins, y


def run(graph: Graph, fetches: list[int], feeds: dict[int, np.ndarray], seed: int = 0):
    program = plan(graph, fetches, set(feeds))
    executor = Executor(CPU_REFERENCE, np.random.default_rng(seed))
    return executor.run(program, feeds, State(CPU_REFERENCE))


def call_kernel(op: str, arrays, attrs, seed: int = 0):
    opdef = get_op(op)
    full = {**{k: v for k, v in opdef.attrs.items()}, **attrs}
    if opdef.random:
        return opdef.kernel(np, *arrays, rng=np.random.default_rng(seed), **full)
    return opdef.kernel(np, *arrays, **full)


def check_shape_rule(case: Case, arrays, attrs) -> None:
    b, ins, y = build(case.op, arrays, attrs)
    (out,) = run(b.graph, [y], dict(zip(ins, arrays)))
    declared = b.graph.nodes[y].type
    assert tuple(out.shape) == declared.shape, f"{case.op}: rule {declared}, kernel {out.shape}"
    assert DType.of(out.dtype) == declared.dtype, (
        f"{case.op}: rule says {declared.dtype}, kernel gives {out.dtype}")


def numeric_vjp(op: str, arrays, attrs, cotangent, index: int, eps: float = 1e-6):
    """d sum(op(x) * cotangent) / d x[index] by central differences, element by element."""
    x = arrays[index].astype(np.float64)
    grad = np.zeros_like(x)
    for pos in np.ndindex(x.shape):
        vals = []
        for sign in (1, -1):
            moved = x.copy()
            moved[pos] += sign * eps
            args = list(arrays)
            args[index] = moved
            vals.append(np.sum(np.asarray(call_kernel(op, args, attrs), np.float64) * cotangent))
        grad[pos] = (vals[0] - vals[1]) / (2 * eps)
    return grad


def check_vjp(case: Case, arrays, attrs, seed: int = 0) -> None:
    arrays = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays]
    b, ins, y = build(case.op, arrays, attrs)
    out_type = b.graph.nodes[y].type
    if not out_type.dtype.is_float:
        return
    wrt = case.wrt if case.wrt is not None else tuple(
        i for i, a in enumerate(arrays) if a.dtype.kind == "f")
    cot = np.random.default_rng(seed).uniform(-1, 1, size=out_type.shape)
    seed_in = b.input("cotangent", out_type)
    grads = gradients(b, y, [ins[i] for i in wrt], seed=seed_in)
    feeds = {**dict(zip(ins, arrays)), seed_in: cot}
    for i, g in zip(wrt, grads):
        expected = numeric_vjp(case.op, arrays, attrs, cot, i)
        if g is None:
            assert np.allclose(expected, 0, atol=case.atol), f"{case.op}: no VJP for input {i}"
            continue
        (got,) = run(b.graph, [g], feeds)
        assert got.shape == arrays[i].shape, f"{case.op}: gradient shape {got.shape}"
        np.testing.assert_allclose(got, expected, rtol=case.rtol, atol=case.atol,
                                   err_msg=f"{case.op} VJP w.r.t. input {i}, attrs {attrs}")
