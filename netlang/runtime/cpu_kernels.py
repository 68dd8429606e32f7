"""The CPU backend's own fast paths: kernel factories made once per program and batch size.

A factory gets a node's concrete input shapes and dtypes, its attributes and the executor's
``KernelState``, and returns ``run(*arrays)`` or None (then the next factory, or the
reference kernel in ``ops/``, runs).  The CPU backend tries oneDNN's factories first
(runtime/onednn_kernels.py), then these:

* ``fused``: the group as one generated function of in-place ufunc calls
  (runtime/fused_plan.py), planned once for the program's shapes.
* convolutions the library does not take: stride-1 windows of up to 9 taps over 8-16
  channels as one GEMM per tap over shifted image rows (runtime/shifted_gemm.py), else
  im2col, keeping the forward's patch matrix for the filter gradient of the same input
  (``KernelState.patches``, owned by the executor) and a reused buffer for col2im's taps;
* ``matmul`` where oneDNN declines: NumPy's, written into the planned buffer (``out=``);
* ``mean_grad``: the reference's division, written into the planned buffer instead of
  returned as a broadcast view.

Runs that can write into a buffer they are given say so with ``writes_out``; the executor's
buffer plan (runtime/memory.py) then gives them a fixed view of its arena.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import math
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from netlang.ops.conv import (
    backprop_input,
    conv_with_patches,
    filter_gradient,
    patch_matrix,
    window_geometry,
)
from netlang.ops.reduce import runtime_axes
from netlang.ops.rules import kept_shape
from netlang.runtime import shifted_gemm
from netlang.runtime.fused_plan import make_plan

Run = Callable[..., object]
Factory = Callable[[list, list, dict, "KernelState"], "Run | None"]


def writes_out(run: Run, scratch: tuple = (), overwriting: Callable | None = None) -> Run:
    """Mark ``run`` as one the executor may call as ``run(*arrays, out=buffer)``: it then
    writes its result into ``buffer`` (C-contiguous, the node's shape and dtype, never one of
    its inputs) and returns it.  Called without ``out`` it allocates, as every run may.

    ``scratch`` lists (shape, dtype) of the buffers a call uses and drops; such a run also
    takes ``scratch=(arrays...)`` (else it allocates them).  ``overwriting(i)`` gives a run
    marked the same way whose ``out`` may also be its input ``i`` (identical array, never a
    partial overlap), or None: that lets a variable's update overwrite the variable.
    """
    run.writes_out = True
    run.scratch = tuple(scratch)
    if overwriting is not None:
        run.overwriting = overwriting
    return run


class PatchCache:
    """The last patch matrices built, keyed by the identity of the input array.

    The forward conv builds ``patches(x)``; the filter gradient of the same x (same array
    object, same geometry) takes it back instead of building it again.  An entry dies with
    its array (weak reference) and is handed out once; kernels never mutate their inputs,
    so within a run an array that is still alive still holds the values its patches were
    built from.  Across runs it may not (a planned buffer is the same array every run), so
    the executor ``clear``s the cache before each run.
    """

    def __init__(self, max_entries: int = 8, max_bytes: int = 256 << 20):
        self.entries: dict[int, tuple] = {}
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.hits = 0

    def put(self, x, key: tuple, patches) -> None:
        if patches.nbytes > self.max_bytes:
            return
        try:
            ref = weakref.ref(x, functools.partial(self._forget, id(x)))
        except TypeError:       # an array type without weak references: just do not cache
            return
        self.entries.pop(id(x), None)
        self.entries[id(x)] = (ref, key, patches)
        while len(self.entries) > self.max_entries or sum(
                e[2].nbytes for e in self.entries.values()) > self.max_bytes:
            self.entries.pop(next(iter(self.entries)))

    def _forget(self, x_id: int, _ref) -> None:
        self.entries.pop(x_id, None)

    def clear(self) -> None:
        """Forget every entry.  The executor clears the cache before each run: with planned
        buffers the same array object holds another value in the next run."""
        self.entries.clear()

    def take(self, x, key: tuple):
        entry = self.entries.get(id(x))
        if entry is None or entry[0]() is not x or entry[1] != key:
            return None
        del self.entries[id(x)]
        self.hits += 1
        return entry[2]


# Called with a progress line after each kernel compiled cold (not loaded from the cache,
# ``runtime/jit.py``); the netlang command sets it (cli/__init__.py), the library itself prints
# nothing.  Kept here, not in jit, so that setting it imports no Numba.
on_compile: Callable[[str], None] | None = None

# While a program is bound (``compiles_after_binding``): key -> [compile job, its owners].
_DEFERRED: dict | None = None


@contextlib.contextmanager
def compiles_after_binding():
    """Within this block a kernel handed to ``defer_compile`` is compiled when the block ends,
    and only if one of its owners (tokens its runs hold) is still alive then.  Binding a
    program makes a run per call, and later passes replace many of them (channel sums, merged
    and multi-tensor updates: ``runtime/executor.plan_buffers``); their kernels are then never
    compiled.  mnist.net's first-ever step: 21.5 s compiling every kernel made, 16.5 s
    this way (12.9 s if Numba compiled each kernel at its first call instead).  The
    survivors compile together, beside a helper process when several are new
    (``jit.compile_batch``).  A run counts as dead once no reference is left to
    it; the cyclic collector is off meanwhile, so which kernels compile does not depend on
    when it last ran (a second process must load what the first compiled, no more).
    Nested blocks: the outermost compiles."""
    global _DEFERRED
    if _DEFERRED is not None:
        yield
        return
    _DEFERRED = {}
    try:
        with collector_paused():    # a run is dead when nothing refers to it: the same
            yield                   # kernels every run
            pending = _DEFERRED
    finally:
        _DEFERRED = None
    jobs = [job for job, owners in pending.values() if any(o() is not None for o in owners)]
    if jobs:
        from netlang.runtime import jit  # imported already: it deferred these jobs
        jit.compile_batch(jobs)


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector off within this block (as it was after it)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def defer_compile(key: Hashable, job, owner) -> bool:
    """Within ``compiles_after_binding``: compile ``job`` (a ``(kernel, signature)`` pair for
    ``jit.compile_batch``, once per ``key``) when the block ends if ``owner`` (any object its
    run keeps) is alive then, and say True; outside, False: the caller compiles now."""
    if _DEFERRED is None or owner is None:
        return False
    _DEFERRED.setdefault(key, (job, []))[1].append(weakref.ref(owner))
    return True


class CompileOwner:
    """A token a generated run keeps: its kernel is compiled while the token lives."""


@dataclass
class KernelState:
    """What kernels of one executor share between calls (never process-global).  The
    executor calls ``new_run`` before each run: planned buffers are the same array objects
    every run, holding other values."""

    patches: PatchCache = field(default_factory=PatchCache)
    # softmax cross-entropy's last logits and each row's (max, log-sum-exp), for its gradient
    # in the same run (runtime/cpu_loops.py); held, so the identity test cannot be fooled
    xent_rows: tuple | None = None

    def new_run(self) -> None:
        self.patches.clear()
        self.xent_rows = None


def _geometry(shapes, attrs, khw):
    return window_geometry("conv2d", shapes[0][1:3], khw, attrs["stride"], attrs["dilation"],
                           attrs["padding"])


def ungrouped(attrs) -> bool:
    """The fast convolution paths here compute one group; grouped and depthwise
    convolutions run the reference (one ungrouped convolution per group)."""
    return attrs.get("groups") in (None, 1)


def conv2d(shapes, dtypes, attrs, state: KernelState) -> Run | None:
    if not ungrouped(attrs):
        return None
    gh, gw = _geometry(shapes, attrs, shapes[1][:2])
    if shifted_gemm.usable(np, dtypes[0], gh, gw, shapes[0][3]):
        return lambda x, w: shifted_gemm.conv2d(x, w, gh, gw)

    def run(x, w):
        patches = patch_matrix(np, x, gh, gw)
        state.patches.put(x, (gh, gw), patches)
        return conv_with_patches(x, w, patches, gh, gw)
    return run


def conv2d_bias(shapes, dtypes, attrs, state: KernelState) -> Run:
    """conv2d as above, then the bias and relu in place (the reference's arithmetic)."""
    conv, relu = conv2d(shapes[:2], dtypes[:2], attrs, state), attrs["relu"]

    def run(x, w, b):
        y = conv(x, w)
        np.add(y, b, out=y)
        return np.maximum(y, 0, out=y) if relu else y
    return run


def conv2d_backprop_filter(shapes, dtypes, attrs, state: KernelState) -> Run | None:
    if not ungrouped(attrs):
        return None
    w_shape = tuple(shapes[2])
    gh, gw = _geometry(shapes, attrs, w_shape[:2])
    shifted = shifted_gemm.usable(np, dtypes[0], gh, gw, w_shape[2])

    def run(x, g, _like_w):
        patches = state.patches.take(x, (gh, gw))
        if patches is None and shifted:
            return shifted_gemm.backprop_filter(x, g, w_shape[0], w_shape[1], gh, gw)
        if patches is None:
            patches = patch_matrix(np, x, gh, gw)
        return filter_gradient(np, patches, g, w_shape)
    return run


def conv2d_backprop_input(shapes, dtypes, attrs, state: KernelState) -> Run | None:
    if not ungrouped(attrs):
        return None
    in_shape = tuple(shapes[2])
    kh, kw, cin, _ = shapes[1]
    gh, gw = window_geometry("conv2d", in_shape[1:3], (kh, kw), attrs["stride"],
                             attrs["dilation"], attrs["padding"])
    if shifted_gemm.usable(np, dtypes[0], gh, gw, cin):
        return lambda g, w, _like: shifted_gemm.backprop_input(g, w, in_shape, gh, gw)
    one_by_one = kh == kw == 1 and (gh.padded, gw.padded) == in_shape[1:3]
    taps = None
    if cin >= 4 and not one_by_one:   # the shapes backprop_input scatters through taps
        taps = np.empty((kh * kw, in_shape[0] * gh.out * gw.out, cin), dtype=dtypes[0])
    return lambda g, w, _like: backprop_input(np, g, w, in_shape, gh, gw, taps)


def fused(shapes, dtypes, attrs, _state: KernelState) -> Run:
    """The group's plan, writing into given output and scratch buffers; its variant
    ``overwriting(i)`` may write over input ``i`` when that has the output's shape and dtype."""
    expr, dtypes, shapes = attrs["expr"], tuple(dtypes), tuple(map(tuple, shapes))
    plan = make_plan(np, expr, dtypes, shapes)

    @functools.cache
    def overwriting(i: int) -> Run | None:
        if not 0 <= i < len(shapes):
            return None
        variant = make_plan(np, expr, dtypes, shapes, overwritten=i)
        shape, dtype = variant.buffers[0]
        if tuple(shape) != shapes[i] or np.dtype(dtype) != np.dtype(dtypes[i]):
            return None
        return writes_out(variant.into, scratch=variant.buffers[1:])
    return writes_out(plan.into, scratch=plan.buffers[1:], overwriting=overwriting)


def matmul(shapes, dtypes, attrs, _state: KernelState) -> Run:
    """The reference's ``matmul`` (transposes as strided views) with ``out=``: the same
    GEMM call, written into a planned buffer."""
    ta, tb = attrs.get("transpose_a", False), attrs.get("transpose_b", False)

    def run(a, b, out=None):
        if ta:
            a = a.swapaxes(-1, -2)
        if tb:
            b = b.swapaxes(-1, -2)
        return np.matmul(a, b, out=out)
    return writes_out(run)


def mean_grad(shapes, dtypes, attrs, _state: KernelState) -> Run | None:
    """mean's gradient, ``g / count`` at every place of ``like``, written into a planned
    buffer: each element is the reference's one division of ``g`` by the count (the same
    bits).  The reference returns a broadcast view of ``g / count``, which the kernel
    reading it then copied into a fresh array every step (a loss's mean: 8.9 us a call
    at spiral's batch of 64, 1.6 us this way)."""
    if len(shapes) != 2 or np.dtype(dtypes[0]).kind != "f":
        return None
    like = tuple(shapes[1])
    axes = runtime_axes(attrs["axis"], len(like))
    count = math.prod(like[a] for a in axes)
    if count == 0:
        return None             # the reference's zeros
    kept = kept_shape(like, axes)

    def run(g, _like, out=None):
        if out is None:
            out = np.empty(like, g.dtype)
        np.divide(g.reshape(kept), count, out=out)
        return out
    return writes_out(run)


def cpu_factories() -> dict[str, tuple[Factory, ...]]:
    """op name -> the NumPy fast paths' factories."""
    return {"fused": (fused,), "conv2d": (conv2d,), "conv2d_bias": (conv2d_bias,),
            "conv2d_backprop_filter": (conv2d_backprop_filter,),
            "conv2d_backprop_input": (conv2d_backprop_input,), "matmul": (matmul,),
            "mean_grad": (mean_grad,)}
