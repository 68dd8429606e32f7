"""Hand-written CUDA loops for the GPU backend: pooling, softmax and its cross-entropy, and
the per-channel sums of batchnorm and bias gradients, each one or two kernel launches
instead of the reference kernel's chain of CuPy calls (a maxpool gradient made ~12).

Every loop is a ``RawSource`` over flat float32 arrays (runtime/gpu_kernels.py: compiled
once, launched over a grid-stride ``NETLANG_LOOP``), and every override has the reference's
signature ``(xp, *arrays, **attrs)``.  It declines, and the reference kernel runs, for what
it has no loop for: dtypes other than float32 (f16, f64, integer sums; class ids other than
int32 and int64), empty arrays, softmax over an axis that is not the last, reductions over
axes that are not the leading ones, a batchnorm channel axis that is not the last.  Strided
inputs are copied first, so the choice of kernel never depends on a value's layout.

Numbers, against the reference kernels in ``ops/``:

* pooling does the reference's float steps in its order: maxpool and its gradients are bit
  for bit the reference (ties go to a window's first maximum in row-major tap order, a NaN
  in a window makes the max NaN; only where +0 and -0 tie may the zero's sign differ, as
  NumPy's own ``maximum`` differs between its loops); avgpool and its gradient too (the
  window's sum in tap order, times the float32 of ``1 / cells inside``).  The gradients
  gather: one thread per input cell adds what each window reading it sends, in tap order,
  so no two threads write one cell and no atomics are needed.
* softmax, log_softmax and softmax cross-entropy: one thread per row, the row's max, then
  ``exp`` and the sum in float32 in order; CUDA's ``expf``/``logf`` and the sum's order
  differ from NumPy's by rounding (float32 tolerance).  Class ids outside ``[0, C)`` pick
  nothing, as the reference's CuPy path does.
* sums over the leading axes (``sum``, ``mean``, ``sum_to_like``, ``batch_variance``,
  ``batchnorm_grad_gamma``): two launches, deterministic.  Stage 1: each thread sums a fixed
  chunk of rows of one column in float64 into a partial buffer; stage 2: one thread per
  column adds the partials in order and finishes in float32 as the reference does (the
  mean's division, gamma's ``* rsqrt(var + eps)``).  The chunks come from the shape alone,
  so every run gives the same bits; they differ from the reference's float32 GEMV by
  rounding.

The kernels use no shared memory, atomics or barriers, so the tests run them on the host
(tests/runtime/host_cuda.py) with every block and thread of the launch.  ``__fadd_rn`` and
``__fmul_rn`` keep nvcc from contracting a product and a sum into one FMA where the
reference rounds twice.  This module never imports CuPy: kernels receive it as ``xp``.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from netlang.ops.conv import Axis
from netlang.ops.pool import POOL_ATTRS, covers_all, disjoint, pool_geometry
from netlang.ops.registry import get_op
from netlang.ops.rules import leading_axes
from netlang.runtime.gpu_kernels import BLOCK, MAX_BLOCKS, RawSource, launch, raw_kernel

F32 = np.dtype(np.float32)
LABEL_CTYPES = {np.dtype(np.int32): "int", np.dtype(np.int64): "long long"}


def takes(*arrays) -> bool:
    """The loops' case: non-empty float32 arrays."""
    return all(a.dtype == F32 and a.size for a in arrays)


def with_reference(op: str, loop: Callable, scalars: tuple[int, ...] = ()) -> Callable:
    """``loop`` as the backend's kernel for ``op``: where it returns None (a case it has no
    loop for), the op's reference kernel runs.  A strided input is copied first (the loops
    read flat arrays), so which kernel runs never depends on a value's layout: a captured
    step, whose values all live in fresh buffers, computes what an eager one does.  The
    inputs at positions ``scalars`` may stay broadcast scalars (the loop reads them so)."""
    reference = get_op(op).kernel

    def run(xp, *arrays, **attrs):
        arrays = tuple(a if a.flags.c_contiguous or (i in scalars and is_broadcast_scalar(a))
                       else xp.ascontiguousarray(a) for i, a in enumerate(arrays))
        out = loop(xp, *arrays, **attrs)
        return reference(xp, *arrays, **attrs) if out is None else out
    run.__name__ = run.__qualname__ = f"{op}_cuda"
    run.__doc__ = f"GPU: {loop.__doc__}"
    return run


