"""Backends: device selection and its errors, per-backend kernel overrides, the generated CUDA
of fused groups, and NumPy/CuPy parity of every op (on a machine with a GPU).

The parity tests run the op property cases (tests/ops/cases_*.py) through the executor on
each available backend: on ``cpu`` they compare with the op's kernel called directly, on
``gpu`` with the NumPy run, outputs and gradients within float32 tolerance, and the executed
shapes with the inferred types.  Without a GPU the ``gpu`` variants skip, saying why; the
``standin`` variants run the GPU backend's code over a NumPy-backed ``cupy`` everywhere.
"""
from __future__ import annotations

import importlib
import pathlib
import sys
import types
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlang.errors import DeviceError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType
from netlang.ops.builder import Builder
from netlang.ops.fused import fused_kernel
from netlang.ops.registry import get_op
from netlang.passes.autodiff import gradients
from netlang.passes.fusion import fuse_elementwise
from netlang.runtime import backend as backend_module
from netlang.runtime import gpu_kernels
from netlang.runtime.backend import CPU_REFERENCE, Backend, MetricSums, get_backend, gpu_available
from netlang.runtime.executor import Executor
from netlang.runtime.program import plan
from netlang.runtime.state import State
from tests.ops.harness import CASES, build, call_kernel
from tests.runtime.host_cuda import HostRawKernel

for _path in sorted((pathlib.Path(__file__).parents[1] / "ops").glob("cases_*.py")):
    importlib.import_module(f"tests.ops.{_path.stem}")

GPU_OK, GPU_WHY = gpu_available()
# "standin": the GPU backend's own code (overrides, generated kernels compiled for the host,
# device generators) over a NumPy-backed ``cupy``, so CI exercises the GPU paths too.
DEVICES = ["cpu", "standin", pytest.param("gpu", marks=pytest.mark.skipif(
    not GPU_OK, reason=f"no GPU on this machine: {GPU_WHY}"))]


# -- choosing a device -----------------------------------------------------------------------

@pytest.fixture
def fresh_gpu_slot(monkeypatch):
    """Forget a GPU backend made earlier, so get_backend looks for CuPy again."""
    monkeypatch.setattr(backend_module, "_GPU", [])


def fake_cupy(count=None, error=None) -> types.ModuleType:
    cupy = types.ModuleType("cupy")

    def get_device_count():
        if error is not None:
            raise error
        return count

    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=get_device_count))
    return cupy


def test_cpu_is_numpy():
    assert get_backend("cpu") is get_backend("cpu") and get_backend("cpu").xp is np
    assert get_backend("cpu", kernels="numpy") is CPU_REFERENCE and not CPU_REFERENCE.factories


def test_the_first_cpu_session_sizes_the_thread_pools_and_says_so(monkeypatch, capsys):
    """Unless the process did (the netlang command, or ``netlang.configure_threads``): once,
    with one note on stderr; the reference kernels alone need no pools."""
    from netlang.runtime import threads

    made = []
    monkeypatch.setattr(threads, "CONFIGURED", [])
    monkeypatch.setattr(threads, "configure_cpu_threads", lambda: made.append(
        threads.ThreadSetting(2, "openblas: 1 threads", "libgomp: 2 threads")) or made[-1])
    get_backend("cpu", kernels="numpy")
    assert made == [] and capsys.readouterr().err == ""
    get_backend("cpu")
    assert len(made) == 1
    assert capsys.readouterr().err == (
        "note: netlang sized this process's thread pools for its CPU kernels, as the netlang "
        "command does (openblas: 1 threads; libgomp: 2 threads); call "
        "netlang.configure_threads() before the first session to choose otherwise\n")
    threads.CONFIGURED.append(made[0])     # what configure_cpu_threads records
    get_backend("cpu", kernels="builtin")
    assert len(made) == 1 and capsys.readouterr().err == ""


