"""GPU-only kernels: the overrides the CuPy backend runs instead of the shared ``xp`` kernels.

* ``fused``: each fused group becomes ONE ``cupy.ElementwiseKernel`` whose CUDA body is
  generated here from the group's sub-expression, compiled once and cached by expression and
  input dtypes.  The generator is plain string code, so its output is unit-tested without a
  GPU.  A group with an op the generator does not know runs the shared ``out=`` path instead.
* random ops: ``dropout_mask`` runs its own Philox kernel (runtime/gpu_draws.py, capturable);
  the others' shared kernels draw from a generator and get ``KeyedDraws``, cuRAND draws keyed
  by the session's host generator.  Either way masks are made on the device and a resumed
  run draws what the uninterrupted one would have.
* hand-written loops (``RawSource``): CUDA C over flat arrays, written with the two macros of
  ``RAW_PRELUDE`` (``NETLANG_KERNEL`` heads a kernel, ``NETLANG_LOOP(i, n)`` visits ``0..n-1``
  across the whole grid, 64-bit indices), compiled once per source as a ``cupy.RawKernel``
  and launched by ``launch``.  The tests define the two macros for the host instead and
  compile the same text with g++, so every loop's arithmetic is checked without a GPU.

This module never imports CuPy: kernels receive it as ``xp`` (backend.py is the only importer).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from netlang.ir.types import DType, TensorType
from netlang.ops.fused import (
    fused_kernel,
    input_ref,
    output_ref,
    step_ref,
    step_types,
)
from netlang.ops.registry import all_ops, get_op

CTYPE = {DType.f32: "float", DType.f64: "double", DType.i32: "int", DType.i64: "long long",
         DType.bool: "bool", DType.f16: "float16"}
# A half step computes in float and rounds its result to half (``(float)(float16)(...)``), as
# NumPy's float16 ufuncs do per op; half inputs are read into float locals first, so no
# expression mixes CuPy's float16 class with float (an ambiguous overload in C++).  CuPy has
# no bfloat16: bf16 runs on the CPU only (backend.py says so at the value that needs it).
HALF_COMPUTE = "float"

@dataclass(frozen=True)
class KernelSource:
    """What ``cupy.ElementwiseKernel(in_params, out_params, operation, name)`` is made of."""

    in_params: str
    out_params: str
    operation: str
    name: str

    def text(self) -> str:
        return (f"// {self.name}\n// in: {self.in_params}\n// out: {self.out_params}\n"
                f"{self.operation}")


def c_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = repr(float(value))
    return {"inf": "(1.0 / 0.0)", "-inf": "(-1.0 / 0.0)", "nan": "(0.0 / 0.0)"}.get(text, text)


def element_expr(op: str) -> str | None:
    """The op record's C expression of one element (``{0} + {1}``), if it has one.  Each
    matches the NumPy kernel, NaN propagation of maximum/minimum/relu included."""
    return get_op(op).expr


def can_generate(expr: tuple) -> bool:
    return all(element_expr(op) is not None for op, _, _ in expr)


def live_parts(expr: tuple) -> tuple[list[int], list[int]]:
    """(steps the output depends on, inputs those steps read), both in order.

    ElementwiseKernel broadcasts every argument to the output's shape, so a kernel takes only
    the inputs its output needs (the fusion pass never makes dead steps; hand-made
    expressions may)."""
    needed = {output_ref(expr)}
    steps = []
    for j in reversed(range(len(expr))):
        if step_ref(j) in needed:
            steps.append(j)
            needed.update(expr[j][1])
    inputs = sorted(int(r[1:]) for r in needed if r.startswith("x"))
    return steps[::-1], inputs


def cuda_source(expr: tuple, in_dtypes: list[DType]) -> KernelSource:
    """The CUDA body of one fused group: one local variable per step, then the output.

    ``in_dtypes`` are the dtypes of all the group's inputs; the kernel's parameters are the
    inputs its output depends on (``live_parts``), in order, keeping their names ``x<i>``.
    Shapes do not matter (ElementwiseKernel broadcasts); every step computes in its own
    dtype, as the unfused ops would.
    """
    types = step_types(expr, [TensorType(d, ()) for d in in_dtypes])
    steps, inputs = live_parts(expr)
    lines, names = [], {}
    for i in inputs:
        if in_dtypes[i] is DType.f16:
            names[input_ref(i)] = f"{input_ref(i)}_f"
            lines.append(f"{HALF_COMPUTE} {input_ref(i)}_f = ({HALF_COMPUTE}){input_ref(i)};")
    for j in steps:
        op, args, attrs = expr[j]
        half = types[j].dtype is DType.f16
        ctype = HALF_COMPUTE if half else CTYPE[types[j].dtype]
        fields = {k: c_literal(v) for k, v in attrs if v is not None}
        body = element_expr(op).format(*[names.get(a, a) for a in args], T=ctype, **fields)
        value = f"({ctype})(float16)({body})" if half else f"({ctype})({body})"
        lines.append(f"{ctype} {step_ref(j)} = {value};")
    lines.append(f"y = {output_ref(expr)};")
    in_params = ", ".join(f"{in_dtypes[i].numpy.name} {input_ref(i)}" for i in inputs)
    out_params = f"{types[-1].dtype.numpy.name} y"
    key = repr((expr, [str(d) for d in in_dtypes])).encode()
    name = "netlang_fused_" + hashlib.sha1(key).hexdigest()[:12]
    return KernelSource(in_params, out_params, "\n".join(lines), name)


RAW_PRELUDE = """\
#define NETLANG_KERNEL extern "C" __global__ void
#define NETLANG_LOOP(i, n) \\
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); \\
         i += (long long)blockDim.x * gridDim.x)