def is_broadcast_scalar(a) -> bool:
    """A scalar broadcast to a shape (``mean_grad``'s gradient is one): every stride 0."""
    return a.ndim > 0 and not any(a.strides)


def i64(*values) -> tuple:
    return tuple(np.int64(v) for v in values)


# -- pooling ---------------------------------------------------------------------------------

POOL_PARAMS = ("long long n, long long H, long long W, long long C, long long OH, "
               "long long OW, long long KH, long long KW, long long SH, long long SW, "
               "long long DH, long long DW, long long PH, long long PW")

# Window (oh, ow)'s tap t reads padded cell (oh*SH + (t/KW)*DH, ow*SW + (t%KW)*DW), i.e.
# image cell (.. - PH, .. - PW); a cell outside the image is padding.
DECODE = """\
#define NETLANG_NEG_INF (-1.0f / 0.0f)
#define NETLANG_DECODE(i, b, r, s, R, S) \\
    long long c = (i) % C, b, r, s; \\
    { long long q_ = (i) / C; s = q_ % (S); q_ /= (S); r = q_ % (R); b = q_ / (R); }
"""

FIRST_MAX = """\
// The tap whose cell takes window o's gradient (maxpool_grad's first_max_masks): the first
// tap, in row-major order, equal to the window's max y, else the last tap; -1 when the
// window has one tap and it differs from y (NaN).
static __device__ __forceinline__ long long netlang_first_max(
        const float* __restrict__ x, float y, long long b, long long oh, long long ow,
        long long c, long long H, long long W, long long C, long long KH, long long KW,
        long long SH, long long SW, long long DH, long long DW, long long PH, long long PW) {
    const long long taps = KH * KW, checked = taps > 1 ? taps - 1 : 1;
    for (long long t = 0; t < checked; ++t) {
        const long long h = oh * SH - PH + (t / KW) * DH, w = ow * SW - PW + (t % KW) * DW;
        const bool inside = h >= 0 && h < H && w >= 0 && w < W;
        if ((inside ? x[((b * H + h) * W + w) * C + c] : NETLANG_NEG_INF) == y) return t;
    }
    return taps > 1 ? taps - 1 : -1;
}
"""

INVERSE_COUNT = """\
// 1 / (taps of window (oh, ow) inside the image), in float32 from float64 (TF's SAME rule).
static __device__ __forceinline__ float netlang_inverse_count(
        long long oh, long long ow, long long H, long long W, long long KH, long long KW,
        long long SH, long long SW, long long DH, long long DW, long long PH, long long PW) {
    long long rows = 0, cols = 0;
    for (long long k = 0; k < KH; ++k) { long long h = oh * SH - PH + k * DH; rows += h >= 0 && h < H; }
    for (long long k = 0; k < KW; ++k) { long long w = ow * SW - PW + k * DW; cols += w >= 0 && w < W; }
    return (float)(1.0 / (double)(rows * cols));
}
"""

# The windows reading image cell (h, w), in tap order: tap (kh, kw) of window (oh, ow).
WINDOWS_OF_CELL = """\
        for (long long kh = 0; kh < KH; ++kh) {
            const long long rh = h + PH - kh * DH;
            if (rh < 0 || rh % SH != 0 || rh / SH >= OH) continue;
            const long long oh = rh / SH;
            for (long long kw = 0; kw < KW; ++kw) {
                const long long rw = w + PW - kw * DW;
                if (rw < 0 || rw % SW != 0 || rw / SW >= OW) continue;
                const long long ow = rw / SW, o = ((b * OH + oh) * OW + ow) * C + c;
"""

MAXPOOL = RawSource("netlang_maxpool_f32", DECODE + f"""
NETLANG_KERNEL netlang_maxpool_f32(const float* __restrict__ x, float* __restrict__ y,
                                   {POOL_PARAMS}) {{
    NETLANG_LOOP(i, n) {{
        NETLANG_DECODE(i, b, oh, ow, OH, OW)
        float m = 0.0f;
        for (long long t = 0; t < KH * KW; ++t) {{
            const long long h = oh * SH - PH + (t / KW) * DH, w = ow * SW - PW + (t % KW) * DW;
            const float v = (h >= 0 && h < H && w >= 0 && w < W)
                ? x[((b * H + h) * W + w) * C + c] : NETLANG_NEG_INF;
            m = (t > 0 && (m > v || m != m)) ? m : v;   // NumPy's maximum(m, v)
        }}
        y[i] = m;
    }}
}}""")