def test_configure_threads_passes_its_choices_on(monkeypatch):
    import netlang
    from netlang.runtime import threads

    assert threads.CONFIGURED       # tests/conftest.py's configure_cpu_threads() recorded it
    calls = []
    monkeypatch.setattr(threads, "configure_cpu_threads",
                        lambda *args, **kwargs: calls.append((args, kwargs)) or "set")
    assert netlang.configure_threads(wait_policy="passive") == "set"
    assert calls == [((None, "passive"), {"blas_threads": 1})]
    count = "must be a whole number of at least 1, or None, got"
    for bad, said in [({"threads": 0}, f"threads {count} 0"),
                      ({"threads": "2"}, f"threads {count} '2'"),
                      ({"blas_threads": -1}, f"blas_threads {count} -1"),
                      ({"wait_policy": "bogus"},
                       "wait_policy must be 'active', 'passive' or None, got 'bogus'")]:
        with pytest.raises(netlang.NetlangError) as caught:
            netlang.configure_threads(**bad)
        assert str(caught.value) == f"usage error: configure_threads: {said}"
    assert len(calls) == 1          # nothing set by a refused call


def test_gpu_without_cupy_is_one_clear_error(fresh_gpu_slot, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)   # import cupy -> ImportError
    with pytest.raises(DeviceError) as err:
        get_backend("gpu")
    assert str(err.value) == (
        "device error: --device gpu needs CuPy, which is not installed\n"
        "hint: install CuPy for your CUDA version (pip install cupy-cuda12x, or cupy-cuda13x) "
        "on a machine with an NVIDIA GPU, or use --device cpu")


def test_gpu_with_cupy_but_no_device_is_one_clear_error(fresh_gpu_slot, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(count=0))
    with pytest.raises(DeviceError) as err:
        get_backend("gpu")
    assert str(err.value) == ("device error: --device gpu: CuPy found no GPU on this machine\n"
                              "hint: use --device cpu")


def test_gpu_with_a_broken_driver_says_what_cuda_said(fresh_gpu_slot, monkeypatch):
    error = RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(error=error))
    with pytest.raises(DeviceError) as err:
        get_backend("gpu")
    assert err.value.message == (
        "--device gpu: CuPy cannot reach a GPU (cudaErrorInsufficientDriver: CUDA driver "
        "version is insufficient)")


def test_unknown_device_names_the_choices():
    with pytest.raises(DeviceError) as err:
        get_backend("tpu")
    assert str(err.value) == ("device error: unknown device 'tpu'\n"
                              "hint: use --device cpu or --device gpu")


def test_a_gpu_backend_carries_the_gpu_overrides(fresh_gpu_slot, monkeypatch):
    cupy = fake_cupy(count=1)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    gpu = get_backend("gpu")
    assert gpu.name == "gpu" and gpu.xp is cupy and get_backend("gpu") is gpu
    assert gpu.kernel_for(get_op("fused")) is gpu_kernels.fused_gpu
    assert gpu.kernel_for(get_op("add")) is get_op("add").kernel


# -- per-backend kernels ---------------------------------------------------------------------

def test_kernel_for_prefers_the_backends_override():
    def doubled_relu(xp, x):
        return 2 * xp.maximum(x, 0)

    special = Backend("cpu", np, {"relu": doubled_relu})
    assert special.kernel_for(get_op("relu")) is doubled_relu
    assert special.kernel_for(get_op("tanh")) is get_op("tanh").kernel
    assert CPU_REFERENCE.kernel_for(get_op("relu")) is get_op("relu").kernel


def test_the_executor_runs_the_backends_override():
    special = Backend("cpu", np, {"relu": lambda xp, x: 2 * xp.maximum(x, 0)})
    b = Builder(Graph(name="g"))
    x = b.input("x", TensorType(DType.f32, (3,)))
    y = b.relu(x)
    program = plan(b.graph, [y], {x})
    (out,) = Executor(special).run(program, {x: np.array([-1.0, 0.5, 2.0], np.float32)},
                                   State(special))
    np.testing.assert_array_equal(out, [0.0, 1.0, 4.0])


def test_metric_sums_read_back_means_once_and_start_over():
    sums = MetricSums(CPU_REFERENCE)
    for loss, acc in [(1.0, 0.5), (3.0, 1.0)]:
        sums.add({"loss": np.float32(loss), "accuracy": np.float32(acc)})
    assert sums.read() == {"loss": 2.0, "accuracy": 0.75}
    assert sums.read() == {}


