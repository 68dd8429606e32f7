"""Generated CPU kernels (runtime/generated.py) against the reference kernels in ops/.

Bit for bit where the generated code does the reference's arithmetic in the same order (add,
mul, div, sqrt, relu, select, comparisons, ...); within float tolerance where a libm call
(exp, log, tanh, pow) stands in for NumPy's vectorised one.  Hypothesis examples are
derandomized, so a rerun meets the same kernels in the on-disk cache and compiles nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import netlang
from netlang.errors import ShapeError
from netlang.ir.types import DType, TensorType
from netlang.model import Model
from netlang.ops.fused import fused_kernel, step_types
from netlang.ops.registry import all_ops, get_op
from netlang.runtime import generated, jit
from netlang.runtime.backend import _cpu_backend
from netlang.runtime.generated import Untranslatable, parse_c, to_python
from netlang.train.optimizers import make_optimizer
from netlang.train.step import LR_INPUT, build_train_graph

SPECS = Path(__file__).resolve().parents[2] / "specs"
EXPR_OPS = sorted(name for name, op in all_ops().items() if op.expr is not None)
# The generated code does what the reference kernel does, in the same order: equal bits.
EXACT = ["add", "sub", "mul", "div", "neg", "square", "relu", "relu_grad", "select",
         "greater", "less", "equal", "maximum", "minimum", "abs", "sign", "leaky_relu",
         "leaky_relu_grad", "elu_grad", "sqrt", "rsqrt", "floor", "ceil", "round"]
# A libm call instead of NumPy's own loop: equal within float tolerance.
APPROX = ["exp", "log", "tanh", "sin", "cos", "sigmoid", "elu", "pow", "sigmoid_cross_entropy",
          "erf"]
COMPARISONS = {"greater", "less", "equal"}
ATTRS = {"pow": ("exponent", [2.0, 0.5, 3.0, -1.0, 1.5]), "leaky_relu": ("alpha", [0.1, 0.3]),
         "leaky_relu_grad": ("alpha", [0.1, 0.3]), "elu": ("alpha", [1.0, 0.5]),
         "elu_grad": ("alpha", [1.0, 0.5])}
TOLERANCE = {np.float32: {"rtol": 1e-4, "atol": 1e-5}, np.float64: {"rtol": 1e-10, "atol": 1e-12}}
EXAMPLES = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_the_op_table_and_the_kernel_table_cover_each_other():
    """Ops whose element calls libm are left to NumPy's vectorised loops; the rest get a
    factory."""
    assert sorted(EXACT + APPROX) == EXPR_OPS, "classify every op with an expr here"
    calls_libm = {op for op in EXPR_OPS if generated.libm_calls(((op, (), ()),))}
    assert calls_libm == set(APPROX)
    # erf is the exception: NumPy has no erf ufunc, so its generated loop wins
    assert set(generated.generated_factories()) == {"fused", *EXACT, "erf"}


# -- the translator ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", EXPR_OPS)
def test_every_op_expression_becomes_python(name):
    opdef = get_op(name)
    attrs = {key: 0.5 for key in opdef.attrs}
    text = to_python(parse_c(opdef.expr), ["a", "b", "c"][:opdef.arity], DType.f32, attrs)
    compile(text, name, "eval")


@pytest.mark.parametrize("c, python", [
    ("({0} ? ({T}){1} : ({T}){2})", "(np.float32(b) if a else np.float32(c))"),
    ("{0} - {1} - {2}", "((a - b) - c)"),
    ("{0} + {1} * {2}", "(a + (b * c))"),
    ("!{0} && {1} || {2}", "(((not a) and b) or c)"),
    ("{0} ? {1} : {2} ? {0} : {1}", "(b if a else (a if c else b))"),
    ("pow(({T}){0}, ({T}){exponent})", "(np.float32(a) ** np.float32(2.0))"),
    ("log1p(exp(-{0})) * {alpha}", "(math.log1p(math.exp((-a))) * 0.1)"),
    ("(double){0} / 2.5f", "(np.float64(a) / np.float32(2.5))"),
    ("{0} != {0} || {0} >= {1}", "((a != a) or (a >= b))"),
])
def test_the_translator_keeps_c_precedence_and_forms(c, python):
    assert to_python(parse_c(c), ["a", "b", "c"], DType.f32,
                     {"exponent": 2.0, "alpha": 0.1}) == python


@pytest.mark.parametrize("c", ["frexp({0})", "{0} % 2", "{0} +", "{T} + {0}", "{3} + {0}",
                               "{0} * {beta}", "fmod({0}, {1})"])
def test_c_outside_the_subset_is_refused(c):
    with pytest.raises(Untranslatable):
        to_python(parse_c(c), ["a", "b"], DType.f32, {})


# -- random groups against the reference -------------------------------------------------------

@st.composite
def broadcast_shape(draw, shape: tuple) -> tuple:
    """``shape`` itself, a vector along its last axis ([C] or [1,..,1,C]) or one number."""
    kind = draw(st.sampled_from(["full", "full", "vector", "scalar"]))
    if kind == "full" or not shape:
        return shape
    if kind == "vector":
        return draw(st.sampled_from([shape[-1:], (1,) * (len(shape) - 1) + shape[-1:]]))
    return draw(st.sampled_from([(), (1,) * len(shape)]))


@st.composite
def groups(draw, ops: list[str]):
    """(expr, input arrays, parallel): a random chain or tree of ``ops`` over random inputs."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = tuple(draw(st.lists(st.integers(1, 6), max_size=4)))
    shapes = [draw(broadcast_shape(shape)) for _ in range(draw(st.integers(1, 4)))]
    floats, bools = [f"x{i}" for i in range(len(shapes))], []
    expr = []
    for j in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(ops))
        if op == "select" and not bools:
            op = "greater"
        arity = get_op(op).arity
        args = [draw(st.sampled_from(floats)) for _ in range(arity)]
        if op == "select":
            args[0] = draw(st.sampled_from(bools))
        attrs = ()
        if op in ATTRS:
            key, values = ATTRS[op]
            attrs = ((key, draw(st.sampled_from(values))),)
        expr.append((op, tuple(args), attrs))
        (bools if op in COMPARISONS else floats).append(f"t{j}")
    expr = tuple(expr)
    try:
        step_types(expr, [TensorType(DType.of(dtype), s) for s in shapes])
    except ShapeError:
        assume(False)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    arrays = [special_values(rng, s, dtype) for s in shapes]
    return expr, arrays, draw(st.sampled_from([False, False, True]))