MAXPOOL_GRAD = RawSource("netlang_maxpool_grad_f32", DECODE + FIRST_MAX + f"""
NETLANG_KERNEL netlang_maxpool_grad_f32(const float* __restrict__ x, const float* __restrict__ y,
                                        const float* __restrict__ g, float* __restrict__ dx,
                                        {POOL_PARAMS}, int apart) {{
    NETLANG_LOOP(i, n) {{
        NETLANG_DECODE(i, b, h, w, H, W)
        float sum = 0.0f;
{WINDOWS_OF_CELL}
                const long long first = netlang_first_max(x, y[o], b, oh, ow, c, H, W, C, KH,
                                                          KW, SH, SW, DH, DW, PH, PW);
                const float part = __fmul_rn(g[o], first == kh * KW + kw ? 1.0f : 0.0f);
                sum = apart ? part : __fadd_rn(sum, part);
            }}
        }}
        dx[i] = sum;
    }}
}}""")

MAXPOOL_GRAD_GRAD = RawSource("netlang_maxpool_grad_grad_f32", DECODE + FIRST_MAX + f"""
NETLANG_KERNEL netlang_maxpool_grad_grad_f32(const float* __restrict__ x,
                                             const float* __restrict__ y,
                                             const float* __restrict__ hh,
                                             float* __restrict__ out, {POOL_PARAMS}) {{
    NETLANG_LOOP(i, n) {{
        NETLANG_DECODE(i, b, oh, ow, OH, OW)
        const long long first = netlang_first_max(x, y[i], b, oh, ow, c, H, W, C, KH, KW, SH,
                                                   SW, DH, DW, PH, PW);
        float sum = 0.0f;
        for (long long t = 0; t < KH * KW; ++t) {{
            const long long h = oh * SH - PH + (t / KW) * DH, w = ow * SW - PW + (t % KW) * DW;
            const float v = (h >= 0 && h < H && w >= 0 && w < W)
                ? hh[((b * H + h) * W + w) * C + c] : 0.0f;
            sum = __fadd_rn(sum, __fmul_rn(v, t == first ? 1.0f : 0.0f));
        }}
        out[i] = sum;
    }}
}}""")

AVGPOOL = RawSource("netlang_avgpool_f32", DECODE + INVERSE_COUNT + f"""
NETLANG_KERNEL netlang_avgpool_f32(const float* __restrict__ x, float* __restrict__ y,
                                   {POOL_PARAMS}) {{
    NETLANG_LOOP(i, n) {{
        NETLANG_DECODE(i, b, oh, ow, OH, OW)
        float sum = 0.0f;
        for (long long t = 0; t < KH * KW; ++t) {{
            const long long h = oh * SH - PH + (t / KW) * DH, w = ow * SW - PW + (t % KW) * DW;
            const float v = (h >= 0 && h < H && w >= 0 && w < W)
                ? x[((b * H + h) * W + w) * C + c] : 0.0f;
            sum = t > 0 ? __fadd_rn(sum, v) : v;
        }}
        y[i] = __fmul_rn(sum, netlang_inverse_count(oh, ow, H, W, KH, KW, SH, SW, DH, DW,
                                                    PH, PW));
    }}
}}""")

AVGPOOL_GRAD = RawSource("netlang_avgpool_grad_f32", DECODE + INVERSE_COUNT + f"""
NETLANG_KERNEL netlang_avgpool_grad_f32(const float* __restrict__ g, float* __restrict__ dx,
                                        {POOL_PARAMS}, int full) {{
    NETLANG_LOOP(i, n) {{
        NETLANG_DECODE(i, b, h, w, H, W)
        float sum = 0.0f;
{WINDOWS_OF_CELL}
                const float share = __fmul_rn(g[o], netlang_inverse_count(
                    oh, ow, H, W, KH, KW, SH, SW, DH, DW, PH, PW));
                sum = full ? share : __fadd_rn(sum, share);
            }}
        }}
        dx[i] = sum;
    }}
}}""")


def pool_args(shape: tuple, gh: Axis, gw: Axis, n: int) -> tuple:
    """The kernels' ``POOL_PARAMS`` for an NHWC input of ``shape``."""
    return i64(n, shape[1], shape[2], shape[3], gh.out, gw.out, gh.k, gw.k, gh.stride,
               gw.stride, gh.dilation, gw.dilation, gh.before, gw.before)