def test_scatter_add_sums_repeated_indices():
    target = np.zeros(4, np.float32)
    backend_module.scatter_add(np, target, np.array([1, 0, 1, 3]), np.float32([1, 2, 3, 4]))
    np.testing.assert_array_equal(target, [2, 4, 0, 4])


# -- generated CUDA ----------------------------------------------------------------------------

def test_bias_add_relu_becomes_this_cuda():
    expr = (("add", ("x0", "x1"), ()), ("relu", ("t0",), ()))
    src = gpu_kernels.cuda_source(expr, [DType.f32, DType.f32])
    assert (src.in_params, src.out_params) == ("float32 x0, float32 x1", "float32 y")
    assert src.operation == ("float t0 = (float)(x0 + x1);\n"
                             "float t1 = (float)((t0 < (float)0 ? (float)0 : t0));\n"
                             "y = t1;")
    assert src.name.startswith("netlang_fused_") and src.name.isidentifier()
    assert gpu_kernels.cuda_source(expr, [DType.f32, DType.f32]).name == src.name
    assert gpu_kernels.cuda_source(expr, [DType.f64, DType.f64]).name != src.name


def adam_update_groups():
    """The fused groups of the Adam update of one parameter (the optimizer's own IR)."""
    from netlang.train.optimizers import Adam

    b = Builder(Graph(name="adam"))
    w = b.param("w", TensorType(DType.f32, (3, 4)))
    g = b.input("g", TensorType(DType.f32, (3, 4)))
    lr = b.input("lr", TensorType(DType.f32, ()))
    adam = Adam(lr=1e-3, hyper=dict(Adam.defaults))
    b.graph.updates["w"] = adam.step(b, "w", w, g, adam.prepare(b, lr))
    fused, _ = fuse_elementwise(b.graph)
    return fused


def test_an_adam_update_becomes_three_kernels_with_this_cuda():
    graph = adam_update_groups()
    sources = {name: gpu_kernels.cuda_source(
        graph.nodes[nid].attrs["expr"], [graph.nodes[i].type.dtype
                                         for i in graph.nodes[nid].inputs])
        for name, nid in graph.updates.items() if graph.nodes[nid].op == "fused"}
    assert sorted(sources) == ["w", "w/m", "w/v"]
    assert sources["w/m"].operation == ("float t0 = (float)(x0 - x1);\n"
                                        "float t1 = (float)(t0 * x2);\n"
                                        "float t2 = (float)(x1 + t1);\n"
                                        "y = t2;")
    assert sources["w"].in_params == ("float32 x0, float32 x1, float32 x2, float32 x3, "
                                      "float32 x4")
    assert sources["w"].operation == ("float t0 = (float)(sqrt((float)x0));\n"
                                      "float t1 = (float)(t0 + x1);\n"
                                      "float t2 = (float)((float)x2 / (float)t1);\n"
                                      "float t3 = (float)(x3 * t2);\n"
                                      "float t4 = (float)(x4 - t3);\n"
                                      "y = t4;")


def test_attributes_become_literals_and_steps_keep_their_dtypes():
    expr = (("equal", ("x0", "x1"), ()), ("select", ("t0", "x2", "x1"), ()),
            ("leaky_relu", ("t1",), (("alpha", 0.2),)), ("pow", ("t2",), (("exponent", 3),)))
    src = gpu_kernels.cuda_source(expr, [DType.f64, DType.f64, DType.f64])
    assert src.operation.splitlines() == [
        "bool t0 = (bool)(x0 == x1);",
        "double t1 = (double)((t0 ? (double)x2 : (double)x1));",
        "double t2 = (double)((t1 > 0 ? (double)t1 : (double)0.2 * t1));",
        "double t3 = (double)(pow((double)t2, (double)3));",
        "y = t3;"]


def test_a_kernel_takes_only_the_inputs_its_output_needs():
    """ElementwiseKernel broadcasts every argument to the output, so dead steps and unused
    inputs stay out of the kernel (an unused [3,4] input could not broadcast to [4])."""
    expr = (("exp", ("x0",), ()), ("neg", ("x2",), ()))
    src = gpu_kernels.cuda_source(expr, [DType.f32] * 3)
    assert (src.in_params, src.operation) == ("float32 x2", "float t1 = (float)(-x2);\ny = t1;")