def special_values(rng, shape: tuple, dtype) -> np.ndarray:
    """Random numbers with zeros, repeats and the odd NaN, where comparisons and relu turn."""
    x = np.asarray(rng.standard_normal(shape) * 2, dtype)
    x[rng.random(shape) < 0.15] = 0
    x[rng.random(shape) < 0.1] = 1
    x[rng.random(shape) < 0.03] = np.nan
    return np.asarray(x)


def reference(expr: tuple, arrays: list) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(fused_kernel(np, *arrays, expr=expr))


def run_generated(expr: tuple, arrays: list, parallel: bool):
    run = generated.generated_kernel(expr, [a.shape for a in arrays],
                                     [a.dtype for a in arrays], parallel=parallel)
    assert run is not None, expr
    got = run(*arrays)
    want = reference(expr, arrays)
    assert got.shape == want.shape and got.dtype == want.dtype, expr
    out = np.full(want.shape, 7, want.dtype)
    assert run(*arrays, out=out) is out
    for i, a in enumerate(arrays):       # each input the output may be written over
        over = run.overwriting(i)
        if over is not None:
            assert a.shape == want.shape and a.dtype == want.dtype
            mine = [b.copy() if k == i else b for k, b in enumerate(arrays)]
            assert over(*mine, out=mine[i]) is mine[i]
            np.testing.assert_array_equal(mine[i], out, err_msg=f"{expr} over x{i}")
    return got, out, want