def geometry(op: str, shape: tuple, attrs: dict) -> tuple[Axis, Axis]:
    attrs = {**POOL_ATTRS, **attrs}
    return pool_geometry(op, shape[1:3], attrs["window"], attrs["stride"], attrs["padding"],
                         attrs["dilation"])


def pooled_shape(shape: tuple, gh: Axis, gw: Axis) -> tuple:
    return (shape[0], gh.out, gw.out, shape[3])


def maxpool_loop(xp, x, **attrs):
    """maxpool: one thread per output, bit for bit the reference."""
    if not takes(x) or x.ndim != 4:
        return None
    gh, gw = geometry("maxpool", x.shape, attrs)
    y = xp.empty(pooled_shape(x.shape, gh, gw), dtype=F32)
    launch(raw_kernel(xp, MAXPOOL), y.size, (x, y, *pool_args(x.shape, gh, gw, y.size)))
    return y


def maxpool_grad_loop(xp, x, y, g, **attrs):
    """maxpool_grad: one thread per input cell gathers its windows' gradients, bit for bit
    the reference (the gradient goes to each window's first maximum)."""
    if not takes(x, y, g) or x.ndim != 4:
        return None
    gh, gw = geometry("maxpool_grad", x.shape, attrs)
    dx = xp.empty(x.shape, dtype=F32)
    launch(raw_kernel(xp, MAXPOOL_GRAD), dx.size,
           (x, y, g, dx, *pool_args(x.shape, gh, gw, dx.size), np.int32(disjoint(gh, gw))))
    return dx


def maxpool_grad_grad_loop(xp, x, y, h, **attrs):
    """maxpool_grad_grad: one thread per output reads h at its window's first maximum."""
    if not takes(x, y, h) or x.ndim != 4:
        return None
    gh, gw = geometry("maxpool_grad_grad", x.shape, attrs)
    out = xp.empty(y.shape, dtype=F32)
    launch(raw_kernel(xp, MAXPOOL_GRAD_GRAD), out.size,
           (x, y, h, out, *pool_args(x.shape, gh, gw, out.size)))
    return out


def avgpool_loop(xp, x, **attrs):
    """avgpool: one thread per output, the reference's sum in tap order times 1/count."""
    if not takes(x) or x.ndim != 4:
        return None
    gh, gw = geometry("avgpool", x.shape, attrs)
    y = xp.empty(pooled_shape(x.shape, gh, gw), dtype=F32)
    launch(raw_kernel(xp, AVGPOOL), y.size, (x, y, *pool_args(x.shape, gh, gw, y.size)))
    return y


def avgpool_grad_loop(xp, g, like, **attrs):
    """avgpool_grad: one thread per input cell adds its windows' shares in tap order."""
    if not takes(g) or like.ndim != 4 or not like.size:
        return None
    gh, gw = geometry("avgpool_grad", like.shape, attrs)
    dx = xp.empty(like.shape, dtype=F32)
    launch(raw_kernel(xp, AVGPOOL_GRAD), dx.size,
           (g, dx, *pool_args(like.shape, gh, gw, dx.size), np.int32(covers_all(gh, gw))))
    return dx


# -- softmax and cross-entropy, one thread per row ---------------------------------------------

ROW_MAX = """\
        float m = row[0];
        for (long long j = 1; j < C; ++j) { const float v = row[j]; m = (m > v || m != m) ? m : v; }
"""

SOFTMAX = RawSource("netlang_softmax_f32", f"""
NETLANG_KERNEL netlang_softmax_f32(const float* __restrict__ x, float* __restrict__ y,
                                   long long rows, long long C, int log_softmax) {{
    NETLANG_LOOP(r, rows) {{
        const float* row = x + r * C;
        float* out = y + r * C;
{ROW_MAX}
        float sum = 0.0f;
        for (long long j = 0; j < C; ++j) {{
            const float z = __fadd_rn(row[j], -m), e = expf(z);
            sum = __fadd_rn(sum, e);
            out[j] = log_softmax ? z : e;
        }}
        const float lse = logf(sum);
        for (long long j = 0; j < C; ++j) out[j] = log_softmax ? __fadd_rn(out[j], -lse) : out[j] / sum;
    }}
}}""")