def test_every_elementwise_op_has_a_cuda_expression():
    from netlang.ops.registry import all_ops

    missing = sorted(n for n, op in all_ops().items()
                     if op.elementwise and op.expr is None)
    assert not missing, f"fusible ops without an element expression: {missing}"


# The generated CUDA bodies are plain C++ expressions: compiled with the host's C++ compiler
# into one elementwise loop each, they must compute what the NumPy kernels compute.

POSITIVE = {"log", "sqrt", "rsqrt"}
ONE_INPUT = [("neg", ()), ("square", ()), ("exp", ()), ("log", ()), ("sqrt", ()),
             ("rsqrt", ()), ("sin", ()), ("cos", ()), ("tanh", ()), ("abs", ()), ("relu", ()),
             ("sigmoid", ()), ("sign", ()), ("pow", (("exponent", 3),)),
             ("pow", (("exponent", 0.5),)), ("leaky_relu", (("alpha", 0.2),)),
             ("elu", (("alpha", 1.0),))]
TWO_INPUTS = [("add", ()), ("sub", ()), ("mul", ()), ("div", ()), ("maximum", ()),
              ("minimum", ()), ("relu_grad", ()), ("leaky_relu_grad", (("alpha", 0.2),)),
              ("elu_grad", (("alpha", 1.0),)), ("sigmoid_cross_entropy", ()),
              ("equal", ()), ("greater", ()), ("less", ())]


# The host compiler's stand-in for CuPy's float16 class: an IEEE half (g++ 12 on x86-64).
HOST_PRELUDE = ("#include <cmath>\n#include <math.h>\nusing namespace std;\n"
                "typedef _Float16 float16;\n")


def host_cases(rng) -> list[tuple]:
    """(expr, input arrays): every op alone (in f16, f32 and f64), then random chains."""
    cases = []
    for dtype in (np.float16, np.float32, np.float64):
        for op, attrs in ONE_INPUT:
            lo = 0.1 if op in POSITIVE or (op == "pow" and attrs[0][1] == 0.5) else -3.0
            cases.append(((((op, ("x0",), attrs),)), [rng.uniform(lo, 3, (5, 4)).astype(dtype)]))
        for op, attrs in TWO_INPUTS:
            b = rng.uniform(0.5, 2, 4) * rng.choice([-1, 1], 4)
            if op == "sigmoid_cross_entropy":     # labels: probabilities shaped like logits
                b = rng.uniform(0, 1, (5, 4))
            a = np.round(rng.uniform(-3, 3, (5, 4)), 1)
            cases.append((((op, ("x0", "x1"), attrs),), [a.astype(dtype), b.astype(dtype)]))
        cond = rng.uniform(size=(5, 4)) > 0.5
        cases.append(((("select", ("x0", "x1", "x2"), ()),),
                      [cond, rng.standard_normal((5, 4)).astype(dtype),
                       rng.standard_normal(4).astype(dtype)]))
    safe_one = ["neg", "sin", "cos", "tanh", "sigmoid", "relu", "abs", "square"]
    safe_two = ["add", "sub", "mul", "maximum", "minimum"]
    for _ in range(30):
        refs, steps = ["x0", "x1", "x2"], []
        for j in range(int(rng.integers(2, 7))):
            if rng.uniform() < 0.5:
                steps.append((str(rng.choice(safe_one)), (refs[-1],), ()))
            else:
                steps.append((str(rng.choice(safe_two)), (refs[-1], str(rng.choice(refs))), ()))
            refs.append(f"t{j}")
        arrays = [rng.uniform(-2, 2, s).astype(np.float32) for s in [(3, 4), (4,), (3, 4)]]
        cases.append((tuple(steps), arrays))
    return cases


def cpp_function(index: int, expr: tuple, dtypes: list) -> str:
    src = gpu_kernels.cuda_source(expr, dtypes)
    ctype = gpu_kernels.CTYPE
    out_type = gpu_kernels.step_types(expr, [TensorType(d, ()) for d in dtypes])[-1].dtype
    params = [f"const {ctype[d]}* X{i}" for i, d in enumerate(dtypes)]
    loads = " ".join(f"{ctype[d]} x{i} = X{i}[k_];" for i, d in enumerate(dtypes))
    return (f'extern "C" void kernel{index}({", ".join(params)}, {ctype[out_type]}* Y, '
            f"long n) {{\n  for (long k_ = 0; k_ < n; ++k_) {{ {loads} {ctype[out_type]} y;\n"
            f"{src.operation}\n  Y[k_] = y; }}\n}}\n")


