"""Hand-written CPU loops compiled by Numba (runtime/jit.py) for the glue between library
calls: pooling, batchnorm, softmax cross-entropy, sums over middle axes.

``loop_factories()`` maps op names to kernel factories (the protocol is in
runtime/cpu_kernels.py); the CPU backend tries them before oneDNN's.  Every run takes
``out=`` (``writes_out``), handles float32 and float64, and declines (returns None, so oneDNN
or the reference runs) other dtypes, zero-sized arrays, attributes it does not read, and
layouts it has no loop for (a batchnorm axis that is not the last; reduced axes that are
not one block of middle axes).  A loop's outer ``prange`` runs on both cores only above
``PARALLEL_MIN`` of work, as the generated loops do (runtime/generated.py).

Numbers: the same bits on every run.  Pooling and batchnorm's elementwise ops
(``batchnorm_apply``, ``batchnorm_grad_x``, ``batch_variance_grad``) do the reference's float
steps in its order and match it bit for bit, ties between equal maxima included, with one
exception: where +0 and -0 tie for a window's maximum, maxpool keeps the first tap's zero,
and NumPy's ``maximum`` picks either sign depending on its inner loop (SIMD or strided).
A NaN in a window makes the max NaN, as in the reference.  The reductions
(``batch_variance``, ``batchnorm_grad_gamma``, ``sum``/``mean`` over middle axes) sum chunks
whose boundaries come from the shape alone and add the chunks' sums in order, so the result
does not depend on the thread count; they differ from the reference's order by float
rounding.  The cross-entropy loops work in float64 within a row (NumPy's SIMD exp and log
are not libm's): float32 tolerance.

Measured (median ms of 41 interleaved rounds, 2 cores, quiet machine; loop vs NumPy's
reference vs oneDNN's primitive called directly; batch 64, then 256):

    batch_variance        [N,28,28,16]   0.069 vs 0.434 (oneDNN: none)   256: 0.81 vs 2.92
    batch_variance_grad   [N,28,28,16]   0.164 vs 0.683                  256: 0.75 vs 3.83
    batchnorm_grad_x      [N,28,28,16]   0.107 vs 0.364                  256: 0.62 vs 1.96
    batchnorm_grad_gamma  [N,28,28,16]   0.116 vs 0.509 vs 0.161 (*)     256: 1.04 vs 3.48
    batchnorm_apply       [N,28,28,16]   0.127 vs 0.735 vs 0.178         256: 0.76 vs 3.89 vs 0.81
    batchnorm_apply       [N,14,14,32]   0.070 vs 0.237 vs 0.110         256: 0.26 vs 1.01 vs 0.35
    mean axis (1,2)       [N,14,14,32]   0.117 vs 0.212                  256: 0.44 vs 0.83
    softmax_cross_entropy [N,10]         0.006 vs 0.017                  256: 0.018 vs 0.033
      its gradient                       0.010 vs 0.019                  256: 0.032 vs 0.036
    maxpool 2x2           [N,8,8,64]     0.033 vs 0.087 vs 0.075         256: 0.15 vs 0.27 vs 0.17
    maxpool 2x2           [N,24,24,32]   0.138 vs 0.379 vs 0.128         256: 0.73 vs 4.23 vs 1.50
    maxpool 2x2 SAME      [N,28,28,4]    0.170 vs 0.271 vs 0.118         256: 0.54 vs 1.51 vs 0.21
    maxpool_grad 2x2      [N,8,8,64]     0.084 vs 0.198 vs 0.168         256: 0.48 vs 1.14 vs 0.55
    maxpool_grad 2x2      [N,24,24,32]   0.440 vs 1.236 vs 0.424         256: 2.78 vs 11.3 vs 2.49
    maxpool_grad 2x2      [N,28,28,16]   0.331 vs 0.955 vs 0.278         256: 2.91 vs 9.31 vs 1.96
    (*) oneDNN's backward batchnorm, left out of its table: 7-9 ms with a busy neighbour

So every op above is registered, and where oneDNN takes the op its float32 cases go to the
faster of the two (``ONEDNN_FASTER_F32``: small images and many channels to the loops, large
images of few channels to oneDNN; average pooling, which oneDNN did faster at every shape
tried, always to oneDNN).  ``sum``, ``mean`` and ``sum_to_like`` over leading axes run the
reference's single BLAS matrix-vector product (as fast as the best chunked loop: [64*784,16]
0.076 vs 0.081 ms), written into the planned buffer (a bias gradient then lies in the plan's
arena with the others, for the optimizer's flat multi-tensor update).  ``mean_grad`` has no
loop: one NumPy division into the planned buffer (``cpu_kernels.mean_grad``).

Whole training steps (``netlang bench --workloads mnist mnist_small residual``, samples/s,
two interleaved runs each, before -> after): residual 1,294 / 1,318 -> 1,685 / 1,727 at
batch 64 and 1,152 / 1,176 -> 1,734 / 1,626 at 256 (its batchnorm ops 14.2 -> 4.3 ms of a
step); mnist 3,763 / 4,036 -> 4,263 / 4,150 at 64, 4,716 / 4,885 -> 5,145 / 5,103 at 256.
"""
from __future__ import annotations

import functools
import inspect
import math
import textwrap
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from netlang.errors import NetlangError
from netlang.ops.conv import Axis
from netlang.ops.loss import check_class_ids
from netlang.ops.pool import (
    POOL_ATTRS,
    covers_all,
    disjoint,
    inverse_counts,
    pool_geometry,
    undilated,
)
from netlang.ops.rules import sum_leading_axes
from netlang.runtime import onednn
from netlang.runtime.cpu_kernels import writes_out
from netlang.runtime.generated import fold_parts, sum_parts
from netlang.runtime.jit import compile_now, compile_source, kernel, prange

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
CHUNK = 1 << 17         # elements a reduction sums per chunk: fixed, whatever the thread count
# Waking the second thread and joining it costs ~55 us when it sleeps (OMP_WAIT_POLICY=passive,
# 2 cores) and little while it spins between regions (runtime/threads.py): a loop runs on the
# calling thread alone below this much work, counted as elements read and written, weighted
# more per element for pooling over few channels (short channel loops: more work per
# element).  The same threshold as the generated loops' (``generated.SERIAL_BELOW``).
PARALLEL_MIN = 1 << 16


def _floats(dtypes, count: int) -> bool:
    return len(dtypes) >= count and all(np.dtype(d) in FLOATS for d in dtypes[:count]) \
        and len({np.dtype(d) for d in dtypes[:count]}) == 1


def _nonempty(*shapes) -> bool:
    return all(0 not in tuple(s) for s in shapes)


def _parallel(work: float) -> bool:
    return work >= PARALLEL_MIN


def _buffer(out, shape: tuple, dtype):
    return np.empty(shape, dtype) if out is None else out


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a)


def _ahead(run: Callable, *calls: tuple) -> Callable:
    """``run``, its loops set to compile once the program is bound, or now outside a binding
    (``jit.compile_now``), so that the first step compiles nothing.  Each call is ``(loop,
    *arguments)``, an argument ``(dtype, ndim)`` for a C-contiguous array, any other an
    example of the value passed (an int, a bool, a NumPy scalar or array)."""
    for loop, *args in calls:
        compile_now(loop, args, owner=run)
    return run


# -- reductions over a block of axes ------------------------------------------------------------
#
# A reduction over the axes [lo, hi) of x is a sum over the middle axis of x seen as
# [A, R, C] (A = the axes before, C = the axes after).  Chunk k of block a sums rows
# [k*rows, (k+1)*rows) of x[a]: ``group`` rows side by side form one wide row of
# accumulators in x's dtype (independent additions, one vector loop), whose lanes are then
# added per channel in float64, and the chunks' sums in k order.  Every boundary comes from
# the shape, none from the thread count.

LANES = 2048            # accumulators per chunk (group = LANES // C rows side by side)