@EXAMPLES
@given(case=groups(EXACT))
def test_groups_of_exact_ops_equal_the_reference_bit_for_bit(case):
    expr, arrays, parallel = case
    got, out, want = run_generated(expr, arrays, parallel)
    np.testing.assert_array_equal(got, want, err_msg=str(expr))
    np.testing.assert_array_equal(out, want, err_msg=str(expr))


@settings(EXAMPLES, max_examples=20)
@given(case=groups(APPROX + ["add", "mul", "sub", "relu", "maximum"]))
def test_groups_with_libm_calls_equal_the_reference_within_tolerance(case):
    expr, arrays, parallel = case
    arrays = [np.asarray(np.abs(a) + 0.25) for a in arrays]    # log, pow, sqrt of reals
    got, out, want = run_generated(expr, arrays, parallel)
    np.testing.assert_allclose(got, want, **TOLERANCE[want.dtype.type], err_msg=str(expr))
    np.testing.assert_array_equal(out, got)


def op_inputs(name: str, rng, shape=(3, 4, 8)) -> list[np.ndarray]:
    """Inputs for one op: a full array, then a per-channel vector, then a single number."""
    kinds = [shape, shape[-1:], ()]
    arity = get_op(name).arity
    arrays = [special_values(rng, kinds[i % 3], np.float32) for i in range(arity)]
    if name == "select":
        arrays[0] = arrays[0] > 0
    if name in ("relu_grad", "leaky_relu_grad", "elu_grad", "sigmoid_cross_entropy"):
        arrays = [special_values(rng, shape, np.float32) for _ in range(arity)]
    return arrays


@pytest.mark.parametrize("name", EXPR_OPS)
def test_each_ops_own_factory_equals_its_kernel(name):
    opdef = get_op(name)
    attrs = {key: ATTRS[name][1][0] for key in opdef.attrs}
    arrays = op_inputs(name, np.random.default_rng(5))
    if name in EXACT:
        factory = generated.generated_factories()[name][0]
        run = factory([a.shape for a in arrays], [a.dtype for a in arrays], attrs, None)
    else:       # no factory (libm), but the translation is still checked
        step = ((name, tuple(f"x{i}" for i in range(len(arrays))), tuple(attrs.items())),)
        run = generated.generated_kernel(step, [a.shape for a in arrays],
                                         [a.dtype for a in arrays])
    with np.errstate(all="ignore"):
        want = np.asarray(opdef.kernel(np, *arrays, **attrs))
    got = run(*arrays)
    assert got.dtype == want.dtype and got.shape == want.shape
    if name in EXACT:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# -- the factory protocol ---------------------------------------------------------------------

ADAM = (("sqrt", ("x0",), ()), ("add", ("t0", "x1"), ()), ("div", ("x2", "t1"), ()),
        ("mul", ("x3", "t2"), ()), ("sub", ("x4", "t3"), ()))


def adam_inputs(shape, rng):
    v, m, p = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    return [np.abs(v), np.float32(1e-8), m, np.float32(1e-3), p]


@pytest.mark.parametrize("parallel", [False, True])
def test_out_is_written_and_a_variable_may_be_overwritten(parallel):
    arrays = adam_inputs((33, 17), np.random.default_rng(1))
    run = generated.generated_kernel(ADAM, [np.shape(a) for a in arrays],
                                     [np.float32] * 5, parallel=parallel)
    assert run.writes_out
    want = reference(ADAM, arrays)
    fresh = run(*arrays)
    assert fresh is not arrays[4] and fresh.flags.c_contiguous
    np.testing.assert_array_equal(fresh, want)
    assert run.overwriting(1) is None                                  # a scalar input
    over = run.overwriting(4)
    assert over.writes_out and run.overwriting(4) is over
    spare = np.empty_like(want)                     # the variable held elsewhere: a spare
    assert over(*arrays, out=spare) is spare
    np.testing.assert_array_equal(spare, want)
    param = arrays[4].copy()
    arrays[4] = param
    assert over(*arrays, out=param) is param
    np.testing.assert_array_equal(param, want)
    with pytest.raises(ValueError, match="C-contiguous"):
        run(*arrays, out=np.empty((17, 33), np.float32).T)