"""
# A grid-stride loop's shape: 256 threads a block, at most 256 blocks (65,536 threads, enough
# to fill an H100's 132 SMs several times over), fewer when there is less work.
BLOCK, MAX_BLOCKS = 256, 256


@dataclass(frozen=True)
class RawSource:
    """One CUDA kernel written against ``RAW_PRELUDE``: its entry ``name`` and its ``code``
    (which starts ``NETLANG_KERNEL name(...)``)."""

    name: str
    code: str

    def text(self) -> str:
        return RAW_PRELUDE + self.code


_RAW: dict[tuple, object] = {}


def raw_kernel(xp, source: RawSource):
    """The ``cupy.RawKernel`` of this source, compiled once per array module."""
    key = (id(xp), source)
    kernel = _RAW.get(key)
    if kernel is None:
        kernel = _RAW[key] = xp.RawKernel(source.text(), source.name)
    return kernel


def launch(kernel, n: int, args: tuple) -> None:
    """Run ``kernel`` over a loop of ``n`` indices (``NETLANG_LOOP``), on the current stream.
    Scalars in ``args`` must be NumPy scalars of the C types the kernel declares."""
    blocks = max(1, min(MAX_BLOCKS, -(-int(n) // BLOCK)))
    kernel((blocks,), (BLOCK,), args)


class PerExpression:
    """A cache looked up on every call of a fused kernel: keyed by the identity of the
    expression (the node's own attribute, so no nested tuple is hashed per call), then by
    a key the caller derives from the arrays (their dtypes and shapes).  (The CPU makes its
    fused plans once per program instead; the GPU issue moves this there too.)"""

    def __init__(self, limit: int = 4096):
        self.entries: dict[int, tuple] = {}
        self.limit = limit

    def get(self, expr: tuple, key, make: Callable, *args):
        entry = self.entries.get(id(expr))
        if entry is None or entry[0] is not expr:
            if len(self.entries) >= self.limit:
                self.entries.clear()
            entry = self.entries[id(expr)] = (expr, {})
        value = entry[1].get(key)
        if value is None:
            value = entry[1][key] = make(*args)
        return value


_COMPILED: dict[tuple, object] = {}
_LAUNCHES = PerExpression()


def compiled_kernel(xp, expr: tuple, in_dtypes: tuple[DType, ...]):
    """The ElementwiseKernel for this expression and these dtypes, made once."""
    key = (expr, in_dtypes)
    kernel = _COMPILED.get(key)
    if kernel is None:
        src = cuda_source(expr, list(in_dtypes))
        kernel = xp.ElementwiseKernel(src.in_params, src.out_params, src.operation, src.name)
        _COMPILED[key] = kernel
    return kernel


def _launch_for(xp, expr: tuple, arrays) -> tuple:
    """(kernel, the inputs it takes, output shape, output dtype) for these inputs, cached per
    dtypes and shapes."""
    return _LAUNCHES.get(expr, tuple([(a.dtype, a.shape) for a in arrays]), _new_launch, xp,
                         expr, arrays)


def _new_launch(xp, expr: tuple, arrays) -> tuple:
    dtypes = tuple(DType.of(a.dtype) for a in arrays)
    out = step_types(expr, [TensorType(d, tuple(a.shape)) for d, a in zip(dtypes, arrays)])
    used = tuple(live_parts(expr)[1])
    return compiled_kernel(xp, expr, dtypes), used, out[-1].shape, out[-1].dtype.numpy


def fused_gpu(xp, *arrays, expr):
    """One generated kernel launch for the whole group (the shared path if it cannot be)."""
    if not can_generate(expr):
        return fused_kernel(xp, *arrays, expr=expr)
    kernel, used, shape, dtype = _launch_for(xp, expr, arrays)
    out = xp.empty(shape, dtype=dtype)
    kernel(*[arrays[i] for i in used], out)
    return out


class KeyedDraws:
    """Device random numbers whose only state is the session's host generator.

    Each draw takes one 63-bit key from the host generator (``Session.rng``, which checkpoints
    save and gradcheck resets) and seeds a counter-based Philox cuRAND generator with it;
    re-seeding Philox costs no setup kernel.  So a run resumed from a checkpoint, or a
    gradient check that resets the host generator, draws exactly the masks an uninterrupted
    run would.  ``random(shape, dtype)`` is what the shared random kernels call.
    """

    def __init__(self, device, host):
        self.device = device
        self.host = host if host is not None else np.random.default_rng()

    def random(self, shape, dtype=np.float64):
        self.device.seed(np.uint64(self.host.integers(2**63 - 1)))
        return self.device.random_sample(shape, dtype=dtype)


_PHILOX: dict[int, object] = {}


def philox(xp):
    """The one cuRAND Philox generator of this array module: every draw re-seeds it, so all
    sessions share it and none keeps state in it."""
    generator = _PHILOX.get(id(xp))
    if generator is None:
        method = xp.cuda.curand.CURAND_RNG_PSEUDO_PHILOX4_32_10
        generator = _PHILOX[id(xp)] = xp.random.RandomState(method=method)
    return generator


def on_device_rng(kernel: Callable) -> Callable:
    """A random op's shared kernel, drawing on the device with keys from the host generator."""
    def run(xp, *arrays, rng=None, **attrs):
        return kernel(xp, *arrays, rng=KeyedDraws(philox(xp), rng), **attrs)
    run.__doc__ = f"GPU: {kernel.__doc__ or 'random kernel'} (device random numbers)"
    return run


def gpu_kernels() -> dict[str, Callable]:
    """The CuPy backend's overrides: op name -> kernel ``(xp, *arrays, **attrs)``: generated
    fused groups, device random numbers (dropout_mask's own Philox kernel, runtime/gpu_draws.py),
    and the hand-written loops of runtime/cuda_loops.py (pooling, softmax and cross-entropy,
    per-channel sums)."""
    from netlang.runtime.cuda_loops import cuda_loop_kernels
    from netlang.runtime.gpu_draws import keyed_draw_kernels  # they build on RawSource

    table: dict[str, Callable] = {"fused": fused_gpu, **cuda_loop_kernels()}
    for name, opdef in all_ops().items():
        if opdef.random and opdef.kernel is not None:
            table[name] = on_device_rng(opdef.kernel)
    table.update(keyed_draw_kernels())     # dropout_mask: Philox in its own kernel
    return table
