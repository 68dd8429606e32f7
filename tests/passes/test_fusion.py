"""Elementwise fusion: which nodes group, the report, unchanged results, fewer allocations."""
from __future__ import annotations

import tracemalloc

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlang.compiler import program_graph
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType, sym
from netlang.ops.builder import Builder
from netlang.passes.autodiff import gradients
from netlang.passes.fusion import find_groups, fuse_elementwise
from netlang.passes.verify import verify_graph
from netlang.runtime.backend import get_backend
from netlang.runtime.executor import Executor
from netlang.runtime.fused_plan import plan_for
from netlang.runtime.program import plan
from netlang.runtime.state import State

N = sym("N")


def f32(*shape) -> TensorType:
    return TensorType(DType.f32, tuple(shape))


def bias_relu_graph():
    b = Builder(Graph(name="dense"))
    x = b.input("x", f32(N, 5))
    with b.scope("fc1"):
        bias = b.param("b", f32(5))
        y = b.relu(b.add(x, bias))
    b.graph.outputs["y"] = y
    return b.graph


def run_graph(graph: Graph, feeds: dict[str, np.ndarray], state=None, on_step=None):
    """All outputs of ``graph`` (and the updates applied to a copy of ``state``)."""
    store = State(get_backend("cpu", "builtin"))
    for k, v in (state or {}).items():
        store[k] = np.array(v)
    fetches = list(graph.outputs.values())
    program = plan(graph, fetches, {graph.inputs[k] for k in feeds}, dict(graph.updates))
    executor = Executor(get_backend("cpu", "builtin"), np.random.default_rng(0))
    executor.on_step = on_step
    values = executor.run(program, {graph.inputs[k]: v for k, v in feeds.items()}, store)
    return dict(zip(graph.outputs, values)), store.arrays, executor


# -- grouping --------------------------------------------------------------------------------

def test_bias_add_and_relu_become_one_fused_node():
    graph = bias_relu_graph()
    fused, report = fuse_elementwise(graph)
    assert [n.op for n in graph] == ["input", "param", "add", "relu"]
    assert [n.op for n in fused] == ["input", "param", "fused"]
    node = fused.nodes[fused.outputs["y"]]
    assert node.attrs["expr"] == (("add", ("x0", "x1"), ()), ("relu", ("t0",), ()))
    assert node.type == f32(N, 5) and node.scope == "fc1"
    assert str(report) == ("fused 2 elementwise nodes into 1 group(s)\n"
                      "  %2: f32[N,5] = relu(add(%x, %fc1/b))  (2 ops)  # fc1")
    verify_graph(fused)


def test_fusion_is_idempotent_and_reports_nothing_to_do():
    once, _ = fuse_elementwise(bias_relu_graph())
    twice, report = fuse_elementwise(once)
    assert str(report) == "no elementwise groups to fuse"
    assert [n.op for n in twice] == [n.op for n in once]


def test_named_values_and_outside_users_end_a_group():
    b = Builder(Graph(name="g"))
    x = b.input("x", f32(4))
    h = b.tanh(b.exp(x))          # h is named: a session may fetch it
    b.graph.values["h"] = h
    y = b.neg(b.square(h))
    shared = b.sin(y)             # read by two different groups below
    b.graph.outputs.update(a=b.cos(shared), c=b.mul(shared, x))
    groups = find_groups(b.graph)
    assert [[b.graph.nodes[i].op for i in g] for g in groups] == [
        ["exp", "tanh"], ["square", "neg", "sin"]]


def test_a_programs_graph_lets_unfetched_names_fuse():
    b = Builder(Graph(name="g"))
    x = b.input("x", f32(4))
    h = b.exp(x)
    b.graph.values["h"] = h
    b.graph.outputs["y"] = y = b.tanh(h)
    assert find_groups(b.graph) == []   # h may be fetched by name
    assert find_groups(program_graph(b.graph, {"y": y})) == [[h, y]]


def test_a_smaller_operand_stays_outside_and_broadcasts():
    b = Builder(Graph(name="bn"))
    x = b.input("x", f32(N, 3))
    var = b.input("var", f32(3))
    scale = b.rsqrt(b.add(var, b.const(1e-3)))       # [3]: its own group
    b.graph.outputs["y"] = b.relu(b.mul(b.sub(x, b.const(0.5)), scale))
    groups = find_groups(b.graph)
    assert [[b.graph.nodes[i].op for i in g] for g in groups] == [
        ["add", "rsqrt"], ["sub", "mul", "relu"]]