def test_inputs_that_are_views_or_numpy_scalars_are_taken():
    rng = np.random.default_rng(2)
    expr = (("mul", ("x0", "x1"), ()), ("add", ("t0", "x2"), ()))
    x = rng.standard_normal((8, 6)).astype(np.float32)
    run = generated.generated_kernel(expr, [(6, 8), (8,), ()], [np.float32] * 3)
    for args in [(x.T, x[:, 0], np.float32(2)),
                 (x.T, x[:, 1].copy(), np.ones((1, 1), np.float32)),
                 (np.asfortranarray(x.T), x[::1, 2], np.array(0.5, np.float32))]:
        want = reference(expr, [np.asarray(a, np.float32) for a in args])
        np.testing.assert_array_equal(run(*args), want)


@pytest.mark.parametrize("expr, shapes, dtypes, why", [
    ((("add", ("x0", "x1"), ()), ("cast", ("t0",), (("dtype", "f64"),))),
     [(4, 5), (4, 5)], [np.float32] * 2, "cast has no expr"),
    ((("add", ("x0", "x1"), ()),), [(4, 5), (4, 1)], [np.float32] * 2, "a column broadcast"),
    ((("add", ("x0", "x1"), ()),), [(4, 5), (3, 4, 5)], [np.float32] * 2, "a larger input"),
    ((("add", ("x0", "x1"), ()),), [(4, 5), (4, 5)], [np.int32] * 2, "integers"),
    ((("mul", ("x0", "x1"), ()), ("exp", ("t0",), ())), [(4, 5), (5,)], [np.float32] * 2,
     "exp calls libm, slower than NumPy's loop"),
])
def test_what_is_not_generated_falls_back_to_the_numpy_plan(expr, shapes, dtypes, why):
    rng = np.random.default_rng(3)
    arrays = [(rng.standard_normal(s) * 5).astype(d) for s, d in zip(shapes, dtypes)]
    runs = [f(shapes, [np.dtype(d) for d in dtypes], {"expr": expr}, None)
            for f in _cpu_backend().factories["fused"]]
    assert runs[0] is None and runs[1] is not None
    np.testing.assert_array_equal(runs[1](*arrays), reference(expr, arrays))


def test_layout_gives_the_threads_rows():
    assert generated.layout((64, 10), ["full", "vector"]) == (16, 40)
    assert generated.layout((64, 1024), ["full", "vector"]) == (64, 1024)
    assert generated.layout((4096,), ["full", "scalar"]) == (16, 256)
    assert generated.layout((256, 28, 28, 4), ["full", "vector"]) == (3136, 256)
    assert generated.layout((256, 28, 28, 4), ["full"]) == (16, 50176)
    assert generated.layout((1000, 10), ["vector", "full"]) == (125, 80)
    assert generated.layout((7919,), ["full"]) == (1, 7919)        # a prime: one row
    assert generated.layout((), ["scalar"]) == (1, 1)
    assert generated.layout((0, 5), ["full"]) == (0, 5)


@pytest.mark.parametrize("shape", [(4096,), (0, 3), (), (2, 0)])
def test_odd_sizes_run(shape):
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    run = generated.generated_kernel((("square", ("x0",), ()),), [shape], [np.float32],
                                     parallel=True)
    np.testing.assert_array_equal(run(x), x * x)


# -- compiling: at bind time, once, and not again in a second process --------------------------

def test_binding_compiles_and_the_steps_do_not():
    expr = (("mul", ("x0", "x1"), ()), ("relu", ("t0",), ()))
    before = (jit.STATS.compiled + jit.STATS.cached, jit.STATS.loaded)
    run = generated.generated_kernel(expr, [(5, 3), (3,)], [np.float64] * 2)
    fn = jit._MODULES[jit.source_key(generated.kernel_source(
        expr, ["full", "vector"], [DType.f64] * 2, False))].fused
    assert jit.compiled_signatures(fn) == 1
    run(np.ones((5, 3)), np.ones(3))
    run(np.ones((5, 3)), np.ones(3), out=np.empty((5, 3)))
    assert jit.compiled_signatures(fn) == 1
    again = generated.generated_kernel(expr, [(50, 3), (1, 3)], [np.float64] * 2)
    assert again is not None
    assert (jit.STATS.compiled + jit.STATS.cached, jit.STATS.loaded) <= (before[0] + 1,
                                                                         before[1] + 1)