def _chunking(r: int, c: int) -> tuple[int, int, int]:
    """(rows per group, rows per chunk, chunks) for R rows of C (a chunk is whole groups)."""
    group = max(1, LANES // max(c, 1))
    rows = max(group, CHUNK // max(c, 1) // group * group)
    return group, rows, -(-r // rows)


@kernel(parallel=False)
def _add_terms(acc, x, y, shift, mode, count):
    """acc[:count] += x (mode 0), (x - shift)**2 (mode 1) or (x - shift) * y (mode 2), over
    flat runs of ``count`` elements, each term rounded to the dtype as the reference does."""
    if mode == 0:
        for lane in range(count):
            acc[lane] += x[lane]
    elif mode == 1:
        for lane in range(count):
            d = x[lane] - shift[lane]
            acc[lane] += d * d
    else:
        for lane in range(count):
            acc[lane] += (x[lane] - shift[lane]) * y[lane]


@kernel(parallel=False)
def _chunk_sum(x, y, shift, mode, group, r0, r1, total):
    """total[c] += the terms of rows [r0, r1) of x, y [R, C] (``_add_terms``)."""
    c_ = x.shape[1]
    width, whole = group * c_, (r1 - r0) // group
    lanes = np.empty(width, x.dtype)           # shift repeated across the group's rows
    for g in range(group):
        lanes[g * c_:(g + 1) * c_] = shift
    acc = np.zeros(width, x.dtype)
    xs = x[r0:r1].reshape((r1 - r0) * c_)
    ys = y[r0:r1].reshape((r1 - r0) * c_)
    for v in range(whole):
        _add_terms(acc, xs[v * width:(v + 1) * width], ys[v * width:(v + 1) * width], lanes,
                   mode, width)
    tail = (r1 - r0) * c_ - whole * width      # the last rows, fewer than a group
    _add_terms(acc, xs[whole * width:], ys[whole * width:], lanes, mode, tail)
    for g in range(group):
        for c in range(c_):
            total[c] += acc[g * c_ + c]


@kernel
def _block_sums(x, y, shift, mode, group, rows, chunks, divisor, partial, out, parallel):
    """out[a] = dtype(the sum of x[a]'s chunks, in order) / divisor; x, y [A, R, C];
    partial [A * chunks, C] float64 zeros (made by the caller: an allocation here would
    be a parallel loop of its own)."""
    a_, r_, c_ = x.shape
    if parallel:
        for q in prange(a_ * chunks):
            a, k = q // chunks, q % chunks
            _chunk_sum(x[a], y[a], shift, mode, group, k * rows, min(r_, (k + 1) * rows),
                       partial[q])
    else:
        for q in range(a_ * chunks):
            a, k = q // chunks, q % chunks
            _chunk_sum(x[a], y[a], shift, mode, group, k * rows, min(r_, (k + 1) * rows),
                       partial[q])
    for a in range(a_):
        for c in range(c_):
            total = 0.0
            for k in range(chunks):
                total += partial[a * chunks + k, c]
            out[a, c] = total
            out[a, c] = out[a, c] / divisor


@kernel
def _moment_chunks(x, rows, chunks, sums, squares, parallel):
    """sums[k], squares[k] = the float64 sums per column of rows [k*rows, (k+1)*rows) of
    x [R, C] and of their squares (each element widened before it is squared)."""
    r_ = x.shape[0]
    if parallel:
        for k in prange(chunks):
            _moments_of_rows(x, k * rows, min(r_, (k + 1) * rows), sums[k], squares[k])
    else:
        for k in range(chunks):
            _moments_of_rows(x, k * rows, min(r_, (k + 1) * rows), sums[k], squares[k])


# float64 accumulators per moment in ``_moments_of_rows`` (group = MOMENT_LANES // C rows side
# by side): independent additions in one vector loop, where one accumulator per channel made
# every row wait for the row before ([64,28,28,16], median us warm / cold, busy 2-core host:
# 149 / 208 -> 91 / 199; [256,28,28,16] 983 / 1011 -> 259 / 475; [64,28,28,3] 270 -> 40).
MOMENT_LANES = 128


@kernel(parallel=False)
def _moments_of_rows(x, r0, r1, total, square):
    """total[c] += the float64 sum of rows [r0, r1) of x [R, C] per column, square[c] += that
    of their squares; ``group`` rows side by side in float64 lanes, the lanes then added per
    column in order (boundaries from the shape alone)."""
    c_ = x.shape[1]
    group = max(1, MOMENT_LANES // c_)
    width = group * c_
    acc = np.zeros(width)
    sq = np.zeros(width)
    flat = x[r0:r1].reshape((r1 - r0) * c_)
    whole = (r1 - r0) // group
    for v in range(whole):
        base = v * width
        for lane in range(width):
            e = np.float64(flat[base + lane])
            acc[lane] += e
            sq[lane] += e * e
    base = whole * width
    for lane in range((r1 - r0) * c_ - base):      # the last rows, fewer than a group
        e = np.float64(flat[base + lane])
        acc[lane] += e
        sq[lane] += e * e
    for g in range(group):
        for c in range(c_):
            total[c] += acc[g * c_ + c]
            square[c] += sq[g * c_ + c]


def channel_moments(shape: tuple, dtype):
    """run(x) -> (sums, squares): x [..., C]'s float64 sums over every axis but the last, of
    x and of x squared, in one pass; None for shapes it does not take.  A batchnorm's mean
    and variance read its input once instead of twice (``channel_sums.fuse_moments``).
    Chunks of rows are summed apart (over the threads from ``PARALLEL_MIN`` elements) and
    then in chunk order: the same bits on every run, whatever the thread count."""
    if len(shape) < 2 or np.dtype(dtype) not in FLOATS or not _nonempty(shape):
        return None
    r_, c_ = math.prod(shape[:-1]), shape[-1]
    _, rows, chunks = _chunking(r_, c_)
    parallel = _parallel(r_ * c_)

    def run(x):
        sums, squares = np.zeros((chunks, c_)), np.zeros((chunks, c_))
        _moment_chunks(_c(x).reshape(r_, c_), rows, chunks, sums, squares, parallel)
        return sums.sum(axis=0), squares.sum(axis=0)
    return _ahead(run, (_moment_chunks, (dtype, 2), rows, chunks, (np.float64, 2),
                        (np.float64, 2), parallel))


def _sum_blocks(x3, y3, shift, mode: int, chunking, divisor, out2, parallel: bool) -> None:
    """Run ``_block_sums`` on [A, R, C] views (the float64 partials made here)."""
    group, rows, chunks = chunking
    partial = np.zeros((x3.shape[0] * chunks, x3.shape[2]))
    _block_sums(x3, y3, shift, mode, group, rows, chunks, divisor, partial, out2, parallel)


def _sum_blocks_call(dtype, mode: int, chunking, divisor, parallel: bool) -> tuple:
    """``_sum_blocks``'s loop call, for ``_ahead``."""
    return (_block_sums, (dtype, 3), (dtype, 3), (dtype, 1), mode, *chunking, divisor,
            (np.float64, 2), (dtype, 2), parallel)


def axis_block(shape: tuple, axes) -> tuple[int, int, int] | None:
    """(A, R, C) when ``axes`` are one block [lo, hi) of ``shape``'s axes, else None."""
    ndim = len(shape)
    axes = tuple(range(ndim)) if axes is None else (axes,) if isinstance(axes, int) else axes
    try:
        block = sorted({int(a) % ndim for a in axes}) if ndim else []
    except (TypeError, ValueError):
        return None
    if not block or block != list(range(block[0], block[-1] + 1)):
        return None
    lo, hi = block[0], block[-1] + 1
    return math.prod(shape[:lo]), math.prod(shape[lo:hi]), math.prod(shape[hi:])


def block_sum(shape: tuple, dtype, axes, out_shape: tuple, mean: bool):
    """run(x, out=None): x summed (or averaged) over ``axes``, a block of middle axes.

    A leading block (A = 1, every axis too) runs the reference's one BLAS matrix-vector
    product, as fast as the loops (measured), into ``out``; declined where the block is
    trailing only (C = 1 < A: NumPy's contiguous pairwise sum)."""
    block = axis_block(tuple(shape), axes)
    if block is None or (block[2] == 1 and block[0] > 1):
        return None
    a_, r_, c_ = block
    if a_ == 1:
        return _leading_sum(r_, c_, dtype, out_shape, mean)
    chunking = _chunking(r_, c_)
    divisor = np.dtype(dtype).type(r_ if mean else 1)
    shift, parallel = np.zeros(c_, dtype), _parallel(2 * a_ * r_ * c_)

    def run(x, *_like, out=None):
        y = _buffer(out, out_shape, dtype)
        x = _c(x).reshape(a_, r_, c_)
        _sum_blocks(x, x, shift, 0, chunking, divisor, y.reshape(a_, c_), parallel)
        return y
    return _ahead(writes_out(run), _sum_blocks_call(dtype, 0, chunking, divisor, parallel))


def _leading_sum(r_: int, c_: int, dtype, out_shape: tuple, mean: bool):
    """run(x, out=None): the reference's sum over leading axes (``rules.sum_leading_axes``:
    one BLAS matrix-vector product, as fast as the best chunked loop), written into the
    planned buffer; the mean then divided in place, as the reference divides."""
    divisor = np.dtype(dtype).type(r_)

    def run(x, *_like, out=None):
        y = _buffer(out, out_shape, dtype)
        sum_leading_axes(np, _c(x).reshape(r_, c_), 1, out=y)
        if mean:
            np.divide(y, divisor, out=y)
        return y
    return writes_out(run)


def _reduction(mean: bool):
    def factory(shapes, dtypes, attrs, _state):
        if len(shapes) != 1 or not _floats(dtypes, 1) or not _nonempty(shapes[0]):
            return None
        keep, axes = attrs.get("keepdims", False), attrs.get("axis")
        if not isinstance(keep, bool):
            return None
        shape = tuple(shapes[0])
        axes = tuple(axes) if isinstance(axes, list) else axes
        if axis_block(shape, axes) is None:
            return None
        reduced = set(range(len(shape))) if axes is None else {
            a % len(shape) for a in ((axes,) if isinstance(axes, int) else axes)}
        out_shape = tuple(1 if i in reduced else d for i, d in enumerate(shape)
                          if keep or i not in reduced)
        return block_sum(shape, dtypes[0], axes, out_shape, mean)
    factory.__name__ = "mean" if mean else "sum"
    factory.__doc__ = f"{factory.__name__}(x) over a block of axes (chunked, reproducible)."
    return factory


def sum_to_like(shapes, dtypes, attrs, _state):
    """sum_to_like(g, like): the bias gradient, g summed over its leading axes (and the axes
    where ``like`` has 1) down to like's shape; declined where that is no block of axes or
    no sum at all (the reference returns g itself)."""
    if len(shapes) != 2 or not _floats(dtypes, 1) or not _nonempty(*shapes):
        return None
    g_shape, like = tuple(shapes[0]), tuple(shapes[1])
    lead = len(g_shape) - len(like)
    if lead < 0 or g_shape == like:
        return None
    if any(d != 1 and d != g for d, g in zip(like, g_shape[lead:])):
        return None
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(like)
                                      if d == 1 and g_shape[lead + i] != 1)
    return block_sum(g_shape, dtypes[0], axes, like, mean=False)


# -- pooling (NHWC) -----------------------------------------------------------------------------
#
# Geometry as ints: window kh x kw, strides sh, sw, padding top and left (TF's SAME split).
# The loops run over one output row (n, oh) at a time, tap by tap in the reference's
# row-major order, each tap a sweep over the row's windows and channels; padded cells read
# as -inf (max) or 0 (average).  Gradients of overlapping windows gather each input cell's
# contributions in that tap order instead.

@kernel(parallel=False)
def _maxpool_row(x, n, oh, kh, kw, sh, sw, top, left, out):
    """The max over each window (np.maximum's: NaN once any cell is NaN)."""
    h_, w_, c_ = x.shape[1], x.shape[2], x.shape[3]
    o = out[n, oh]
    o[:] = -np.inf
    for i in range(kh):
        h = oh * sh + i - top
        if 0 <= h < h_:
            for j in range(kw):
                for ow in range(out.shape[2]):
                    w = ow * sw + j - left
                    if 0 <= w < w_:
                        for c in range(c_):
                            v, m = x[n, h, w, c], o[ow, c]
                            o[ow, c] = v if (v > m or math.isnan(v)) else m


@kernel
def _maxpool(x, kh, kw, sh, sw, top, left, out, parallel):
    oh_ = out.shape[1]
    if parallel:
        for row in prange(out.shape[0] * oh_):
            _maxpool_row(x, row // oh_, row % oh_, kh, kw, sh, sw, top, left, out)
    else:
        for row in range(out.shape[0] * oh_):
            _maxpool_row(x, row // oh_, row % oh_, kh, kw, sh, sw, top, left, out)


@kernel(parallel=False)
def _first_max_row(x, y, n, oh, kh, kw, sh, sw, top, left, pick):
    """pick[ow, c] = the first tap of window (oh, ow) whose cell equals y (a padded cell
    reads -inf), else its last tap: the reference's rule, where the last tap takes what no
    earlier tap took; -1 for no match in a 1-tap window."""
    h_, w_, c_ = x.shape[1], x.shape[2], x.shape[3]
    last = kh * kw - 1
    pick[:] = last if last > 0 else -1
    for t in range(max(last - 1, 0), -1, -1):
        h = oh * sh + t // kw - top
        tap = np.int32(t)
        for ow in range(y.shape[2]):
            w = ow * sw + t % kw - left
            if 0 <= h < h_ and 0 <= w < w_:
                for c in range(c_):
                    if x[n, h, w, c] == y[n, oh, ow, c]:
                        pick[ow, c] = tap
            else:
                for c in range(c_):
                    if y[n, oh, ow, c] == -np.inf:
                        pick[ow, c] = tap


@kernel(parallel=False)
def _maxpool_grad_row(x, y, g, n, oh, kh, kw, sh, sw, top, left, gaps, zero, dx):
    """Windows that do not overlap: output row (n, oh) writes its windows' cells of dx, g at
    the pick and g * 0 elsewhere (the reference's g * mask); with ``gaps`` (cells in no
    window) its band of rows, up to the next window row, is zeroed first."""
    h_, w_, c_ = dx.shape[1], dx.shape[2], dx.shape[3]
    pick = np.empty((y.shape[2], c_), np.int32)
    _first_max_row(x, y, n, oh, kh, kw, sh, sw, top, left, pick)
    if gaps:
        h0 = 0 if oh == 0 else oh * sh - top
        h1 = h_ if oh == y.shape[1] - 1 else min(h_, (oh + 1) * sh - top)
        dx[n, h0:h1] = 0.0
    for t in range(kh * kw):
        h = oh * sh + t // kw - top
        tap = np.int32(t)
        if 0 <= h < h_:
            for ow in range(y.shape[2]):
                w = ow * sw + t % kw - left
                if 0 <= w < w_:
                    for c in range(c_):
                        gv = g[n, oh, ow, c]
                        dx[n, h, w, c] = gv if pick[ow, c] == tap else gv * zero


@kernel
def _maxpool_2x2(x, y):
    """Windows of 2x2 cells, stride 2, tiling the image: the reference's maximum of the four
    taps taken in the same order (NaN propagates, and the same zero wins a +0/-0 tie)."""
    n_, oh_, ow_, c_ = y.shape
    for row in prange(n_ * oh_):
        n, i = row // oh_, row % oh_
        for j in range(ow_):
            for c in range(c_):
                m = np.maximum(x[n, 2 * i, 2 * j, c], x[n, 2 * i, 2 * j + 1, c])
                m = np.maximum(m, x[n, 2 * i + 1, 2 * j, c])
                y[n, i, j, c] = np.maximum(m, x[n, 2 * i + 1, 2 * j + 1, c])


@kernel
def _maxpool_grad_2x2(x, y, g, zero, relu, dx, dx_rows, acc, xb_rows, mean, tiled, centered):
    """Windows of 2x2 cells, stride 2, tiling the image: each output cell's four taps in
    row-major order, g at the first equal to y (the last when none is: a NaN maximum) and
    g * 0 at the others, as the reference writes g * mask.  The picks are computed with
    ``&`` and ``|``, not ``and``/``or``: no branch (which tap holds a window's maximum is
    random, and mispredicted branches made the loop 2-13x slower) and a vectorised loop
    over the channels.

    ``relu`` (x a relu's output): each cell also times ``x > 0`` in the dtype, as
    ``relu_grad(dx, x)`` multiplies in a pass of its own (``runtime/pool_gradients.py``).
    The output rows are cut into ``acc.shape[0]`` blocks; each block, once written, sums
    its rows of dx (``dx_rows``: dx as ``[N*H, W*C]``, still in cache) into its row of
    ``acc`` ``[blocks, W*C]`` float64, column by column in order, and, where ``centered``
    (the same shape) has columns, dx * (xb - mean) in the dtype as batchnorm's gamma
    gradient computes it (``xb_rows``: the batchnorm's input as ``[N*H, W*C]``; ``tiled``
    gets ``mean`` repeated along a row).  Arrays of no columns: nothing summed."""
    n_, oh_, ow_, c_ = y.shape
    rows, parts = n_ * oh_, acc.shape[0]
    for k in range(tiled.shape[0]):
        tiled[k] = mean[k % c_]
    for p in prange(parts):
        first, last = p * rows // parts, (p + 1) * rows // parts
        for row in range(first, last):
            n, i = row // oh_, row % oh_
            for j in range(ow_):
                for c in range(c_):
                    m, gv = y[n, i, j, c], g[n, i, j, c]
                    z = gv * zero
                    x0, x1 = x[n, 2 * i, 2 * j, c], x[n, 2 * i, 2 * j + 1, c]
                    x2, x3 = x[n, 2 * i + 1, 2 * j, c], x[n, 2 * i + 1, 2 * j + 1, c]
                    a = x0 == m
                    b = (x1 == m) & (not a)
                    ab = a | b
                    d = (x2 == m) & (not ab)
                    e = not (ab | d)
                    v0, v1 = gv if a else z, gv if b else z
                    v2, v3 = gv if d else z, gv if e else z
                    if relu:        # np.float32: 1 and 0 are exact in float64 too
                        v0, v1 = v0 * np.float32(x0 > 0), v1 * np.float32(x1 > 0)
                        v2, v3 = v2 * np.float32(x2 > 0), v3 * np.float32(x3 > 0)
                    dx[n, 2 * i, 2 * j, c] = v0
                    dx[n, 2 * i, 2 * j + 1, c] = v1
                    dx[n, 2 * i + 1, 2 * j, c] = v2
                    dx[n, 2 * i + 1, 2 * j + 1, c] = v3
        if acc.shape[1]:
            for k in range(acc.shape[1]):
                acc[p, k] = 0.0
            for r in range(2 * first, 2 * last):
                for k in range(acc.shape[1]):
                    acc[p, k] += np.float64(dx_rows[r, k])
        if centered.shape[1]:
            for k in range(centered.shape[1]):
                centered[p, k] = 0.0
            for r in range(2 * first, 2 * last):
                for k in range(centered.shape[1]):
                    v = dx_rows[r, k]
                    centered[p, k] += np.float64(v * (xb_rows[r, k] - tiled[k]))


@kernel(parallel=False)
def _window_span(p, k, s, outs):
    """(first, last) output o whose window holds padded coordinate p (tap p - o*s in
    [0, k)); empty when first > last."""
    return max(0, (p - k + s) // s), min(outs - 1, p // s)


@kernel(parallel=False)
def _maxpool_grad_gather(picks, g, n, h, kh, kw, sh, sw, top, left, dx):
    """Overlapping windows: input row (n, h) adds g * mask over the windows holding each
    cell, in tap order from 0 (the reference's dx[tap] += g * mask)."""
    oh_first, oh_last = _window_span(h + top, kh, sh, g.shape[1])
    for w in range(dx.shape[2]):
        ow_first, ow_last = _window_span(w + left, kw, sw, g.shape[2])
        d = dx[n, h, w]
        d[:] = 0.0
        for oh in range(oh_last, oh_first - 1, -1):          # tap rows ascending
            i = h + top - oh * sh
            for ow in range(ow_last, ow_first - 1, -1):
                tap = np.int32(i * kw + (w + left - ow * sw))
                for c in range(dx.shape[3]):
                    d[c] += g[n, oh, ow, c] * (1.0 if picks[n, oh, ow, c] == tap else 0.0)


@kernel
def _maxpool_grad_apart(x, y, g, kh, kw, sh, sw, top, left, gaps, zero, dx, parallel):
    """Windows that do not overlap: one pass over output rows.  (A kernel of its own, not a
    branch of the overlapping case's: Numba compiles every branch of a function, each
    ``prange`` at ~1 s on a first-ever run, and a network needs only one of the two.)"""
    oh_ = y.shape[1]
    if parallel:
        for row in prange(y.shape[0] * oh_):
            n, oh = row // oh_, row % oh_
            _maxpool_grad_row(x, y, g, n, oh, kh, kw, sh, sw, top, left, gaps, zero, dx)
    else:
        for row in range(y.shape[0] * oh_):
            n, oh = row // oh_, row % oh_
            _maxpool_grad_row(x, y, g, n, oh, kh, kw, sh, sw, top, left, gaps, zero, dx)


@kernel
def _maxpool_grad_overlapping(x, y, g, kh, kw, sh, sw, top, left, picks, dx, parallel):
    """Windows that overlap: every window's pick first (into ``picks``, shaped like y), then
    a gather over input rows."""
    oh_, h_ = y.shape[1], dx.shape[1]
    if parallel:
        for row in prange(y.shape[0] * oh_):
            n, oh = row // oh_, row % oh_
            _first_max_row(x, y, n, oh, kh, kw, sh, sw, top, left, picks[n, oh])
        for row in prange(dx.shape[0] * h_):
            _maxpool_grad_gather(picks, g, row // h_, row % h_, kh, kw, sh, sw, top, left, dx)
    else:
        for row in range(y.shape[0] * oh_):
            n, oh = row // oh_, row % oh_
            _first_max_row(x, y, n, oh, kh, kw, sh, sw, top, left, picks[n, oh])
        for row in range(dx.shape[0] * h_):
            _maxpool_grad_gather(picks, g, row // h_, row % h_, kh, kw, sh, sw, top, left, dx)


@kernel(parallel=False)
def _avgpool_row(x, inv, n, oh, kh, kw, sh, sw, top, left, out):
    """The reference's sum over the taps in order (a padded cell adds 0), times 1 / count."""
    h_, w_, c_ = x.shape[1], x.shape[2], x.shape[3]
    o = out[n, oh]
    for t in range(kh * kw):
        h = oh * sh + t // kw - top
        for ow in range(out.shape[2]):
            w = ow * sw + t % kw - left
            inside = 0 <= h < h_ and 0 <= w < w_
            for c in range(c_):
                v = x[n, h, w, c] if inside else 0.0
                if t == 0:
                    o[ow, c] = v
                else:
                    o[ow, c] += v             # + 0.0 is not a no-op: -0.0 + 0.0 is 0.0
    for ow in range(out.shape[2]):
        for c in range(c_):
            o[ow, c] *= inv[oh, ow]


@kernel
def _avgpool(x, inv, kh, kw, sh, sw, top, left, out, parallel):
    oh_ = out.shape[1]
    if parallel:
        for row in prange(out.shape[0] * oh_):
            _avgpool_row(x, inv, row // oh_, row % oh_, kh, kw, sh, sw, top, left, out)
    else:
        for row in range(out.shape[0] * oh_):
            _avgpool_row(x, inv, row // oh_, row % oh_, kh, kw, sh, sw, top, left, out)


@kernel(parallel=False)
def _avgpool_grad_row(g, inv, n, h, kh, kw, sh, sw, top, left, full, dx):
    """Input row (n, h): g * (1 / count) of every window holding each cell, in tap order;
    assigned where windows tile the input (``full``), else added to 0 (the reference)."""
    oh_first, oh_last = _window_span(h + top, kh, sh, g.shape[1])
    for w in range(dx.shape[2]):
        ow_first, ow_last = _window_span(w + left, kw, sw, g.shape[2])
        d = dx[n, h, w]
        if not full:
            d[:] = 0.0
        for oh in range(oh_last, oh_first - 1, -1):
            for ow in range(ow_last, ow_first - 1, -1):
                share = inv[oh, ow]
                for c in range(dx.shape[3]):
                    if full:
                        d[c] = g[n, oh, ow, c] * share
                    else:
                        d[c] += g[n, oh, ow, c] * share


@kernel
def _avgpool_grad(g, inv, kh, kw, sh, sw, top, left, full, dx, parallel):
    h_ = dx.shape[1]
    if parallel:
        for row in prange(dx.shape[0] * h_):
            _avgpool_grad_row(g, inv, row // h_, row % h_, kh, kw, sh, sw, top, left, full, dx)
    else:
        for row in range(dx.shape[0] * h_):
            _avgpool_grad_row(g, inv, row // h_, row % h_, kh, kw, sh, sw, top, left, full, dx)


def _pool_geometry(op: str, x_shape: tuple, attrs: dict) -> tuple[Axis, Axis] | None:
    a = {**POOL_ATTRS, **attrs}
    if not undilated(a):                 # dilated windows: oneDNN's or the reference
        return None
    try:
        return pool_geometry(op, tuple(x_shape[1:3]), a["window"], a["stride"], a["padding"])
    except NetlangError:
        return None


def _pool_case(op: str, shapes, dtypes, attrs, count: int, image: int):
    """(x shape, y shape, int geometry, axes, parallel?) for a float NHWC pool, else None.
    Gradients (``count`` > 1) count twice the work of a forward pass."""
    if len(shapes) != count or not _floats(dtypes, count) or not _nonempty(*shapes):
        return None
    x_shape = tuple(shapes[image])
    if any(len(s) != 4 for s in shapes):
        return None
    axes = _pool_geometry(op, x_shape, attrs)
    if axes is None:
        return None
    gh, gw = axes
    y_shape = (x_shape[0], gh.out, gw.out, x_shape[3])
    if any(tuple(s) != y_shape for i, s in enumerate(shapes) if i != image):
        return None
    geometry = (gh.k, gw.k, gh.stride, gw.stride, gh.before, gw.before)
    work = math.prod(x_shape) * (1 + 16 / x_shape[3]) * (2 if count > 1 else 1)
    return x_shape, y_shape, geometry, axes, _parallel(work)


def maxpool(shapes, dtypes, attrs, _state):
    """maxpool(x): bit for bit the reference (-inf padding, NaN propagates), up to the sign
    of a zero maximum where +0 and -0 tie (module doc)."""
    case = _pool_case("maxpool", shapes, dtypes, attrs, 1, 0)
    if case is None:
        return None
    _, y_shape, geo, (gh, gw), parallel = case
    if tiles_2x2(gh, gw) and shapes[0][3] < FEW_CHANNELS:
        def run_2x2(x, out=None):
            y = _buffer(out, y_shape, x.dtype)
            _maxpool_2x2(_c(x), y)
            return y
        return _ahead(writes_out(run_2x2), (_maxpool_2x2, (dtypes[0], 4), (dtypes[0], 4)))

    def run(x, out=None):
        y = _buffer(out, y_shape, x.dtype)
        _maxpool(_c(x), *geo, y, parallel)
        return y
    return _ahead(writes_out(run), (_maxpool, (dtypes[0], 4), *geo, (dtypes[0], 4), parallel))


def maxpool_grad(shapes, dtypes, attrs, _state):
    """maxpool_grad(x, y, g): g to the first tap equal to y (the y given, not a recomputed
    max), bit for bit the reference."""
    case = _pool_case("maxpool_grad", shapes, dtypes, attrs, 3, 0)
    if case is None:
        return None
    x_shape, y_shape, geo, (gh, gw), parallel = case
    apart, gaps, zero = disjoint(gh, gw), not covers_all(gh, gw), np.dtype(dtypes[2]).type(0)
    images = [(d, 4) for d in dtypes[:3]]
    if tiles_2x2(gh, gw) and gradient_2x2_channels(x_shape[3]):
        return _maxpool_grad_tiled(x_shape, np.dtype(dtypes[2]), False, False, False)

    def run(x, y, g, out=None):
        dx = _buffer(out, x_shape, g.dtype)
        if apart:
            _maxpool_grad_apart(_c(x), _c(y), _c(g), *geo, gaps, zero, dx, parallel)
        else:
            _maxpool_grad_overlapping(_c(x), _c(y), _c(g), *geo, np.empty(y_shape, np.int32),
                                      dx, parallel)
        return dx
    if apart:
        return _ahead(writes_out(run), (_maxpool_grad_apart, *images, *geo, gaps, zero,
                                        images[2], parallel))
    return _ahead(writes_out(run), (_maxpool_grad_overlapping, *images, *geo,
                                    (np.int32, 4), images[2], parallel))


def maxpool_relu_grad(x_shape: tuple, dtype: np.dtype, sums: bool,
                      centered: bool = False) -> Callable:
    """``run(x, y, g, out=None)``: ``relu_grad(maxpool_grad(x, y, g), x)`` over 2x2 windows
    tiling the image, in one pass (``runtime/pool_gradients.py``), bit for bit the two
    calls.  With ``sums``, ``run.totals`` holds the float64 sums of the result over every
    axis but the last (``[C]``); with ``centered``, ``run(x, y, g, xb, mean)`` also sums
    result * (xb - mean) as batchnorm's gamma gradient does (next in ``run.totals``).  The
    sums come from blocks of rows fixed by the shape: the same bits on one thread or two."""
    return _maxpool_grad_tiled(tuple(x_shape), np.dtype(dtype), True, sums, centered)


def _maxpool_grad_tiled(x_shape: tuple, dtype: np.dtype, relu: bool, sums: bool,
                        centered: bool) -> Callable:
    """The run of ``_maxpool_grad_2x2`` (``relu``, ``sums``, ``centered``: see
    ``maxpool_relu_grad``)."""
    n, h, w, c = x_shape
    rows, cols = n * (h // 2), w * c
    parts = sum_parts(rows, 2 * cols) if sums or centered else rows
    acc = np.zeros((parts, cols if sums else 0))
    by_mean = np.zeros((parts, cols if centered else 0))
    tiled = np.zeros(cols if centered else 0, dtype)
    none = np.zeros(c, dtype)
    summed = [a for a in (acc, by_mean) if a.shape[1]]
    totals = [np.empty(c) for _ in summed]
    zero = dtype.type(0)

    loop = grad_2x2_loop(c)

    def run(x, y, g, xb=None, mean=None, out=None):
        dx = _buffer(out, x_shape, dtype)
        dx_rows = dx.reshape(n * h, cols)
        loop(_c(x), _c(y), _c(g), zero, relu, dx, dx_rows, acc,
             dx_rows if xb is None else _c(xb).reshape(n * h, cols),
             none if mean is None else _c(mean).reshape(c), tiled, by_mean)
        for parts_sums, total in zip(summed, totals):
            fold_parts(parts_sums, c, total)
        return dx
    run.totals, run.tiles_2x2 = totals, True
    image, rows_of = (dtype, 4), (dtype, 2)
    return _ahead(writes_out(run), (loop, image, image, image, zero, relu, image,
                                    rows_of, (np.float64, 2), rows_of, (dtype, 1), (dtype, 1),
                                    (np.float64, 2)),
                  *([(fold_parts, (np.float64, 2), c, (np.float64, 1))] if totals else []))


# The line of ``_maxpool_grad_2x2`` that ``grad_2x2_loop`` makes a constant's.
CHANNELS_LINE = "    n_, oh_, ow_, c_ = y.shape\n"


def grad_2x2_loop(channels: int) -> Callable:
    """``_maxpool_grad_2x2``, or for fewer than ``FEW_CHANNELS`` channels the same loop with
    the channel count a constant: its own source (this one's, that line changed), compiled
    and cached like a fused group's (``jit.compile_source``), a loop per count.  LLVM then
    unrolls the short channel loop; Numba's literal dispatch would cost ~18 ms a call.  The
    same picks, the same bits.  Median ms, 2 cores, the general loop / the constant one
    (2026-12-07): [256,28,28,4] 0.645 / 0.445-0.479, with relu 0.789 / 0.590; [64,28,28,4]
    0.138 / 0.104; [256,28,28,1] 0.315 / 0.175.  (The forward's 2x2 loop got slower so:
    [256,28,28,4] 0.109 -> 0.340; it stays general.)"""
    return _maxpool_grad_2x2 if channels >= FEW_CHANNELS else _constant_channels(channels)


@functools.cache
def _constant_channels(channels: int) -> Callable:
    source = textwrap.dedent(inspect.getsource(_maxpool_grad_2x2.py_func))
    if source.count(CHANNELS_LINE) != 1:
        raise AssertionError(f"_maxpool_grad_2x2 lost its line {CHANNELS_LINE.strip()!r}")
    source = source.replace(CHANNELS_LINE, "    n_, oh_, ow_ = y.shape[0], y.shape[1], y.shape[2]\n"
                            f"    c_ = {channels}\n")
    header = "import numpy as np\n\nfrom netlang.runtime.jit import kernel, prange\n\n\n"
    return compile_source(header + source, "_maxpool_grad_2x2",
                          f"maxpool gradient 2x2, {channels} channels")


def _inverse_counts(gh: Axis, gw: Axis, dtype) -> np.ndarray:
    return _c(inverse_counts(np, gh, gw, dtype)[0, :, :, 0])


def avgpool(shapes, dtypes, attrs, _state):
    """avgpool(x): bit for bit the reference (TF's SAME counts only the cells inside)."""
    case = _pool_case("avgpool", shapes, dtypes, attrs, 1, 0)
    if case is None:
        return None
    _, y_shape, geo, (gh, gw), parallel = case
    inv = _inverse_counts(gh, gw, dtypes[0])

    def run(x, out=None):
        y = _buffer(out, y_shape, x.dtype)
        _avgpool(_c(x), inv, *geo, y, parallel)
        return y
    return _ahead(writes_out(run), (_avgpool, (dtypes[0], 4), inv, *geo, (dtypes[0], 4),
                                    parallel))


def avgpool_grad(shapes, dtypes, attrs, _state):
    """avgpool_grad(g, like): bit for bit the reference."""
    case = _pool_case("avgpool_grad", shapes, dtypes, attrs, 2, 1)
    if case is None:
        return None
    x_shape, _, geo, (gh, gw), parallel = case
    inv, full = _inverse_counts(gh, gw, dtypes[0]), covers_all(gh, gw)

    def run(g, _like, out=None):
        dx = _buffer(out, x_shape, g.dtype)
        _avgpool_grad(_c(g), inv, *geo, full, dx, parallel)
        return dx
    return _ahead(writes_out(run), (_avgpool_grad, (dtypes[0], 4), inv, *geo, full,
                                    (dtypes[0], 4), parallel))


# -- softmax cross-entropy (rows of logits; serial: a batch of logits is small) ----------------

@kernel(parallel=False)
def _log_sum_exp(z, r):
    """(max, log(sum(exp(z[r] - max)))) of row r, in float64."""
    m = z[r, 0]
    for j in range(1, z.shape[1]):
        m = max(m, z[r, j])
    total = 0.0
    for j in range(z.shape[1]):
        total += math.exp(np.float64(z[r, j] - m))
    return m, math.log(total)


@kernel(parallel=False)
def _xent_ids(z, labels, out, stats):
    """out[r] = lse(z[r]) - (z[r, label] - max), and stats[r] = (max, lse) for the gradient;
    False if a label is out of range."""
    ok = True
    for r in range(z.shape[0]):
        label = labels[r]
        if label < 0 or label >= z.shape[1]:
            ok = False
            continue
        m, lse = _log_sum_exp(z, r)
        stats[r, 0] = m
        stats[r, 1] = lse
        out[r] = lse - np.float64(z[r, label] - m)
    return ok


@kernel(parallel=False)
def _xent_probs(z, labels, out):
    """out[r] = sum(labels[r] * (lse - (z[r] - max)))."""
    for r in range(z.shape[0]):
        m, lse = _log_sum_exp(z, r)
        total = 0.0
        for j in range(z.shape[1]):
            total += labels[r, j] * (lse - np.float64(z[r, j] - m))
        out[r] = total


@kernel(parallel=False)
def _xent_grad_ids(g, z, labels, out, stats):
    """out[r] = g[r] * (softmax(z[r]) - one_hot(label)), each row's (max, lse) taken from
    stats (``_xent_ids`` wrote them); False if a label is out of range."""
    ok = True
    for r in range(z.shape[0]):
        label = labels[r]
        if label < 0 or label >= z.shape[1]:
            ok = False
            continue
        m, lse = z.dtype.type(stats[r, 0]), stats[r, 1]
        for j in range(z.shape[1]):
            p = math.exp(np.float64(z[r, j] - m) - lse)
            out[r, j] = g[r] * (p - 1.0 if j == label else p)
    return ok


@kernel(parallel=False)
def _xent_grad_probs(g, z, labels, out):
    """out[r] = g[r] * (softmax(z[r]) * sum(labels[r]) - labels[r])."""
    for r in range(z.shape[0]):
        m, lse = _log_sum_exp(z, r)
        mass = 0.0
        for j in range(z.shape[1]):
            mass += labels[r, j]
        for j in range(z.shape[1]):
            p = math.exp(np.float64(z[r, j] - m) - lse)
            out[r, j] = g[r] * (p * mass - labels[r, j])


def _xent_case(logits: tuple, labels: tuple, label_dtype, float_dtype) -> str | None:
    """"ids", "probs" or None (what the reference's shape rule would reject, empty rows)."""
    if not logits or not _nonempty(logits):
        return None
    kind = np.dtype(label_dtype).kind
    if kind in "iu" and labels == logits[:-1]:
        return "ids"
    if np.dtype(label_dtype) == np.dtype(float_dtype) and labels == logits:
        return "probs"
    return None


def _rows(a: np.ndarray, width: int | None = None) -> np.ndarray:
    a = _c(a)
    return a.reshape(-1) if width is None else a.reshape(-1, width)


def softmax_cross_entropy(shapes, dtypes, attrs, state):
    """softmax_cross_entropy(logits, labels), class ids or probability rows.  With class ids
    each row's max and log-sum-exp are kept for the gradient of the same logits in the same
    run (``KernelState.xent_rows``): its kernel then computes every exp once, not twice."""
    if len(shapes) != 2 or not _floats(dtypes, 1):
        return None
    logits, labels = tuple(shapes[0]), tuple(shapes[1])
    case = _xent_case(logits, labels, dtypes[1], dtypes[0])
    if case is None:
        return None
    classes = logits[-1]
    stats = np.empty((math.prod(logits[:-1]), 2))

    def run(z, y, out=None):
        loss = _buffer(out, logits[:-1], z.dtype)
        if case == "probs":
            _xent_probs(_rows(z, classes), _rows(y, classes), _rows(loss))
            return loss
        if not _xent_ids(_rows(z, classes), _rows(y), _rows(loss), stats):
            check_class_ids(np, y, classes)          # raises the reference's error
        if state is not None:
            state.xent_rows = (z, stats)
        return loss
    f, rows = dtypes[0], (dtypes[0], 1)
    if case == "probs":
        return _ahead(writes_out(run), (_xent_probs, (f, 2), (dtypes[1], 2), rows))
    return _ahead(writes_out(run), (_xent_ids, (f, 2), (dtypes[1], 1), rows, (np.float64, 2)))


def softmax_cross_entropy_grad(shapes, dtypes, attrs, state):
    """softmax_cross_entropy_grad(g, logits, labels).  With class ids, the rows' max and
    log-sum-exp the forward kept for these very logits this run, else computed here by the
    forward's loop (the same numbers either way)."""
    if len(shapes) != 3 or not _floats(dtypes, 2):
        return None
    g_shape, logits, labels = (tuple(s) for s in shapes)
    case = _xent_case(logits, labels, dtypes[2], dtypes[1])
    if case is None or g_shape != logits[:-1]:
        return None
    classes = logits[-1]
    stats, losses = np.empty((math.prod(g_shape), 2)), np.empty(math.prod(g_shape), dtypes[1])

    def run(g, z, y, out=None):
        d = _buffer(out, logits, z.dtype)
        args = (_rows(g), _rows(z, classes))
        if case == "probs":
            _xent_grad_probs(*args, _rows(y, classes), d.reshape(-1, classes))
            return d
        kept = state.xent_rows if state is not None else None
        if kept is not None and kept[0] is z:
            row_stats = kept[1]
        else:
            row_stats = stats
            _xent_ids(args[1], _rows(y), losses, stats)
        if not _xent_grad_ids(*args, _rows(y), d.reshape(-1, classes), row_stats):
            check_class_ids(np, y, classes)
        return d
    f = dtypes[1]
    if case == "probs":
        return _ahead(writes_out(run), (_xent_grad_probs, (f, 1), (f, 2), (dtypes[2], 2),
                                        (f, 2)))
    return _ahead(writes_out(run),
                  (_xent_grad_ids, (f, 1), (f, 2), (dtypes[2], 1), (f, 2), (np.float64, 2)),
                  (_xent_ids, (f, 2), (dtypes[2], 1), (f, 1), (np.float64, 2)))


# -- batchnorm (channels last: x seen as [R, C]) -------------------------------------------------
#
# The elementwise loops run over blocks of rows (the reductions' chunks); the per-channel
# scale and shift are made first with the reference's steps, each rounded to the dtype.

@kernel(parallel=False)
def _inverse_std(var, eps, one, out):
    """out = 1 / sqrt(var + eps): the reference's add, sqrt and divide, in var's dtype."""
    for c in range(var.shape[0]):
        out[c] = one / np.sqrt(var[c] + eps)


@kernel(parallel=False)
def _scale_shift_rows(x, scale, shift, r0, r1, out):
    """out = x * scale + shift (two roundings, no fused multiply-add) for rows [r0, r1)."""
    for r in range(r0, r1):
        for c in range(x.shape[1]):
            out[r, c] = x[r, c] * scale[c] + shift[c]


@kernel
def _scale_shift(x, scale, shift, rows, out, parallel):
    chunks = -(-x.shape[0] // rows)
    if parallel:
        for k in prange(chunks):
            _scale_shift_rows(x, scale, shift, k * rows, min(x.shape[0], (k + 1) * rows), out)
    else:
        for k in range(chunks):
            _scale_shift_rows(x, scale, shift, k * rows, min(x.shape[0], (k + 1) * rows), out)


@kernel(parallel=False)
def _normalizer(mean, var, gamma, beta, eps, one, scale, shift):
    """scale = rsqrt(var + eps) * gamma; shift = -(mean * scale) + beta."""
    _inverse_std(var, eps, one, scale)
    for c in range(var.shape[0]):
        scale[c] = scale[c] * gamma[c]
        shift[c] = -(mean[c] * scale[c]) + beta[c]


@kernel(parallel=False)
def _centered_scale_rows(x, shift, scale, r0, r1, out):
    """out = (x - shift) * scale for rows [r0, r1)."""
    for r in range(r0, r1):
        for c in range(x.shape[1]):
            out[r, c] = (x[r, c] - shift[c]) * scale[c]


@kernel
def _centered_scale(x, shift, scale, rows, out, parallel):
    chunks = -(-x.shape[0] // rows)
    if parallel:
        for k in prange(chunks):
            _centered_scale_rows(x, shift, scale, k * rows, min(x.shape[0], (k + 1) * rows),
                                 out)
    else:
        for k in range(chunks):
            _centered_scale_rows(x, shift, scale, k * rows, min(x.shape[0], (k + 1) * rows),
                                 out)


def _channels_last(shape: tuple, axis) -> tuple[int, int] | None:
    """(R, C) when ``axis`` is the last axis of ``shape``, else None."""
    if not shape or not isinstance(axis, int) or isinstance(axis, bool):
        return None
    if not -len(shape) <= axis < len(shape) or axis % len(shape) != len(shape) - 1:
        return None
    return math.prod(shape[:-1]), shape[-1]


class NormCase(NamedTuple):
    """A batchnorm op's x as [R, C] rows, its dtype, chunks and whether to use threads."""

    r: int
    c: int
    dtype: np.dtype
    chunking: tuple[int, int, int]
    parallel: bool

    @property
    def block(self) -> int:
        """Rows per block of the elementwise loops (a reduction's chunk)."""
        return self.chunking[1]

    def rows_call(self, loop) -> tuple:
        """``loop``'s call over x as [R, C] rows with two per-channel vectors
        (``_scale_shift``, ``_centered_scale``), for ``_ahead``."""
        rows, vector = (self.dtype, 2), (self.dtype, 1)
        return loop, rows, vector, vector, self.block, rows, self.parallel

    def normalizer_call(self, consts: tuple) -> tuple:
        """``_normalizer``'s call, for ``_ahead``."""
        return (_normalizer, *[(self.dtype, 1)] * 4, *consts, (self.dtype, 1), (self.dtype, 1))


def _norm_case(shapes, dtypes, attrs, big: tuple[int, ...], count: int) -> NormCase | None:
    """The case of a channels-last float batchnorm op of ``count`` inputs, those at ``big``
    shaped like x and the others [C]; None for any other."""
    if len(shapes) != count or not _floats(dtypes, count) or not _nonempty(*shapes):
        return None
    x = tuple(shapes[big[-1]])
    rc = _channels_last(x, attrs.get("axis"))
    if rc is None or any(tuple(shapes[i]) != x for i in big):
        return None
    if any(tuple(s) != (rc[1],) for i, s in enumerate(shapes) if i not in big):
        return None
    r_, c_ = rc
    return NormCase(r_, c_, np.dtype(dtypes[0]), _chunking(r_, c_),
                    _parallel(2 * r_ * c_))


def _epsilon(attrs, dtype) -> tuple | None:
    """(epsilon, 1) in the dtype, as the reference's ``var + dtype(epsilon)`` and ``1 / s``."""
    eps = attrs.get("epsilon")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool):
        return None
    return dtype.type(eps), dtype.type(1)


def batch_variance(shapes, dtypes, attrs, _state):
    """batch_variance(x, mean) = mean((x - mean)**2), chunked (float32 tolerance)."""
    k = _norm_case(shapes, dtypes, attrs, (0,), 2)
    if k is None:
        return None
    count = k.dtype.type(k.r)

    def run(x, mean, out=None):
        var = _buffer(out, (k.c,), k.dtype)
        x = _c(x).reshape(1, k.r, k.c)
        _sum_blocks(x, x, _c(mean), 1, k.chunking, count, var.reshape(1, k.c), k.parallel)
        return var
    return _ahead(writes_out(run), _sum_blocks_call(k.dtype, 1, k.chunking, count, k.parallel))


def batch_variance_grad(shapes, dtypes, attrs, _state):
    """batch_variance_grad(g, x, mean) = (x - mean) * (s + s), s = g * (1 / count): bit for
    bit the reference."""
    k = _norm_case(shapes, dtypes, attrs, (1,), 3)
    if k is None:
        return None
    x_shape, per_row = tuple(shapes[1]), k.dtype.type(1.0 / k.r)

    def run(g, x, mean, out=None):
        dx = _buffer(out, x_shape, k.dtype)
        twice = g * per_row
        np.add(twice, twice, out=twice)
        _centered_scale(_c(x).reshape(k.r, k.c), _c(mean), twice, k.block,
                        dx.reshape(k.r, k.c), k.parallel)
        return dx
    return _ahead(writes_out(run), k.rows_call(_centered_scale))


def batchnorm_apply(shapes, dtypes, attrs, _state):
    """batchnorm_apply(x, mean, var, gamma, beta) = x * scale + shift: bit for bit."""
    k = _norm_case(shapes, dtypes, attrs, (0,), 5)
    consts = None if k is None else _epsilon(attrs, k.dtype)
    if consts is None:
        return None
    x_shape = tuple(shapes[0])

    def run(x, mean, var, gamma, beta, out=None):
        y = _buffer(out, x_shape, k.dtype)
        scale, shift = np.empty(k.c, k.dtype), np.empty(k.c, k.dtype)
        _normalizer(_c(mean), _c(var), _c(gamma), _c(beta), *consts, scale, shift)
        _scale_shift(_c(x).reshape(k.r, k.c), scale, shift, k.block, y.reshape(k.r, k.c),
                     k.parallel)
        return y
    return _ahead(writes_out(run), k.normalizer_call(consts), k.rows_call(_scale_shift))


def batchnorm_grad_x(shapes, dtypes, attrs, _state):
    """batchnorm_grad_x(g, var, gamma) = g * (rsqrt(var + eps) * gamma): bit for bit (as
    (g - 0) * scale: g - 0 is g)."""
    k = _norm_case(shapes, dtypes, attrs, (0,), 3)
    consts = None if k is None else _epsilon(attrs, k.dtype)
    if consts is None:
        return None
    g_shape, zeros = tuple(shapes[0]), np.zeros(k.c, k.dtype)

    def run(g, var, gamma, out=None):
        dx = _buffer(out, g_shape, k.dtype)
        scale, unused = np.empty(k.c, k.dtype), np.empty(k.c, k.dtype)
        _normalizer(zeros, _c(var), _c(gamma), zeros, *consts, scale, unused)
        _centered_scale(_c(g).reshape(k.r, k.c), zeros, scale, k.block, dx.reshape(k.r, k.c),
                        k.parallel)
        return dx
    return _ahead(writes_out(run), k.normalizer_call(consts), k.rows_call(_centered_scale))


def batchnorm_grad_gamma(shapes, dtypes, attrs, _state):
    """batchnorm_grad_gamma(g, x, mean, var) = sum(g * (x - mean)) * rsqrt(var + eps),
    chunked (float32 tolerance)."""
    k = _norm_case(shapes, dtypes, attrs, (0, 1), 4)
    consts = None if k is None else _epsilon(attrs, k.dtype)
    if consts is None:
        return None
    one = k.dtype.type(1)

    def run(g, x, mean, var, out=None):
        dgamma = _buffer(out, (k.c,), k.dtype)
        _sum_blocks(_c(x).reshape(1, k.r, k.c), _c(g).reshape(1, k.r, k.c), _c(mean), 2,
                    k.chunking, one, dgamma.reshape(1, k.c), k.parallel)
        inverse = np.empty(k.c, k.dtype)
        _inverse_std(_c(var), *consts, inverse)
        return np.multiply(dgamma, inverse, out=dgamma)
    vector = (k.dtype, 1)
    return _ahead(writes_out(run), _sum_blocks_call(k.dtype, 2, k.chunking, one, k.parallel),
                  (_inverse_std, vector, *consts, vector))


# -- the table -----------------------------------------------------------------------------------

LOOPS: dict[str, Callable] = {
    "sum": _reduction(mean=False),
    "mean": _reduction(mean=True),
    "sum_to_like": sum_to_like,
    "maxpool": maxpool,
    "maxpool_grad": maxpool_grad,
    "avgpool": avgpool,
    "avgpool_grad": avgpool_grad,
    "softmax_cross_entropy": softmax_cross_entropy,
    "softmax_cross_entropy_grad": softmax_cross_entropy_grad,
    "batch_variance": batch_variance,
    "batch_variance_grad": batch_variance_grad,
    "batchnorm_apply": batchnorm_apply,
    "batchnorm_grad_x": batchnorm_grad_x,
    "batchnorm_grad_gamma": batchnorm_grad_gamma,
}


# Where oneDNN's float32 primitive measured faster than the loop (module doc), by the input
# shapes: there the loop declines float32 while oneDNN is in use, and still takes float64,
# which oneDNN does not.  The max-pooling loops win on small images (no thread to wake, while
# oneDNN's call and its threads cost ~50 us) and over many channels; oneDNN wins on large
# images of few channels (short channel loops).  oneDNN's average pooling was faster at
# every shape tried.
SMALL_IMAGE = 1 << 18
# Below this many channels, max pooling over 2x2 windows that tile the image runs
# ``_maxpool_2x2`` and ``_maxpool_grad_2x2`` (median ms, 2 cores, the loop vs the general
# loop vs oneDNN's primitive: gradient [64,28,28,4] 0.079 vs 0.571 vs 0.379, [64,28,28,1]
# 0.080 vs 0.343 vs 0.268, [256,28,28,4] 0.78 vs 2.40 vs 1.01; forward [64,28,28,4] 0.075
# vs 0.164 vs 0.095, [256,28,28,4] 0.135 vs 0.402 vs 0.171); from 8 channels on oneDNN's
# vectorised primitive wins the gradient ([64,28,28,8] 0.29 vs 0.15).
FEW_CHANNELS = 8
# The gradient's 2x2 loop has no branches and a vector loop over the channels: against
# oneDNN's primitive (which reruns the forward for its workspace) it wins below 8 channels
# and from 16 (a whole AVX-512 vector), and loses between.  Median us, oneDNN / the loop,
# 2-core AMD EPYC, 2026-12-06: [64,28,28,4] 268/141, [64,14,14,8] 48/63, [64,14,14,12]
# 53/89, [64,14,14,16] 48/25, [64,24,24,32] 176/99 (mnist), [64,8,8,64] 50/25 (mnist),
# [256,28,28,4] 962/478, [256,28,28,8] 511/931, [256,14,14,8] 152/218, [256,24,24,16]
# 734/779, [256,24,24,32] 1678/1518, [256,8,8,64] 199/119, [256,8,8,128] 295/147.
VECTOR_CHANNELS = 16


def gradient_2x2_channels(c: int) -> bool:
    """Whether max pooling's gradient over tiling 2x2 windows of ``c`` channels runs
    ``_maxpool_grad_2x2`` (else the library, or the general loop without it)."""
    return c < FEW_CHANNELS or c >= VECTOR_CHANNELS


def tiles_2x2(gh: Axis, gw: Axis) -> bool:
    """2x2 windows, stride 2, no padding, covering the image exactly."""
    return all(a.k == 2 and a.stride == 2 and a.dilation == 1 and a.before == a.after == 0
               and a.size == 2 * a.out for a in (gh, gw))


def _maxpool_library_faster(shapes, attrs) -> bool:
    n, c = math.prod(shapes[0]), shapes[0][-1]
    if c < FEW_CHANNELS:       # the 2x2 tiling loop: [64,28,28,4] 0.075 vs oneDNN's 0.095 ms
        axes = _pool_geometry("maxpool", shapes[0], attrs)
        if axes is not None and tiles_2x2(*axes):
            return False
    return not (c >= 32 or (c >= 8 and n <= SMALL_IMAGE))


def _maxpool_grad_library_faster(shapes, attrs) -> bool:
    n, c = math.prod(shapes[0]), shapes[0][-1]
    if gradient_2x2_channels(c):      # the 2x2 tiling loop (measured at VECTOR_CHANNELS)
        axes = _pool_geometry("maxpool_grad", shapes[0], attrs)
        if axes is not None and tiles_2x2(*axes):
            return False
    return not (c >= 64 or (c >= 8 and n <= SMALL_IMAGE))


ONEDNN_FASTER_F32: dict[str, Callable] = {
    "maxpool": _maxpool_library_faster,
    "maxpool_grad": _maxpool_grad_library_faster,
    "avgpool": lambda shapes, _attrs: True,
    "avgpool_grad": lambda shapes, _attrs: True,
}


def _after_library(factory: Callable, library_faster: Callable) -> Callable:
    """``factory``, declining float32 where oneDNN's primitive is the faster."""
    def made(shapes, dtypes, attrs, state):
        if (dtypes and np.dtype(dtypes[0]) == np.float32 and shapes
                and len(shapes[0]) == 4 and library_faster(shapes, {**POOL_ATTRS, **attrs})):
            return None
        return factory(shapes, dtypes, attrs, state)
    made.__name__, made.__doc__ = factory.__name__, factory.__doc__
    return made


def loop_factories(library: bool | None = None) -> dict[str, tuple]:
    """op name -> factories of Numba loops.  ``library``: whether oneDNN's factories come
    next (None: when oneDNN loads), for the ops where oneDNN's float32 primitive is faster."""
    if library is None:
        library = onednn.available()
    return {op: (_after_library(f, ONEDNN_FASTER_F32[op])
                 if library and op in ONEDNN_FASTER_F32 else f,)
            for op, f in LOOPS.items()}
