"""The executor: runs only the planned calls, frees each value after its last use, reports
failures with the node, keeps per-step work out of the loop, and binds planned buffers
(tests/runtime/test_buffer_plan.py tests the plan itself)."""
from __future__ import annotations

import dataclasses
import weakref

import numpy as np
import pytest

from netlang.errors import ExecutionError, FeedError, SourceFile, Span
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType, sym
from netlang.ops.builder import Builder
from netlang.ops.registry import OPS
from netlang.runtime.backend import CPU_REFERENCE
from netlang.runtime.executor import Executor
from netlang.runtime.memory import plan_memory_usage
from netlang.runtime.program import plan
from netlang.runtime.state import State


def t(*shape):
    return TensorType(DType.f32, shape)


def chain():
    b = Builder(Graph(name="chain"))
    x = b.input("x", t(sym("N"), 100))
    e = b.exp(x)
    s = b.sin(e)
    c = b.cos(s)
    y = b.tanh(c)
    b.graph.outputs["y"] = y
    return b.graph, x, y


def test_dead_values_are_really_freed(monkeypatch):
    """Each kernel records a weak reference to its result; when tanh runs, exp's and sin's
    results must already be gone (only cos's, its argument, is alive)."""
    made: dict[str, weakref.ref] = {}
    alive_at_tanh: list[str] = []

    def tracking(op):
        kernel = OPS[op].kernel

        def run(xp, *args, **attrs):
            if op == "tanh":
                alive_at_tanh.extend(k for k, ref in made.items() if ref() is not None)
            out = kernel(xp, *args, **attrs)
            made[op] = weakref.ref(out)
            return out
        return run

    for op in ("exp", "sin", "cos", "tanh"):
        monkeypatch.setitem(OPS, op, dataclasses.replace(OPS[op], kernel=tracking(op)))
    graph, x, y = chain()
    (out,) = Executor(CPU_REFERENCE).run(plan(graph, [y], {x}), {x: np.ones((2, 100), np.float32)},
                               State(CPU_REFERENCE))
    assert alive_at_tanh == ["cos"]
    assert made["tanh"]() is out


def test_measured_peak_equals_the_memory_plan():
    """Sum the bytes of live activations after each step (weak references, so the
    measurement holds nothing alive) and compare with passes.memory's planned peak."""
    b = Builder(Graph(name="fan"))
    x = b.input("x", t(sym("N"), 50))
    a = b.exp(x)
    d = b.add(b.sin(a), b.cos(a))
    b.graph.outputs["d"] = b.mul(d, d)
    refs: list[tuple[int, weakref.ref]] = []
    peak = 0

    def on_step(node, value):
        nonlocal peak
        if node.op not in ("input", "param", "state", "const"):
            refs.append((value.nbytes, weakref.ref(value)))
        peak = max(peak, sum(size for size, ref in refs if ref() is not None))

    executor = Executor(CPU_REFERENCE)
    executor.on_step = on_step
    program = plan(b.graph, [b.graph.outputs["d"]], {x})
    executor.run(program, {x: np.ones((8, 50), np.float32)}, State(CPU_REFERENCE))
    assert peak == plan_memory_usage(b.graph, batch=8).peak_bytes == 3 * 8 * 50 * 4
    assert executor.kernel_calls == 5


def test_only_planned_kernels_run_and_are_counted():
    graph, _x, y = chain()
    executor = Executor(CPU_REFERENCE)
    exp_id = graph.nodes[graph.nodes[y].inputs[0]].inputs[0]   # cos's input is sin's output
    program = plan(graph, [y], {exp_id})                         # feed sin's output: cuts
    assert [c.opdef.name for c in program.calls] == ["cos", "tanh"]
    executor.run(program, {exp_id: np.zeros((1, 100), np.float32)}, State(CPU_REFERENCE))
    assert executor.kernel_calls == 2