# -- same numbers ------------------------------------------------------------------------------

UNARY = ["neg", "square", "sin", "cos", "tanh", "sigmoid", "exp", "relu", "abs"]
BINARY = ["add", "sub", "mul", "maximum", "minimum"]


@st.composite
def random_graph(draw):
    """Random elementwise DAGs over [2,3] and [3] inputs, with reductions and several outputs,
    so groups end at fan-out, at shape changes and at non-elementwise users."""
    b = Builder(Graph(name="random"))
    values = [b.input("x0", f32(2, 3)), b.input("x1", f32(3)), b.input("x2", f32(2, 3))]
    for _ in range(draw(st.integers(2, 12))):
        kind = draw(st.sampled_from(["unary", "binary", "binary", "reduce"]))
        a = draw(st.sampled_from(values[-4:]))
        if kind == "unary":
            values.append(b.op(draw(st.sampled_from(UNARY)), a))
        elif kind == "binary":
            values.append(b.op(draw(st.sampled_from(BINARY)), a, draw(st.sampled_from(values))))
        elif b.type_of(a).shape == (2, 3):
            values.append(b.sum_to_like(a, values[1]))
    outs = {f"o{i}": v for i, v in enumerate(values[3:]) if draw(st.booleans())}
    b.graph.outputs.update(outs or {"last": values[-1]})
    return b.graph


FEEDS = {"x0": np.linspace(-1.3, 1.1, 6, dtype=np.float32).reshape(2, 3),
         "x1": np.array([0.7, -0.4, 0.25], np.float32),
         "x2": np.linspace(0.9, -1.7, 6, dtype=np.float32).reshape(2, 3)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=random_graph())
def test_fused_graphs_compute_the_same_values(graph):
    fused, _ = fuse_elementwise(graph)
    verify_graph(fused)
    before, _, _ = run_graph(graph, FEEDS)
    after, _, _ = run_graph(fused, FEEDS)
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=2e-6, atol=1e-6)
        assert after[name].dtype == before[name].dtype
    again, report = fuse_elementwise(fused)
    assert str(report) == "no elementwise groups to fuse" and len(again) == len(fused)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=random_graph())
def test_gradients_through_fused_nodes_match_the_primitives(graph):
    """Differentiating after fusion (the fused VJP) equals differentiating before it."""
    def with_grads(g):
        g = g.copy()
        b = Builder(g)
        total = None
        for v in g.outputs.values():
            s = b.sum_to_like(v, b.const(0.0)) if b.type_of(v).rank else v
            total = s if total is None else b.add(total, s)
        xs = [g.inputs[k] for k in ("x0", "x1", "x2")]
        grads = gradients(b, total, xs)
        g.outputs = {f"d{k}": d for k, d in zip(("x0", "x1", "x2"), grads) if d is not None}
        return g

    fused, _ = fuse_elementwise(graph)
    before, _, _ = run_graph(with_grads(graph), FEEDS)
    after, _, _ = run_graph(with_grads(fused), FEEDS)
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-5, atol=1e-5)


# -- fewer allocations -------------------------------------------------------------------------

def adam_like_graph():
    """A dense layer's bias + relu and an Adam-style update of its weight, on [N,256]."""
    b = Builder(Graph(name="step"))
    x = b.input("x", f32(N, 256))
    g = b.input("g", f32(N, 256))
    bias = b.param("b", f32(256))
    m = b.state("m", f32(N, 256))
    lr, b1, eps = b.const(0.01), b.const(0.1), b.const(1e-8)
    b.graph.outputs["y"] = b.relu(b.add(x, bias))
    new_m = b.add(m, b.mul(b.sub(g, m), b1))
    b.update(m, new_m)
    b.graph.outputs["p"] = b.sub(x, b.mul(lr, b.div(new_m, b.add(b.sqrt(b.abs(new_m)), eps))))
    return b.graph