def compile_host_kernels(cases, folder: pathlib.Path):
    import ctypes
    import shutil
    import subprocess

    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++) to compile the generated kernel bodies on the host")
    body = HOST_PRELUDE + "".join(
        cpp_function(i, expr, [DType.of(a.dtype) for a in arrays])
        for i, (expr, arrays) in enumerate(cases))
    (folder / "kernels.cpp").write_text(body)
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-o", str(folder / "kernels.so"),
                    str(folder / "kernels.cpp")], check=True, capture_output=True)
    return ctypes.CDLL(str(folder / "kernels.so"))


def test_generated_kernel_bodies_compute_what_numpy_computes(tmp_path):
    import ctypes

    cases = host_cases(np.random.default_rng(7))
    library = compile_host_kernels(cases, tmp_path)
    for i, (expr, arrays) in enumerate(cases):
        want = fused_kernel(np, *arrays, expr=expr)
        flat = [np.ascontiguousarray(np.broadcast_to(a, want.shape)) for a in arrays]
        got = np.empty_like(want)
        getattr(library, f"kernel{i}")(*[ctypes.c_void_p(a.ctypes.data) for a in flat],
                                       ctypes.c_void_p(got.ctypes.data),
                                       ctypes.c_long(want.size))
        tol = {np.float16: 1e-3, np.float32: 1e-6}.get(want.dtype.type, 1e-12)
        np.testing.assert_allclose(got, want, rtol=tol * 4, atol=tol,
                                   err_msg=f"{expr} on {[a.dtype.name for a in arrays]}")
        assert got.dtype == want.dtype


class HostElementwiseKernel:
    """cupy.ElementwiseKernel's stand-in: the same generated body, compiled with g++ for the
    host, called on broadcast NumPy arrays.  With it a NumPy-backed ``cupy`` runs the GPU
    backend's own code paths (overrides, generated kernels, device generators) here."""

    folder: ClassVar[pathlib.Path | None] = None
    built: ClassVar[dict] = {}

    def __init__(self, in_params, out_params, operation, name):
        import ctypes
        import shutil
        import subprocess

        params = [p.split() for p in in_params.split(", ")]
        self.dtypes = [DType.of(dtype) for dtype, _ in params]
        names = [name for _, name in params]
        out = DType.of(out_params.split()[0])
        key = (in_params, out_params, operation)
        if key not in self.built:
            compiler = shutil.which("g++") or shutil.which("c++")
            if compiler is None:
                pytest.skip("no C++ compiler (g++) to run generated kernels on the host")
            ctype = gpu_kernels.CTYPE
            params = [f"const {ctype[d]}* P{i}" for i, d in enumerate(self.dtypes)]
            loads = " ".join(f"{ctype[d]} {name} = P{i}[k_];"
                             for i, (d, name) in enumerate(zip(self.dtypes, names)))
            source = (HOST_PRELUDE +
                      f'extern "C" void run({", ".join(params)}, {ctype[out]}* Y, long n) {{\n'
                      f"for (long k_ = 0; k_ < n; ++k_) {{ {loads} {ctype[out]} y;\n"
                      f"{operation}\nY[k_] = y; }}\n}}\n")
            path = self.folder / f"{name}_{len(self.built)}"
            path.with_suffix(".cpp").write_text(source)
            subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-o", str(path.with_suffix(
                ".so")), str(path.with_suffix(".cpp"))], check=True, capture_output=True)
            self.built[key] = ctypes.CDLL(str(path.with_suffix(".so"))).run
        self.run = self.built[key]

    def __call__(self, *arrays):
        import ctypes

        *inputs, out = arrays
        assert out.flags.c_contiguous and len(inputs) == len(self.dtypes)
        flat = [np.ascontiguousarray(np.broadcast_to(a, out.shape), dtype=d.numpy)
                for a, d in zip(inputs, self.dtypes)]
        self.run(*[ctypes.c_void_p(a.ctypes.data) for a in flat], ctypes.c_void_p(
            out.ctypes.data), ctypes.c_long(out.size))
        return out