def test_a_failing_kernel_names_its_node_and_spec_location(monkeypatch):
    def broken(xp, x):
        raise FloatingPointError("overflow")

    monkeypatch.setitem(OPS, "sin", dataclasses.replace(OPS["sin"], kernel=broken))
    b = Builder(Graph(name="bad"))
    x = b.input("x", t(3))
    with b.at(Span(SourceFile("net.net", "y = sin(exp(x))\n"), 1, 5)):
        y = b.sin(b.exp(x))
    executor = Executor(CPU_REFERENCE)
    with pytest.raises(ExecutionError) as info:
        executor.run(plan(b.graph, [y], {x}), {x: np.ones(3, np.float32)}, State(CPU_REFERENCE))
    assert str(info.value).splitlines()[0] == (
        "net.net:1:5: execution error: sin (node %2) failed on inputs of shapes (3,): overflow")
    assert executor.kernel_calls == 1   # exp ran, sin did not finish


def test_missing_feeds_and_variables_are_clear_errors():
    b = Builder(Graph(name="w"))
    x = b.input("x", t(3))
    w = b.param("w", t(3), init=("ones",))
    y = b.mul(x, w)
    program = plan(b.graph, [y], {x})
    with pytest.raises(FeedError, match="no value fed for x"):
        Executor(CPU_REFERENCE).run(program, {}, State(CPU_REFERENCE))
    with pytest.raises(ExecutionError, match="the variable 'w' has no value"):
        Executor(CPU_REFERENCE).run(program, {x: np.ones(3, np.float32)}, State(CPU_REFERENCE))


def test_updates_are_written_after_the_run_from_the_old_values():
    b = Builder(Graph(name="counter"))
    s = b.state("s", t(2), init=("ones",))
    b.update(s, b.add(s, s))
    b.graph.outputs["old"] = s
    state = State.initialize(b.graph, CPU_REFERENCE)
    program = plan(b.graph, [s], set(), b.graph.updates)
    executor = Executor(CPU_REFERENCE)
    (old,) = executor.run(program, {}, state)
    np.testing.assert_array_equal(old, [1, 1])
    np.testing.assert_array_equal(state["s"], [2, 2])
    executor.run(program, {}, state)
    np.testing.assert_array_equal(state["s"], [4, 4])


def test_profile_times_every_kernel_by_kind_and_keeps_results():
    from netlang.runtime.profile import KernelProfile

    b = Builder(Graph(name="profiled"))
    x = b.input("x", t(sym("N"), 6, 6, 8))
    w = b.const(np.ones((3, 3, 8, 2), np.float32))
    y = b.relu(b.conv2d(b.exp(x), w, padding="SAME"))
    z = b.add(y, b.exp(y))
    graph = b.graph
    program = plan(graph, [z], {x})
    executor = Executor(CPU_REFERENCE)
    feeds = {x: np.full((2, 6, 6, 8), 0.1, np.float32)}
    (plain,) = executor.run(program, feeds, {})
    executor.profile = profile = KernelProfile(CPU_REFERENCE)
    for _ in range(3):
        (profiled,) = executor.run(program, feeds, {})
    np.testing.assert_array_equal(profiled, plain)
    assert profile.runs == 3
    rows = {r.label: r for r in profile.rows()}
    assert {k: r.calls for k, r in rows.items()} == {"exp": 2, "conv2d 3x3": 1, "relu": 1,
                                                     "add": 1}
    assert sum(r.share for r in rows.values()) == pytest.approx(1.0)
    assert profile.total_ms() == pytest.approx(sum(r.ms for r in rows.values()))
    assert [r.label for r in profile.rows(top=1)] == [max(rows, key=lambda k: rows[k].ms)]


def test_a_variable_too_large_to_allocate_is_an_error_naming_it():
    import netlang
    from netlang.errors import ExecutionError

    model = netlang.compile("network n { input x: f32[N, 4]\n"
                            "  output y = dense(x, 100000000000) }")
    with pytest.raises(ExecutionError) as err:
        model.session()
    assert err.value.message == (
        "the variable 'dense1/W' (f32[4,100000000000]) needs 1,600,000,000,000 B "
        "(1490.12 GiB), more memory than this machine can allocate")


def matmul_chain():
    """x @ w @ w @ w on the CPU's NumPy fast paths (matmul takes ``out=``)."""
    b = Builder(Graph(name="mm"))
    x = b.input("x", t(sym("N"), 4))
    w = b.const(np.full((4, 4), 0.5, np.float32))
    first = b.matmul(x, w)
    second = b.matmul(first, w)
    b.graph.outputs["y"] = b.matmul(second, w)
    return b.graph, x, first, second, b.graph.outputs["y"]