def count_allocations(graph: Graph, feeds, state) -> tuple[int, int]:
    """(arrays allocated by kernels in one run, tracemalloc peak bytes during that run).

    An array counts when a kernel returns a buffer of its own (not a view); a fused node's
    scratch buffers are added from its plan.
    """
    owned = []

    def on_step(node, value):
        if node.op not in ("input", "param", "state", "const") and value.base is None:
            owned.append(node)
            if node.op == "fused":
                owned.extend([node] * plan_for(node.attrs["expr"], [
                    feeds_and_state[i] for i in node.inputs]).scratch)

    feeds_and_state = {}
    run_graph(graph, feeds, state, on_step=lambda n, v: feeds_and_state.__setitem__(n.id, v))
    tracemalloc.start()
    try:
        run_graph(graph, feeds, state, on_step=on_step)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return len(owned), peak


def test_fusion_allocates_one_buffer_per_group_instead_of_one_per_op():
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal((64, 256)).astype(np.float32) for k in ("x", "g")}
    state = {"b": np.zeros(256, np.float32), "m": np.zeros((64, 256), np.float32)}
    graph = adam_like_graph()
    fused, _ = fuse_elementwise(graph)
    before_count, before_peak = count_allocations(graph, feeds, state)
    after_count, after_peak = count_allocations(fused, feeds, state)
    assert (before_count, after_count) == (11, 3)
    assert after_peak < before_peak
    np.testing.assert_allclose(run_graph(fused, feeds, state)[0]["p"],
                               run_graph(graph, feeds, state)[0]["p"], rtol=1e-6)


def test_a_chain_writes_every_step_into_its_output_buffer():
    expr = (("add", ("x0", "x1"), ()), ("relu", ("t0",), ()), ("mul", ("t1", "x0"), ()),
            ("tanh", ("t2",), ()))
    x = np.ones((4, 3), np.float32)
    p = plan_for(expr, [x, x])
    assert p.scratch == 0 and p.buffers == (((4, 3), np.dtype("float32")),)
    assert p.source == ("def fused(x0, x1):\n"
                        "    b0 = empty(shape0, dtype0)\n"
                        "    f0(x0, x1, out=b0)\n"
                        "    f1(b0, out=b0)\n"
                        "    f2(b0, x0, out=b0)\n"
                        "    f3(b0, out=b0)\n"
                        "    return b0\n")
    np.testing.assert_allclose(p.run(x, x), np.tanh(2.0), rtol=1e-6)


def test_a_group_over_few_channels_runs_on_rows_with_its_vectors_tiled():
    """bias + relu over [2, 3, 4, 4]: 24 rows of 4 channels become 3 rows of 32, the bias
    tiled 8 times, so NumPy's inner loops run 32 elements instead of 4."""
    expr = (("add", ("x0", "x1"), ()), ("relu", ("t0",), ()), ("mul", ("t1", "x2"), ()))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    scale = np.float32(0.5)
    p = plan_for(expr, [x, bias, scale])
    assert p.buffers == (((3, 32), np.dtype("float32")),)
    assert p.source == ("def fused(x0, x1, x2):\n"
                        "    x0 = x0.reshape((3, 32))\n"
                        "    x1 = tile(x1.reshape(-1), 8)\n"
                        "    x2 = x2.reshape(())\n"
                        "    out = empty(out_shape, dtype0)\n"
                        "    b0 = out.reshape(shape0)\n"
                        "    f0(x0, x1, out=b0)\n"
                        "    f1(b0, out=b0)\n"
                        "    f2(b0, x2, out=b0)\n"
                        "    return out\n")
    y = p.run(x, bias, scale)
    assert y.shape == x.shape and y.dtype == np.float32 and y.base is None
    np.testing.assert_array_equal(y, np.maximum(x + bias, 0) * scale)
    strided = np.asfortranarray(x)                        # any layout: reshape copies
    np.testing.assert_array_equal(p.run(strided, bias, scale), y)
    assert plan_for(expr, [x.reshape(2, 3, 2, 8), np.ones(8, np.float32), scale]).buffers[0][
        0] == (3, 32)
    assert plan_for(expr, [x.reshape(6, 16) @ np.ones((16, 64), np.float32),
                           np.ones(64, np.float32), scale]).buffers[0][0] == (6, 64)