class HostRandomState:
    """cupy.random.RandomState's stand-in: a generator re-made by every ``seed``."""

    def __init__(self, method):
        assert method == 7                       # asked for Philox
        self.generator = None

    def seed(self, seed):
        assert isinstance(seed, np.uint64)       # what CuPy's seed() casts safely
        self.generator = np.random.default_rng(int(seed))

    def random_sample(self, size, dtype):
        return self.generator.random(size, dtype=dtype)


class NumpyCupy(types.ModuleType):
    """A ``cupy`` made of NumPy (everything not set here is NumPy's), one 'GPU'."""

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.fixture
def numpy_as_gpu(fresh_gpu_slot, monkeypatch, tmp_path):
    cupy = NumpyCupy("cupy")
    cupy.asnumpy = np.asarray
    cupy.ElementwiseKernel = HostElementwiseKernel
    cupy.RawKernel = HostRawKernel
    cupy.random = types.SimpleNamespace(RandomState=HostRandomState)
    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
        curand=types.SimpleNamespace(CURAND_RNG_PSEUDO_PHILOX4_32_10=7),
        Stream=types.SimpleNamespace(null=types.SimpleNamespace(synchronize=lambda: None)),
        get_current_stream=lambda: types.SimpleNamespace(ptr=0))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(HostElementwiseKernel, "folder", tmp_path)
    monkeypatch.setattr(HostElementwiseKernel, "built", {})
    monkeypatch.setattr(HostRawKernel, "folder", tmp_path)
    monkeypatch.setattr(HostRawKernel, "launches", [])
    monkeypatch.setattr(gpu_kernels, "_RAW", {})
    monkeypatch.setattr(gpu_kernels, "_COMPILED", {})
    monkeypatch.setattr(gpu_kernels, "_PHILOX", {})
    monkeypatch.setattr(gpu_kernels, "_LAUNCHES", gpu_kernels.PerExpression())
    return get_backend("gpu")