def test_planned_outputs_live_in_the_arena_and_the_fetch_does_not():
    from netlang.runtime.backend import Backend
    from netlang.runtime.cpu_kernels import cpu_factories

    graph, x, first, second, y = matmul_chain()
    executor = Executor(Backend("cpu", np, factories=cpu_factories()))
    program = plan(graph, [y], {x})
    feeds = {x: np.ones((3, 4), np.float32)}
    (out,) = executor.run(program, feeds, {})
    bound = executor.bind(program, feeds)
    views = {o: run.keywords["out"] for o, run, _, _ in bound.calls if hasattr(run, "keywords")}
    assert sorted(views) == [first, second]
    assert all(np.shares_memory(v, bound.arena) for v in views.values())
    assert not np.shares_memory(out, bound.arena)
    (again,) = executor.run(program, feeds, {})
    assert again is not out
    np.testing.assert_array_equal(again, out)
    np.testing.assert_array_equal(out, np.full((3, 4), 8.0))


def test_a_hook_gets_values_that_no_later_step_overwrites():
    """``on_step`` may keep what it is shown (the non-finite search does): such runs bind
    the program without the buffer plan."""
    from netlang.runtime.backend import Backend
    from netlang.runtime.cpu_kernels import cpu_factories

    graph, x, first, second, y = matmul_chain()
    executor = Executor(Backend("cpu", np, factories=cpu_factories()))
    program = plan(graph, [y], {x})
    feeds = {x: np.ones((3, 4), np.float32)}
    executor.run(program, feeds, {})          # the planned binding exists, and is not used
    kept = {}
    executor.on_step = lambda node, value: kept.__setitem__(node.id, value)
    executor.run(program, feeds, {})
    np.testing.assert_array_equal(kept[first], np.full((3, 4), 2.0))
    np.testing.assert_array_equal(kept[second], np.full((3, 4), 4.0))


def test_the_patch_cache_is_cleared_before_every_run():
    executor = Executor(CPU_REFERENCE)
    graph, x, y = chain()
    key = np.ones(3)
    executor.kernel_state.patches.put(key, ("g",), np.zeros(4))
    executor.run(plan(graph, [y], {x}), {x: np.ones((1, 100), np.float32)}, {})
    assert executor.kernel_state.patches.take(key, ("g",)) is None


def test_values_the_sizes_alone_fix_are_computed_once_when_bound(monkeypatch):
    """``fill_like(x)`` reads x for its shape alone: once the feeds fix N, its value is
    computed when the program is bound and handed on every run (``fold_at_binding``).  A
    fetched one is computed every run: the caller may write the array it gets."""
    calls: list[str] = []
    kernel = OPS["fill_like"].kernel

    def counting(xp, *args, **attrs):
        calls.append("fill_like")
        return kernel(xp, *args, **attrs)
    monkeypatch.setitem(OPS, "fill_like", dataclasses.replace(OPS["fill_like"],
                                                              kernel=counting))
    b = Builder(Graph(name="seeded"))
    x = b.input("x", t(sym("N"), 4))
    twos = b.fill_like(x, value=2.0)
    y = b.mul(x, twos)
    shown = b.fill_like(x, value=3.0)
    b.graph.outputs.update(y=y, shown=shown)
    executor = Executor(CPU_REFERENCE)
    feeds = {x: np.arange(8, dtype=np.float32).reshape(2, 4)}
    program = plan(b.graph, [y], {x})
    for _ in range(3):
        (out,) = executor.run(program, feeds, {})
        np.testing.assert_array_equal(out, 2 * feeds[x])
    assert calls == ["fill_like"]                       # once, when bound
    fetching = plan(b.graph, [shown], {x})
    (first,) = executor.run(fetching, feeds, {})
    first[...] = 0.0
    (second,) = executor.run(fetching, feeds, {})
    np.testing.assert_array_equal(second, np.full((2, 4), 3.0, np.float32))
    assert calls == ["fill_like"] * 3