def test_while_a_program_is_bound_only_the_kernels_of_runs_that_survive_compile():
    from netlang.runtime.cpu_kernels import compiles_after_binding

    def kernel_of(expr, dtype):     # each expression here is used by no other test
        return jit._MODULES[jit.source_key(generated.kernel_source(
            expr, ["full", "full"], [DType.of(dtype)] * 2, False))].fused
    kept_expr = (("sub", ("x0", "x1"), ()), ("abs", ("t0",), ()), ("neg", ("t1",), ()))
    dropped_expr = (("sub", ("x1", "x0"), ()), ("abs", ("t0",), ()), ("neg", ("t1",), ()))
    with compiles_after_binding():
        kept = generated.generated_kernel(kept_expr, [(4, 3)] * 2, [np.float64] * 2)
        dropped = generated.generated_kernel(dropped_expr, [(4, 3)] * 2, [np.float64] * 2)
        assert jit.compiled_signatures(kernel_of(kept_expr, np.float64)) == 0
        del dropped                 # a later pass put another run in its place
    assert jit.compiled_signatures(kernel_of(kept_expr, np.float64)) == 1
    assert jit.compiled_signatures(kernel_of(dropped_expr, np.float64)) == 0
    np.testing.assert_array_equal(kept(np.ones((4, 3)), np.zeros((4, 3))), -np.ones((4, 3)))


SECOND_PROCESS = """
import json, numpy as np
from netlang.runtime import generated, jit
expr = (("sub", ("x0", "x1"), ()), ("square", ("t0",), ()))
run = generated.generated_kernel(expr, [(4, 3), (3,)], [np.float32] * 2)
assert run(np.ones((4, 3), np.float32), np.zeros(3, np.float32)).sum() == 12
s = jit.STATS
print(json.dumps({"written": s.written, "compiled": s.compiled, "cached": s.cached}))
"""


def test_a_second_process_loads_the_machine_code_instead_of_compiling(tmp_path):
    env = {**os.environ, "NETLANG_CACHE_DIR": str(tmp_path)}

    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", SECOND_PROCESS], env=env, text=True,
                              capture_output=True, check=True)
        return json.loads(done.stdout)
    assert run() == {"written": 1, "compiled": 1, "cached": 0}
    assert run() == {"written": 0, "compiled": 0, "cached": 1}


# -- end to end -------------------------------------------------------------------------------

def train_three_steps() -> tuple[list, dict]:
    """(losses, parameters) after three Adam steps of mnist_small on a fixed batch of 32, in
    a fresh session."""
    model = netlang.compile(SPECS / "mnist_small.net")
    train = build_train_graph(model, make_optimizer("adam", {"lr": 1e-3}))
    session = Model(train).session("cpu", seed=0)
    rng = np.random.default_rng(0)
    feeds = {"image": rng.standard_normal((32, 28, 28, 1)).astype(np.float32),
             "label": rng.integers(0, 10, 32).astype(np.int32), LR_INPUT: np.float32(1e-3)}
    losses = [float(session.run(model.graph.loss, feeds, training=True, updates=True))
              for _ in range(3)]
    return losses, {k: v.copy() for k, v in session.state.arrays.items()}


def test_training_with_generated_kernels_is_bitwise_reproducible(monkeypatch):
    """With the rows of every kernel from 4096 elements split over the threads."""
    monkeypatch.setattr(generated, "SERIAL_BELOW", 4096)
    made = []
    bind = generated.bind_arrays
    monkeypatch.setattr(generated, "bind_arrays", lambda *a: made.append(a) or bind(*a))
    first_losses, first = train_three_steps()
    assert len(made) > 10            # the groups and single ops of the step, generated
    second_losses, second = train_three_steps()
    assert first_losses == second_losses and first_losses[2] < first_losses[0]
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