@functools.cache
def xent_source(label_ctype: str | None) -> RawSource:
    """softmax_cross_entropy per row, labels as class ids of ``label_ctype`` or (None) as
    probability rows: ``lse - z[label]``, or ``lse * sum(labels) - sum(z * labels)``."""
    suffix = "probs" if label_ctype is None else label_ctype.replace(" ", "_")
    name = f"netlang_xent_{suffix}_f32"
    if label_ctype is None:
        params = "const float* __restrict__ labels"
        loss = """\
        float total = 0.0f, dot = 0.0f;
        for (long long j = 0; j < C; ++j) {
            total = __fadd_rn(total, labels[r * C + j]);
            dot = __fadd_rn(dot, __fmul_rn(__fadd_rn(row[j], -m), labels[r * C + j]));
        }
        loss[r] = __fadd_rn(__fmul_rn(lse, total), -dot);"""
    else:
        params = f"const {label_ctype}* __restrict__ labels"
        loss = """\
        const long long k = (long long)labels[r];
        loss[r] = __fadd_rn(lse, -(k >= 0 && k < C ? __fadd_rn(row[k], -m) : 0.0f));"""
    return RawSource(name, f"""
NETLANG_KERNEL {name}(const float* __restrict__ logits, {params}, float* __restrict__ loss,
                      long long rows, long long C) {{
    NETLANG_LOOP(r, rows) {{
        const float* row = logits + r * C;
{ROW_MAX}
        float sum = 0.0f;
        for (long long j = 0; j < C; ++j) sum = __fadd_rn(sum, expf(__fadd_rn(row[j], -m)));
        const float lse = logf(sum);
{loss}
    }}
}}""")


@functools.cache
def xent_grad_source(label_ctype: str | None) -> RawSource:
    """softmax_cross_entropy_grad per row: ``g * (softmax - one_hot(label))``, or
    ``g * (softmax * sum(labels) - labels)`` for probability rows."""
    suffix = "probs" if label_ctype is None else label_ctype.replace(" ", "_")
    name = f"netlang_xent_grad_{suffix}_f32"
    if label_ctype is None:
        params = "const float* __restrict__ labels"
        scale = """\
        float total = 0.0f;
        for (long long j = 0; j < C; ++j) total = __fadd_rn(total, labels[r * C + j]);"""
        step = "__fadd_rn(__fmul_rn(p, total), -labels[r * C + j])"
    else:
        params = f"const {label_ctype}* __restrict__ labels"
        scale = "        const long long k = (long long)labels[r];"
        step = "(j == k ? __fadd_rn(p, -1.0f) : p)"
    return RawSource(name, f"""
NETLANG_KERNEL {name}(const float* __restrict__ g, const float* __restrict__ logits, {params},
                      float* __restrict__ dx, long long rows, long long C, long long g_step) {{
    NETLANG_LOOP(r, rows) {{
        const float* row = logits + r * C;
        float* out = dx + r * C;
{ROW_MAX}
        float sum = 0.0f;
        for (long long j = 0; j < C; ++j) {{
            const float e = expf(__fadd_rn(row[j], -m));
            sum = __fadd_rn(sum, e);
            out[j] = e;
        }}
{scale}
        for (long long j = 0; j < C; ++j) {{
            const float p = out[j] / sum;
            out[j] = __fmul_rn({step}, g[r * g_step]);
        }}
    }}
}}""")


def last_axis(x, axis) -> bool:
    return x.ndim >= 1 and isinstance(axis, int) and axis % x.ndim == x.ndim - 1


def softmax_loop(xp, x, axis=-1, log_softmax: int = 0):
    """softmax over the last axis: one thread per row."""
    if not takes(x) or not last_axis(x, axis):
        return None
    y = xp.empty(x.shape, dtype=F32)
    rows, classes = x.size // x.shape[-1], x.shape[-1]
    launch(raw_kernel(xp, SOFTMAX), rows, (x, y, *i64(rows, classes), np.int32(log_softmax)))
    return y


def log_softmax_loop(xp, x, axis=-1):
    """log_softmax over the last axis: one thread per row."""
    return softmax_loop(xp, x, axis, log_softmax=1)


def label_ctype(logits, labels) -> str | None | bool:
    """The labels' C type for class ids, None for probability rows, False for neither."""
    if labels.dtype == F32 and labels.shape == logits.shape:
        return None if takes(labels) else False
    if labels.shape == logits.shape[:-1]:
        return LABEL_CTYPES.get(labels.dtype, False)
    return False