@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 70_000])
def test_a_raw_kernel_visits_every_index_of_its_loop_once(numpy_as_gpu, n):
    """NETLANG_LOOP spreads 0..n-1 over the launch's grid (at most 256 blocks of 256 threads,
    so past 65,536 indices each thread takes several), each index exactly once."""
    source = gpu_kernels.RawSource("count_visits", """
NETLANG_KERNEL count_visits(int* __restrict__ seen, long long n) {
    NETLANG_LOOP(i, n) { seen[i] += 1; }
}""")
    seen = np.zeros(max(n, 1), np.int32)
    kernel = gpu_kernels.raw_kernel(numpy_as_gpu.xp, source)
    assert gpu_kernels.raw_kernel(numpy_as_gpu.xp, source) is kernel    # compiled once
    gpu_kernels.launch(kernel, n, (seen, np.int64(n)))
    assert seen[:n].tolist() == [1] * n
    blocks = HostRawKernel.launches[-1][1][0]
    assert blocks == max(1, min(256, -(-n // 256)))


@pytest.mark.parametrize("spec, rtol, atol", [("spiral.net", 1e-5, 1e-6),
                                              ("residual.net", 1e-4, 4e-3)])
def test_train_steps_through_the_gpu_code_paths_match_the_cpu(numpy_as_gpu, spec, rtol, atol):
    """A spec's Adam steps on the GPU backend (generated kernels for every fused group, on
    the host) give the CPU backend's losses and parameters: spiral's MLP, and residual's
    batchnorms written as elementwise steps by the batchnorm pass.  oneDNN's convolutions on
    the CPU sum in another order, and Adam turns a tiny gradient's difference into a step of
    up to lr: residual's parameters agree to 3 steps of its lr 1e-3."""
    import netlang
    from netlang.cli.bench import build_train_model, synthetic_batch, train_config_of
    from netlang.train.step import LR_INPUT

    model = netlang.compile(pathlib.Path(__file__).parents[2] / "specs" / spec)
    train, optimizer = build_train_model(model, train_config_of(model))
    feeds = {**synthetic_batch(model.graph, 16), LR_INPUT: np.float32(optimizer.lr)}
    runs = {}
    for device in ("cpu", "gpu"):
        session = train.session(device, seed=3)
        losses = [session.run(model.graph.loss, feeds, training=True, updates=True)
                  for _ in range(3)]
        runs[device] = (losses, session.state.to_numpy(), session.executor.kernel_calls)
    assert session.backend is numpy_as_gpu
    # the fused groups ran as generated code: the updates' in the one multi-tensor launch
    # (runtime/cuda_updates.py), the others as ElementwiseKernels
    assert len(HostElementwiseKernel.built) >= 2
    assert any(n.startswith("netlang_updates_") for n, _, _ in HostRawKernel.launches)
    np.testing.assert_allclose(runs["gpu"][0], runs["cpu"][0], rtol=rtol)
    for name, value in runs["cpu"][1].items():
        np.testing.assert_allclose(runs["gpu"][1][name], value, rtol=10 * rtol, atol=atol,
                                   err_msg=name)
    assert runs["gpu"][2] == runs["cpu"][2]


@pytest.mark.parametrize("device", DEVICES[1:])
def test_random_ops_draw_on_the_device_keyed_by_the_host_generator(device, request):
    """Dropout masks are made on the device, each from one key of the host generator: a run
    restored to the host generator's saved state (a resumed checkpoint) draws the same masks."""
    backend = backend_for(device, request)
    b = Builder(Graph(name="drop"))
    x = b.input("x", TensorType(DType.f32, (64, 64)))
    y = b.op("dropout_mask", x, rate=0.25)
    program = plan(b.graph, [y], {x})
    host = np.random.default_rng(5)
    executor = Executor(backend, host)
    ones = backend.asarray(np.ones((64, 64), np.float32))

    def draw():
        (mask,) = executor.run(program, {x: ones}, State(backend))
        assert type(mask) is type(ones)                 # made on the device
        return backend.to_numpy(mask)

    first = draw()
    saved = host.bit_generator.state
    second, third = draw(), draw()
    assert set(np.unique(first)) <= {0.0, np.float32(1 / 0.75)}
    assert not np.array_equal(first, second) and not np.array_equal(second, third)
    assert 0.6 < float(np.mean(first > 0)) < 0.9
    host.bit_generator.state = saved
    np.testing.assert_array_equal(draw(), second)
    np.testing.assert_array_equal(draw(), third)
    resumed = Executor(backend, np.random.default_rng(5))   # a fresh session, same seed
    executor = resumed
    np.testing.assert_array_equal(draw(), first)
    if device == "standin":     # made by dropout_mask's Philox kernel (gpu_draws), not cuRAND
        assert {name for name, _, _ in HostRawKernel.launches} == {"netlang_dropout_philox_f32"}
        assert not gpu_kernels._PHILOX


class FakeKernel:
    """Stands in for cupy.ElementwiseKernel: records what it was built from and called with."""

    made: ClassVar[list] = []

    def __init__(self, in_params, out_params, operation, name):
        self.source = (in_params, out_params, operation, name)
        self.calls = []
        FakeKernel.made.append(self)

    def __call__(self, *arrays):
        self.calls.append([a.shape for a in arrays])
        arrays[-1][...] = 0


def test_a_fused_node_is_one_launch_and_its_kernel_is_built_once(monkeypatch):
    fake = types.SimpleNamespace(ndarray=np.ndarray, asarray=np.asarray, empty=np.empty,
                                 ElementwiseKernel=FakeKernel)
    monkeypatch.setattr(FakeKernel, "made", [])
    monkeypatch.setattr(gpu_kernels, "_COMPILED", {})
    monkeypatch.setattr(gpu_kernels, "_PHILOX", {})
    monkeypatch.setattr(gpu_kernels, "_LAUNCHES", gpu_kernels.PerExpression())
    expr = (("mul", ("x0", "x1"), ()), ("tanh", ("t0",), ()))
    x, w = np.ones((4, 3), np.float32), np.ones(3, np.float32)
    for batch in (x, x, x[:2]):
        out = gpu_kernels.fused_gpu(fake, batch, w, expr=expr)
        assert out.shape == batch.shape and out.dtype == np.float32
    assert len(FakeKernel.made) == 1
    assert FakeKernel.made[0].calls == [[(4, 3), (3,), (4, 3)]] * 2 + [[(2, 3), (3,), (2, 3)]]
    assert FakeKernel.made[0].source[2].startswith("float t0 = (float)(x0 * x1);")


# -- parity of every op on every backend -------------------------------------------------------

ALL_CASES = [c for cases in CASES.values() for c in cases]
PARITY = settings(max_examples=3, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture])


def backend_for(device: str, request) -> Backend:
    return request.getfixturevalue("numpy_as_gpu") if device == "standin" else get_backend(
        device)


def run_on(backend: Backend, graph: Graph, fetches, feeds, seed: int = 0):
    program = plan(graph, list(fetches), set(feeds))
    executor = Executor(backend, np.random.default_rng(seed))
    values = executor.run(program, {k: backend.asarray(v) for k, v in feeds.items()},
                          State(backend))
    return [backend.to_numpy(v) for v in values]


def as_f32(arrays):
    return [a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays]


def check_value(got, want, declared: TensorType, what: str, exact_values: bool):
    assert got.shape == declared.shape, f"{what}: executed {got.shape}, inferred {declared}"
    assert DType.of(got.dtype) == declared.dtype, f"{what}: executed {got.dtype}, {declared}"
    if exact_values:
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5, err_msg=what)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: f"{c.op}-{c.name}")
@PARITY
@given(data=st.data())
def test_op_runs_the_same_on_every_backend(device, case, data, request):
    backend = backend_for(device, request)
    arrays, attrs = case.draw(data.draw)
    arrays = as_f32(arrays)
    b, ins, y = build(case.op, arrays, attrs)
    feeds = dict(zip(ins, arrays))
    (got,) = run_on(backend, b.graph, [y], feeds)
    random = get_op(case.op).random
    want = (np.asarray(call_kernel(case.op, arrays, attrs)) if device == "cpu"
            else run_on(CPU_REFERENCE, b.graph, [y], feeds)[0])
    check_value(got, want, b.graph.nodes[y].type, f"{case.op} on {device}", not random)
    out_type = b.graph.nodes[y].type
    if device == "cpu" or not case.grad or random or not out_type.dtype.is_float:
        return
    wrt = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    cot = b.input("cotangent", out_type)
    feeds[cot] = np.random.default_rng(1).uniform(-1, 1, out_type.shape).astype(
        out_type.dtype.numpy)
    grads = [g for g in gradients(b, y, [ins[i] for i in wrt], seed=cot) if g is not None]
    for g, cpu_g, gpu_g in zip(grads, run_on(CPU_REFERENCE, b.graph, grads, feeds),
                               run_on(backend, b.graph, grads, feeds)):
        check_value(gpu_g, cpu_g, b.graph.nodes[g].type, f"d {case.op} on {device}", True)