def test_a_tree_needs_one_scratch_buffer_and_never_writes_an_input():
    expr = (("mul", ("x0", "x1"), ()), ("mul", ("x2", "x3"), ()), ("add", ("t0", "t1"), ()))
    arrays = [np.full((2, 2), float(i + 1), np.float32) for i in range(4)]
    copies = [a.copy() for a in arrays]
    p = plan_for(expr, arrays)
    assert p.scratch == 1
    from netlang.ops.fused import fused_kernel
    np.testing.assert_array_equal(fused_kernel(np, *arrays, expr=expr), np.full((2, 2), 14.0))
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)


# -- describing a group (issue 14 item 7) ------------------------------------------------------

def test_a_step_read_twice_is_named_once_in_the_description():
    """4 cases: no sharing keeps the inlined form; a shared step, a shared input, and a chain
    of shared steps, whose text grows by one binding a link instead of doubling."""
    from netlang.ops.fused import format_expr
    assert format_expr((("add", ("x0", "x1"), ()), ("relu", ("t0",), ())),
                       ["%x", "%fc1/b"]) == "relu(add(%x, %fc1/b))"
    assert format_expr((("tanh", ("x0",), ()), ("mul", ("t0", "t0"), ()))) == (
        "let t0 = tanh(x0) in mul(t0, t0)")
    assert format_expr((("mul", ("x0", "x0"), ()), ("pow", ("t0",), (("exponent", 3),))),
                       ["%3"]) == "pow(mul(%3, %3), exponent=3)"
    chain = tuple(step for k in range(3) for step in (
        ("tanh", ("x0" if k == 0 else f"t{2 * k - 1}",), ()),
        ("add", (f"t{2 * k}", "x0" if k == 0 else f"t{2 * k - 1}"), ())))
    assert format_expr(chain, ["%3"]) == (
        "let t0 = add(tanh(%3), %3); t1 = add(tanh(t0), t0) in add(tanh(t1), t1)")


def deep_residual_spec(lines: int) -> str:
    """``lines`` lines of ``h = tanh(h) + h`` (each value read twice), and its gradient."""
    body = [f"  h{i} = tanh({'x' if i == 0 else f'h{i - 1}'}) + "
            f"{'x' if i == 0 else f'h{i - 1}'}" for i in range(lines)]
    return "\n".join(["network deep {", "  input x: f32[4]", *body,
                      f"  output y = h{lines - 1}", f"  output g = grad(sum(h{lines - 1}), x)",
                      "}", ""])


def test_a_deep_chain_of_shared_values_compiles_runs_and_explains_without_blowing_up(
        tmp_path, capsys):
    """2 cases, 30 and 200 lines of ``h = tanh(h) + h``: the fetch of y and of its gradient
    fuses all of them into one group, whose description once doubled at every line
    (MemoryError at 30).  Each compiles, runs (the values checked against NumPy) and
    explains, with a description of linear size.  The time bound only tells linear from
    exponential (2^30 steps never finish): the first run in a process also imports and sets
    up Numba (~1 s), and the machines are shared, so it is generous."""
    import time

    import netlang
    from netlang.cli import main
    x = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    for lines in (30, 200):
        path = tmp_path / f"deep{lines}.net"
        path.write_text(deep_residual_spec(lines))
        times = [time.perf_counter()]
        model = netlang.compile(str(path))
        times.append(time.perf_counter())
        y, g = model.session().run(["y", "g"], {"x": x})
        times.append(time.perf_counter())
        assert main(["explain", str(path)]) == 0
        times.append(time.perf_counter())
        seconds = np.diff(times)              # about 0.1, 0.3, 0.3 at 200 lines
        assert (seconds < 10.0).all(), f"{lines} lines: compile, run, explain took {seconds} s"
        h, dh = x.astype(np.float64), np.ones(4)
        for _ in range(lines):
            dh, h = dh * (2 - np.tanh(h) ** 2), np.tanh(h) + h
        np.testing.assert_allclose(y, h, rtol=1e-5)
        np.testing.assert_allclose(g, dh, rtol=1e-4)
        (line,) = [t for t in capsys.readouterr().out.splitlines() if "= let t0 = " in t]
        assert line.endswith(f"({4 * lines} ops)  # deep{lines}.net:3:8")   # the gradient
        assert len(line) < 60 * lines