def xent_loop(xp, logits, labels):
    """softmax_cross_entropy: one thread per example."""
    kind = label_ctype(logits, labels)
    if not takes(logits) or logits.ndim < 1 or kind is False:
        return None
    rows, classes = logits.size // logits.shape[-1], logits.shape[-1]
    loss = xp.empty(logits.shape[:-1], dtype=F32)
    launch(raw_kernel(xp, xent_source(kind)), rows, (logits, labels, loss, *i64(rows, classes)))
    return loss


def xent_grad_loop(xp, g, logits, labels):
    """softmax_cross_entropy_grad: one thread per example (g may be a broadcast scalar, as
    the gradient of a mean of the losses is: read in place, not copied)."""
    kind = label_ctype(logits, labels)
    if not takes(g, logits) or logits.ndim < 1 or kind is False:
        return None
    rows, classes = logits.size // logits.shape[-1], logits.shape[-1]
    g_step = 0 if is_broadcast_scalar(g) else 1
    g = g[(0,) * g.ndim][None] if g_step == 0 else g     # its one element, as a flat view
    dx = xp.empty(logits.shape, dtype=F32)
    launch(raw_kernel(xp, xent_grad_source(kind)), rows,
           (g, logits, labels, dx, *i64(rows, classes, g_step)))
    return dx


# -- sums over the leading axes, in two deterministic stages -----------------------------------

# Stage 1 reads a [rows, cols] matrix: thread i sums column i % cols over rows
# [k*chunk, (k+1)*chunk) of chunk k = i / cols (neighbouring threads read neighbouring
# columns of one row).  ``mode`` 0 sums a; 1 sums (a - mean)^2 (batch_variance); 2 sums
# (b - mean) * a (batchnorm_grad_gamma's g * (x - mean)), each product rounded to float32
# as the reference's elementwise steps do.
CHANNEL_PARTIALS = RawSource("netlang_channel_partials_f32", """
NETLANG_KERNEL netlang_channel_partials_f32(const float* __restrict__ a,
                                            const float* __restrict__ b,
                                            const float* __restrict__ mean,
                                            double* __restrict__ partials, long long rows,
                                            long long cols, long long chunk, long long chunks,
                                            int mode) {
    NETLANG_LOOP(i, chunks * cols) {
        const long long c = i % cols, first = (i / cols) * chunk;
        const long long last = first + chunk < rows ? first + chunk : rows;
        double sum = 0.0;
        for (long long r = first; r < last; ++r) {
            float v = a[r * cols + c];
            if (mode == 1) {
                const float d = __fadd_rn(v, -mean[c]);
                v = __fmul_rn(d, d);
            } else if (mode == 2) {
                v = __fmul_rn(__fadd_rn(b[r * cols + c], -mean[c]), v);
            }
            sum += (double)v;
        }
        partials[i] = sum;
    }
}""")

# Stage 2: column c's partials in chunk order, then ``finish`` 0: the sum; 1: sum / divisor
# (a mean); 2: sum * (1 / sqrt(var + epsilon)) (gamma's gradient, as ops/norm.inverse_std).
CHANNEL_FINISH = RawSource("netlang_channel_finish_f32", """
NETLANG_KERNEL netlang_channel_finish_f32(const double* __restrict__ partials,
                                          const float* __restrict__ var,
                                          float* __restrict__ out, long long cols,
                                          long long chunks, float divisor, float epsilon,
                                          int finish) {
    NETLANG_LOOP(c, cols) {
        double sum = 0.0;
        for (long long k = 0; k < chunks; ++k) sum += partials[k * cols + c];
        float s = (float)sum;
        if (finish == 1) s = s / divisor;
        else if (finish == 2) s = __fmul_rn(s, 1.0f / sqrtf(__fadd_rn(var[c], epsilon)));
        out[c] = s;
    }
}""")

# At most this many partial rows: stage 2's threads each add that many.
MAX_CHUNKS = 1024