@pytest.mark.parametrize("device", DEVICES)
@PARITY
@given(data=st.data())
def test_fused_groups_run_the_same_as_their_ops(device, data, request):
    """A random chain through the backend's fused kernel (generated CUDA on the GPU)."""
    from tests.ops.cases_fused import ANY_BINARY, ANY_UNARY, draw_expr, draw_inputs

    n = data.draw(st.integers(1, 3))
    arrays = as_f32(draw_inputs(data.draw, n))
    expr = draw_expr(data.draw, n, ANY_UNARY, ANY_BINARY)
    backend = backend_for(device, request)
    kernel = backend.kernel_for(get_op("fused"))
    got = backend.to_numpy(kernel(backend.xp, *[backend.asarray(a) for a in arrays],
                                  expr=expr))
    b = Builder(Graph(name="chain"))
    ins = [b.input(f"x{i}", TensorType(DType.f32, a.shape)) for i, a in enumerate(arrays)]
    refs = {f"x{i}": v for i, v in enumerate(ins)}
    for j, (op, args, attrs) in enumerate(expr):
        refs[f"t{j}"] = b.op(op, *[refs[a] for a in args], **dict(attrs))
    (want,) = run_on(CPU_REFERENCE, b.graph, [refs[f"t{len(expr) - 1}"]], dict(zip(ins, arrays)))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(fused_kernel(np, *arrays, expr=expr), want, rtol=2e-6,
                               atol=1e-6)
