"""Memory planning: liveness and the peak activation bytes with and without the plan."""
from __future__ import annotations

import numpy as np

from netlang.compiler import memory_report
from netlang.ir.types import DType, dim_mul, sym
from netlang.runtime import program
from netlang.runtime.backend import CPU_REFERENCE, Backend
from netlang.runtime.cpu_kernels import cpu_factories
from netlang.runtime.memory import human_bytes, last_uses, plan_memory_usage
from tests.passes.util import builder, t

N = sym("N")


def chain():
    """x -> exp -> sin -> cos: each activation is f32[N,10], 40*N bytes."""
    b = builder()
    x = b.input("x", t(N, 10))
    b.graph.outputs["y"] = b.cos(b.sin(b.exp(x)))
    return b.graph


def test_a_chain_holds_two_activations_at_a_time():
    plan = plan_memory_usage(chain(), batch=8)
    assert (plan.peak_bytes, plan.unplanned_bytes, plan.values) == (640, 960, 3)


def test_fan_out_keeps_a_value_until_its_last_user():
    b = builder()
    x = b.input("x", t(N, 10))
    a = b.exp(x)
    b.graph.outputs["d"] = b.add(b.sin(a), b.cos(a))
    plan = plan_memory_usage(b.graph, batch=8)
    # while cos runs, a, sin(a) and cos(a) are alive
    assert (plan.peak_bytes, plan.unplanned_bytes) == (960, 1280)
    assert plan.peak_step.op == "cos"


def test_symbols_bind_to_the_batch_and_sources_are_not_activations():
    b = builder()
    x = b.input("x", t(dim_mul(N, 2), 3, dtype=DType.f64))
    w = b.param("w", t(3), init=("zeros",))
    b.graph.outputs["y"] = b.mul(x, w)
    plan = plan_memory_usage(b.graph, batch=5)
    assert plan.peak_bytes == plan.unplanned_bytes == 2 * 5 * 3 * 8


def test_outputs_and_updates_are_never_freed():
    b = builder()
    x = b.input("x", t(N))
    s = b.state("s", t(4))
    a = b.exp(x)
    b.graph.outputs.update(a=a, c=b.sin(a))
    b.update(s, b.exp(s))
    plan = plan_memory_usage(b.graph, batch=4)
    assert plan.peak_bytes == plan.unplanned_bytes == 16 + 16 + 16


def test_report_states_both_numbers():
    report = memory_report(chain(), batch=64, backend=CPU_REFERENCE)
    assert report.summary == (
        "peak activation memory at batch 64: 5,120 B (5.00 KiB) with the plan (each value "
        "freed after its last use), 7,680 B (7.50 KiB) without (every value kept to the end); "
        "saves 2,560 B (2.50 KiB)")
    assert report.extra["plan"].peak_bytes == 5120
    assert report.items == (
        "3 activations; the peak is reached at sin",
        ("arena: 0 B in 0 slots for 0 of 3 activations (at most 0 B of them alive at "
         "once); kernels allocate the other 3; variables updated in place: 0"))


def test_report_gives_the_arena_of_the_kernels_that_write_into_given_buffers():
    """Three matmuls by w (NumPy's matmul with out=, runtime/cpu_kernels.py): the first two
    products share no step but their handover, so they take two slots of 320 bytes at batch
    8; the third is the output, the caller's array, outside the arena."""
    b = builder()
    x = b.input("x", t(N, 10))
    w = b.param("w", t(10, 10))
    first = b.matmul(x, w)
    second = b.matmul(first, w)
    b.graph.outputs["y"] = b.matmul(second, w)
    numpy_fast_paths = Backend("cpu", np, factories=cpu_factories())
    report = memory_report(b.graph, batch=8, backend=numpy_fast_paths)
    assert report.items[-1] == (
        "arena: 640 B in 2 slots for 2 of 3 activations (at most 640 B of them alive at "
        "once); kernels allocate the other 1; variables updated in place: 0")
    assert report.extra["arena"].offsets == {first: 0, second: 320}


def test_liveness_matches_the_runtimes():
    graph = chain()
    steps = list(graph)
    keep = {graph.outputs["y"]}
    runtime = program.plan(graph, [graph.outputs["y"]], {steps[0].id}).free_after
    assert last_uses(steps, keep) == runtime == [[], [0], [1], [2]]


def test_human_bytes():
    assert human_bytes(512) == "512 B"
    assert human_bytes(3 << 20) == "3,145,728 B (3.00 MiB)"