def chunking(rows: int, cols: int) -> tuple[int, int]:
    """(rows per chunk, chunks): about one grid's worth of stage-1 threads, from the shape
    alone (so the order of every addition is the same on every run)."""
    wanted = max(1, min(rows, (BLOCK * MAX_BLOCKS) // cols, MAX_CHUNKS))
    chunk = -(-rows // wanted)
    return chunk, -(-rows // chunk)


def column_sums(xp, a, cols: int, *, b=None, mean=None, var=None, mode: int = 0,
                finish: int = 0, divisor: float = 1.0, epsilon: float = 0.0):
    """The [cols] float32 result of summing ``a`` (a [rows, cols] matrix, flat) over its rows,
    as ``mode`` and ``finish`` say (the two kernels above)."""
    rows = a.size // cols
    chunk, chunks = chunking(rows, cols)
    partials = xp.empty((chunks, cols), dtype=np.float64)
    launch(raw_kernel(xp, CHANNEL_PARTIALS), chunks * cols,
           (a, a if b is None else b, a if mean is None else mean, partials,
            *i64(rows, cols, chunk, chunks), np.int32(mode)))
    out = xp.empty((cols,), dtype=F32)
    launch(raw_kernel(xp, CHANNEL_FINISH), cols,
           (partials, out if var is None else var, out, *i64(cols, chunks),
            np.float32(divisor), np.float32(epsilon), np.int32(finish)))
    return out


def leading_count(x, axis) -> int | None:
    """How many leading axes ``axis`` names (at least one), else None."""
    if x.ndim == 0:
        return None
    axis = tuple(axis) if isinstance(axis, list) else axis
    count = leading_axes(axis, x.ndim)
    return count if count else None


def sum_loop(xp, x, axis=None, keepdims=False):
    """sum over leading axes (a bias's or beta's gradient): two deterministic launches."""
    count = leading_count(x, axis)
    if count is None or not takes(x):
        return None
    out = column_sums(xp, x, math.prod(x.shape[count:]))
    return out.reshape((1,) * count * keepdims + x.shape[count:])


def mean_loop(xp, x, axis=None, keepdims=False):
    """mean over leading axes: the sum's two launches, divided in float32 as the reference."""
    count = leading_count(x, axis)
    if count is None or not takes(x):
        return None
    out = column_sums(xp, x, math.prod(x.shape[count:]), finish=1,
                      divisor=math.prod(x.shape[:count]))
    return out.reshape((1,) * count * keepdims + x.shape[count:])


def sum_to_like_loop(xp, g, like):
    """sum_to_like where ``like`` is g's trailing axes (leading 1s allowed): a sum over g's
    leading axes."""
    kept = tuple(like.shape)
    while kept and kept[0] == 1:
        kept = kept[1:]
    count = g.ndim - len(kept)
    if not takes(g) or count < 1 or tuple(g.shape[count:]) != kept:
        return None
    return column_sums(xp, g, math.prod(kept)).reshape(like.shape)


def channels_last(x, axis) -> bool:
    return x.ndim >= 2 and axis % x.ndim == x.ndim - 1


def batch_variance_loop(xp, x, mean, axis):
    """batch_variance over a last channel axis: mean((x - mean)^2) in two launches."""
    if not takes(x, mean) or not channels_last(x, axis):
        return None
    cols = x.shape[-1]
    return column_sums(xp, x, cols, mean=mean, mode=1, finish=1, divisor=x.size // cols)


def batchnorm_grad_gamma_loop(xp, g, x, mean, var, axis, epsilon):
    """batchnorm_grad_gamma over a last channel axis: sum(g * (x - mean)) * rsqrt(var + eps)
    in two launches."""
    if not takes(g, x, mean, var) or not channels_last(x, axis):
        return None
    return column_sums(xp, g, x.shape[-1], b=x, mean=mean, var=var, mode=2, finish=2,
                       epsilon=epsilon)


LOOPS: dict[str, Callable] = {
    "maxpool": maxpool_loop, "maxpool_grad": maxpool_grad_loop,
    "maxpool_grad_grad": maxpool_grad_grad_loop, "avgpool": avgpool_loop,
    "avgpool_grad": avgpool_grad_loop, "softmax": softmax_loop,
    "log_softmax": log_softmax_loop, "softmax_cross_entropy": xent_loop,
    "softmax_cross_entropy_grad": xent_grad_loop, "sum": sum_loop, "mean": mean_loop,
    "sum_to_like": sum_to_like_loop, "batch_variance": batch_variance_loop,
    "batchnorm_grad_gamma": batchnorm_grad_gamma_loop,
}


# Inputs a loop reads in place when they are a scalar broadcast to their shape.
BROADCAST_SCALARS = {"softmax_cross_entropy_grad": (0,)}


def cuda_loop_kernels() -> dict[str, Callable]:
    """op name -> the GPU backend's kernel: the loop, else the op's reference kernel."""
    return {op: with_reference(op, loop, BROADCAST_SCALARS.get(op, ()))
            for op, loop in LOOPS.items()}
