"""oneDNN kernels for netlang's convolution, pooling, batchnorm and matmul ops on the CPU.

``onednn_kernels()`` maps op names to kernel FACTORIES.  A factory gets the node's concrete
input shapes and dtypes and its attributes (exactly as the NumPy kernel receives them),
builds the oneDNN primitive once, and returns ``run(*arrays) -> new array`` (or, given
``out=``, the result written into that buffer: ``cpu_kernels.writes_out``), or None when it
does not take the case (not float32, a shape oneDNN has no implementation for, attributes the
reference kernel would reject: the reference then runs and raises as usual), where oneDNN's
chosen implementation is one seen touching memory outside its buffers (``trusted``), or
where the reference measured faster (``FEW_INPUT_CHANNELS``, ``MATMUL_MIN_MACS``).  The
reference kernels in ``ops/`` stay the definition; tests compare the two.

Geometry is the reference's own (``ops.conv.window_geometry``): TensorFlow's SAME padding is
passed as explicit left/right pads (the odd one at the bottom/right), and netlang's dilation
d is oneDNN's ``d - 1``.  Images are NHWC and filters ``[kh, kw, cin, cout]`` in place; the
weights may be reordered to a blocked layout inside a call (they change every step).  A
``run`` reuses its oneDNN memories, so one run must not be called from two threads at once.

Not covered here, on purpose (the reference runs): ``batch_variance`` (oneDNN computes the
variance around its own batch mean, netlang's op takes the mean as an input);
``batchnorm_grad_x`` (a per-channel scale of g, which oneDNN only offers inside a backward
pass that also needs x and the mean this op does not get); ``batchnorm_grad_gamma`` (the
factory below matches the reference, but measured slower: see ``FACTORIES``);
``maxpool_grad_grad``.

One known difference: a NaN inside a max-pooling window makes the reference's output NaN
(``np.maximum`` propagates it), while oneDNN returns the largest of the other values; finite
inputs, infinities and ties agree exactly.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from netlang.errors import NetlangError
from netlang.ops.conv import CONV_ATTRS, Axis, transpose_geometry, window_geometry
from netlang.ops.pool import POOL_ATTRS, pool_geometry
from netlang.runtime import onednn as dnnl
from netlang.runtime.cpu_kernels import writes_out
from netlang.runtime.onednn import (
    ARG_BIAS,
    ARG_DIFF_DST,
    ARG_DIFF_SCALE,
    ARG_DIFF_SHIFT,
    ARG_DIFF_SRC,
    ARG_DIFF_WEIGHTS,
    ARG_DST,
    ARG_MEAN,
    ARG_SCALE,
    ARG_SHIFT,
    ARG_SRC,
    ARG_VARIANCE,
    ARG_WEIGHTS,
    ARG_WORKSPACE,
    Step,
    hwio,
    nhwc,
)

F32 = np.dtype(np.float32)
Run = Callable[..., np.ndarray]


def float32_images(shapes, dtypes, count: int, rank4: tuple[int, ...] = (0,)) -> bool:
    """``count`` float32 inputs, those at ``rank4`` 4-D with no zero-sized dim."""
    return (len(shapes) == count and all(np.dtype(d) == F32 for d in dtypes)
            and all(len(shapes[i]) == 4 and 0 not in shapes[i] for i in rank4))


def contiguous(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


# -- convolutions --------------------------------------------------------------------------------

class ConvGeometry:
    """A conv2d's oneDNN descriptors: NHWC image and output, the filter as it lies, and the
    strides / dilations / left and right pads of its two axes."""

    def __init__(self, x_shape: tuple, w_shape: tuple, gh: Axis, gw: Axis):
        self.x_shape, self.w_shape = tuple(x_shape), tuple(w_shape)
        self.y_shape = (x_shape[0], gh.out, gw.out, w_shape[3])
        self.strided = gh.stride > 1 or gw.stride > 1
        kh, kw, cin, cout = w_shape
        self.x, self.y, self.w = nhwc(self.x_shape), nhwc(self.y_shape), hwio(self.w_shape)
        self.w_any = dnnl.any_md((cout, cin, kh, kw))
        self.geometry = (dnnl.dims((gh.stride, gw.stride)),
                         dnnl.dims((gh.dilation - 1, gw.dilation - 1)),
                         dnnl.dims((gh.before, gw.before)), dnnl.dims((gh.after, gw.after)))

    def forward_pd(self, prop: int, bias=None, attr=None):
        return dnnl.PrimitiveDesc.create(
            "dnnl_convolution_forward_primitive_desc_create", dnnl.LIBRARY.engine, prop,
            dnnl.CONVOLUTION_DIRECT, self.x.handle, self.w_any.handle,
            None if bias is None else bias.handle, self.y.handle, *self.geometry,
            None if attr is None else attr.handle, keep=(bias, attr))


def conv_geometry(x_shape: tuple, w_shape: tuple, attrs: dict) -> ConvGeometry | None:
    a = {**CONV_ATTRS, **attrs}
    if a.get("groups") not in (None, 1):           # grouped: the reference, one group at a time
        return None
    try:
        gh, gw = window_geometry("conv2d", tuple(x_shape[1:3]), tuple(w_shape[:2]),
                                 a["stride"], a["dilation"], a["padding"])
    except NetlangError:
        return None
    if x_shape[3] != w_shape[2]:
        return None
    return ConvGeometry(x_shape, w_shape, gh, gw)


def trusted(pd, geo: ConvGeometry) -> bool:
    """False for the convolution implementations seen touching memory outside the NumPy
    buffers they were given (oneDNN 3.2 on AVX-512, found with inputs placed against a
    PROT_NONE guard page, outputs against malloc's checks): ``jit_1x1`` with a stride > 1
    read before and after src and diff_dst and corrupted the heap in backward-data and
    backward-weights; ``gemm:jit`` (taken for some dilated cases) read before its input.
    Those cases run the reference instead; so do oneDNN's reference implementations."""
    impl = pd.impl()
    if "gemm" in impl or impl.startswith("ref"):
        return False
    return not ("1x1" in impl and geo.strided)


# Below this many channels on both sides of a convolution, oneDNN's first choice is often a
# brgconv kernel, which blocks channels by a whole AVX-512 vector (16 floats); its direct jit
# kernel of the same ISA, next in its list, is faster there.  Median ms of each candidate in
# turn (``dnnl_primitive_desc_next_impl``), 2-core AMD EPYC, 2026-12-07, brgconv / direct:
# forward [64,28,28] 8->1 0.574 / 0.501, 8->8 0.578 / 0.501, [64,14,14] 12->12 0.226 / 0.190;
# input gradient 8->8 0.570 / 0.500, [256,14,14] 4->8 0.627 / 0.480, 12->12 0.226 / 0.189.
# Where oneDNN picks its direct kernel first (1 or 4 input channels) nothing changes.
DIRECT_BELOW = 16


def direct_if_few_channels(make_pd: Callable, geo: ConvGeometry):
    """``make_pd()``, or for a convolution of fewer than ``DIRECT_BELOW`` channels on both
    sides whose first implementation is a brgconv one, the next that is not (and that
    ``trusted`` takes); the first when there is none."""
    pd = make_pd()
    if pd is None or max(geo.w_shape[2:]) >= DIRECT_BELOW or "brg" not in pd.impl():
        return pd
    while pd.next_impl():
        if "brg" not in pd.impl() and trusted(pd, geo):
            return pd
    return make_pd()


def conv_forward(geo: ConvGeometry, bias: bool = False, relu: bool = False) -> Run | None:
    bias_md = dnnl.MemoryDesc((geo.w_shape[3],), (1,)) if bias else None
    attr = dnnl.Attr(relu=relu)
    pd = direct_if_few_channels(
        lambda: geo.forward_pd(dnnl.FORWARD_INFERENCE, bias_md, attr), geo)
    if pd is None or not trusted(pd, geo):
        return None
    user = {ARG_SRC: geo.x, ARG_WEIGHTS: geo.w, ARG_DST: geo.y}
    if bias:
        user[ARG_BIAS] = bias_md
    step = Step(pd, user, outputs=(ARG_DST,))

    def run(x, w, b=None, out=None):
        y = np.empty(geo.y_shape, np.float32) if out is None else out
        args = {ARG_SRC: contiguous(x), ARG_WEIGHTS: contiguous(w), ARG_DST: y}
        if bias:
            args[ARG_BIAS] = contiguous(b)
        step(args)
        return y
    run.impl = step.impl
    return writes_out(run)


# Below this many input channels the input gradient stays with the reference: its
# channels-first col2im beat oneDNN there (fastest of 40 on 2 cores, e.g. [64,28,28,1] with a
# 5x5x1x32 filter: NumPy 1.8 ms, oneDNN 5.3 ms blocked weights / 7.1 ms plain; 3 channels:
# 5.7 vs 9.1 ms).  It is a first layer's, which training does not need anyway.
FEW_INPUT_CHANNELS = 4


def conv_backward_data(geo: ConvGeometry) -> Run | None:
    """(g shaped like the output, w) -> the gradient w.r.t. the conv's input."""
    if geo.w_shape[2] < FEW_INPUT_CHANNELS:
        return None
    hint = geo.forward_pd(dnnl.FORWARD_TRAINING)
    if hint is None:
        return None
    pd = direct_if_few_channels(lambda: dnnl.PrimitiveDesc.create(
        "dnnl_convolution_backward_data_primitive_desc_create", dnnl.LIBRARY.engine,
        dnnl.CONVOLUTION_DIRECT, geo.x.handle, geo.w_any.handle, geo.y.handle,
        *geo.geometry, hint.handle, None, keep=(hint,)), geo)
    if pd is None or not trusted(pd, geo):
        return None
    step = Step(pd, {ARG_DIFF_DST: geo.y, ARG_WEIGHTS: geo.w, ARG_DIFF_SRC: geo.x},
                outputs=(ARG_DIFF_SRC,))

    def run(g, w, *_like, out=None):
        dx = np.empty(geo.x_shape, np.float32) if out is None else out
        step({ARG_DIFF_DST: contiguous(g), ARG_WEIGHTS: contiguous(w), ARG_DIFF_SRC: dx})
        return dx
    run.impl = step.impl
    return writes_out(run)


def conv_backward_weights(geo: ConvGeometry) -> Run | None:
    """(x, g shaped like the output, like_w) -> the gradient w.r.t. the filter."""
    hint = geo.forward_pd(dnnl.FORWARD_TRAINING)
    if hint is None:
        return None
    pd = dnnl.PrimitiveDesc.create(
        "dnnl_convolution_backward_weights_primitive_desc_create", dnnl.LIBRARY.engine,
        dnnl.CONVOLUTION_DIRECT, geo.x.handle, geo.w_any.handle, None, geo.y.handle,
        *geo.geometry, hint.handle, None, keep=(hint,))
    if pd is None or not trusted(pd, geo):
        return None
    step = Step(pd, {ARG_SRC: geo.x, ARG_DIFF_DST: geo.y, ARG_DIFF_WEIGHTS: geo.w},
                outputs=(ARG_DIFF_WEIGHTS,))

    def run(x, g, *_like, out=None):
        dw = np.empty(geo.w_shape, np.float32) if out is None else out
        step({ARG_SRC: contiguous(x), ARG_DIFF_DST: contiguous(g), ARG_DIFF_WEIGHTS: dw})
        return dw
    run.impl = step.impl
    return writes_out(run)


def conv2d(shapes, dtypes, attrs) -> Run | None:
    """conv2d(x, w): forward convolution."""
    if not float32_images(shapes, dtypes, 2, (0, 1)):
        return None
    geo = conv_geometry(shapes[0], shapes[1], attrs)
    return None if geo is None else conv_forward(geo)


def conv2d_bias_relu(shapes, dtypes, attrs, relu: bool) -> Run | None:
    """(x, w, b) -> conv2d(x, w) + b, then relu when ``relu``: one primitive (bias is an
    argument of the convolution, relu an eltwise post-op), for a fusion pass."""
    if not (float32_images(shapes, dtypes, 3, (0, 1)) and len(shapes[2]) == 1):
        return None
    geo = conv_geometry(shapes[0], shapes[1], attrs)
    if geo is None or shapes[2][0] != shapes[1][3]:
        return None
    return conv_forward(geo, bias=True, relu=relu)


def conv2d_backprop_input(shapes, dtypes, attrs) -> Run | None:
    """conv2d_backprop_input(g, w, like_x)."""
    if not float32_images(shapes, dtypes, 3, (0, 1, 2)):
        return None
    geo = conv_geometry(shapes[2], shapes[1], attrs)
    if geo is None or tuple(shapes[0]) != geo.y_shape:
        return None
    return conv_backward_data(geo)


def conv2d_backprop_filter(shapes, dtypes, attrs) -> Run | None:
    """conv2d_backprop_filter(x, g, like_w)."""
    if not float32_images(shapes, dtypes, 3, (0, 1, 2)):
        return None
    geo = conv_geometry(shapes[0], shapes[2], attrs)
    if geo is None or tuple(shapes[1]) != geo.y_shape:
        return None
    return conv_backward_weights(geo)


def conv2d_transpose(shapes, dtypes, attrs) -> Run | None:
    """conv2d_transpose(x, w [kh,kw,cout,cin]): the input gradient of the conv2d whose output
    is x, as in the reference kernel (so no spatial flip, unlike oneDNN's deconvolution)."""
    if not float32_images(shapes, dtypes, 2, (0, 1)) or shapes[0][3] != shapes[1][3]:
        return None
    a = {**CONV_ATTRS, **attrs}
    try:
        out_shape, gh, gw = transpose_geometry("conv2d_transpose", tuple(shapes[0]),
                                               tuple(shapes[1]), a["stride"], a["padding"],
                                               a["dilation"])
    except NetlangError:
        return None
    geo = ConvGeometry(out_shape, shapes[1], gh, gw)
    if geo.y_shape != tuple(shapes[0]):
        return None
    return conv_backward_data(geo)


# -- pooling ----------------------------------------------------------------------------------------

class PoolGeometry:
    def __init__(self, x_shape: tuple, gh: Axis, gw: Axis, algorithm: int):
        self.x_shape = tuple(x_shape)
        self.y_shape = (x_shape[0], gh.out, gw.out, x_shape[3])
        self.x, self.y = nhwc(self.x_shape), nhwc(self.y_shape)
        self.algorithm = algorithm
        self.geometry = (dnnl.dims((gh.stride, gw.stride)), dnnl.dims((gh.k, gw.k)),
                         dnnl.dims((gh.dilation - 1, gw.dilation - 1)),
                         dnnl.dims((gh.before, gw.before)),
                         dnnl.dims((gh.after, gw.after)))

    def forward_pd(self, prop: int):
        return dnnl.PrimitiveDesc.create(
            "dnnl_pooling_forward_primitive_desc_create", dnnl.LIBRARY.engine, prop,
            self.algorithm, self.x.handle, self.y.handle, *self.geometry, None)

    def backward_pd(self, hint):
        return dnnl.PrimitiveDesc.create(
            "dnnl_pooling_backward_primitive_desc_create", dnnl.LIBRARY.engine,
            self.algorithm, self.x.handle, self.y.handle, *self.geometry, hint.handle, None,
            keep=(hint,))


def pool_geometry_of(op: str, x_shape: tuple, attrs: dict, algorithm: int):
    a = {**POOL_ATTRS, **attrs}
    try:
        gh, gw = pool_geometry(op, tuple(x_shape[1:3]), a["window"], a["stride"], a["padding"],
                               a["dilation"])
    except NetlangError:
        return None
    return PoolGeometry(x_shape, gh, gw, algorithm)


def pool_forward(op: str, algorithm: int):
    def factory(shapes, dtypes, attrs) -> Run | None:
        if not float32_images(shapes, dtypes, 1):
            return None
        geo = pool_geometry_of(op, shapes[0], attrs, algorithm)
        pd = None if geo is None else geo.forward_pd(dnnl.FORWARD_INFERENCE)
        if pd is None:
            return None
        step = Step(pd, {ARG_SRC: geo.x, ARG_DST: geo.y}, outputs=(ARG_DST,))

        def run(x, out=None):
            y = np.empty(geo.y_shape, np.float32) if out is None else out
            step({ARG_SRC: contiguous(x), ARG_DST: y})
            return y
        run.impl = step.impl
        return writes_out(run)
    factory.__doc__ = f"{op}(x)."
    return factory


def maxpool_grad(shapes, dtypes, attrs) -> Run | None:
    """maxpool_grad(x, y, g): oneDNN's max-pool backward needs the argmax workspace of a
    training forward, so each call reruns the forward on x (its y is not read back; the
    reference's y is maxpool(x) too).  Both pick the FIRST maximum of a window in row-major
    tap order, as the reference does (tests/runtime/test_onednn.py checks ties)."""
    if not float32_images(shapes, dtypes, 3, (0, 1, 2)):
        return None
    geo = pool_geometry_of("maxpool_grad", shapes[0], attrs, dnnl.POOLING_MAX)
    if geo is None or tuple(shapes[2]) != geo.y_shape:
        return None
    fwd = geo.forward_pd(dnnl.FORWARD_TRAINING)
    bwd = None if fwd is None else geo.backward_pd(fwd)
    if bwd is None:
        return None
    workspace = dnnl.owned_memory(fwd, ARG_WORKSPACE)
    shared = {} if workspace is None else {ARG_WORKSPACE: workspace}
    forward = Step(fwd, {ARG_SRC: geo.x}, shared={**shared,
                                                  ARG_DST: dnnl.owned_memory(fwd, ARG_DST)})
    backward = Step(bwd, {ARG_DIFF_DST: geo.y, ARG_DIFF_SRC: geo.x},
                    outputs=(ARG_DIFF_SRC,), shared=shared)

    def run(x, _y, g, out=None):
        dx = np.empty(geo.x_shape, np.float32) if out is None else out
        forward({ARG_SRC: contiguous(x)})
        backward({ARG_DIFF_DST: contiguous(g), ARG_DIFF_SRC: dx})
        return dx
    run.impl = backward.impl
    return writes_out(run)


def avgpool_grad(shapes, dtypes, attrs) -> Run | None:
    """avgpool_grad(g, like_x): TF averages over the cells inside the image only, which is
    oneDNN's pooling_avg_exclude_padding."""
    if not float32_images(shapes, dtypes, 2, (0, 1)):
        return None
    geo = pool_geometry_of("avgpool_grad", shapes[1], attrs, dnnl.POOLING_AVG_EXCLUDE_PADDING)
    if geo is None or tuple(shapes[0]) != geo.y_shape:
        return None
    hint = geo.forward_pd(dnnl.FORWARD_TRAINING)
    pd = None if hint is None else geo.backward_pd(hint)
    if pd is None:
        return None
    step = Step(pd, {ARG_DIFF_DST: geo.y, ARG_DIFF_SRC: geo.x}, outputs=(ARG_DIFF_SRC,))

    def run(g, _like, out=None):
        dx = np.empty(geo.x_shape, np.float32) if out is None else out
        step({ARG_DIFF_DST: contiguous(g), ARG_DIFF_SRC: dx})
        return dx
    run.impl = step.impl
    return writes_out(run)


# -- batchnorm ---------------------------------------------------------------------------------------

def channels_last_image(shape: tuple, axis) -> tuple | None:
    """x seen as an NHWC image with the normalized axis as C: (N,H,W,C) as is, any other rank
    as (M,1,1,C); None unless ``axis`` is the last axis."""
    if not isinstance(axis, int) or not shape or axis % len(shape) != len(shape) - 1:
        return None
    if len(shape) == 4:
        return tuple(shape)
    m = int(np.prod(shape[:-1], dtype=np.int64))
    return (m, 1, 1, shape[-1])


def batchnorm_apply(shapes, dtypes, attrs) -> Run | None:
    """batchnorm_apply(x, mean, var, gamma, beta): oneDNN's inference batchnorm with global
    statistics computes gamma * (x - mean) / sqrt(var + epsilon) + beta, netlang's formula
    (epsilon inside the square root, the variance given, not recomputed)."""
    if len(shapes) != 5 or not all(np.dtype(d) == F32 for d in dtypes):
        return None
    image = channels_last_image(tuple(shapes[0]), attrs.get("axis"))
    if image is None or 0 in image or any(tuple(s) != (image[3],) for s in shapes[1:]):
        return None
    md = nhwc(image)
    flags = dnnl.USE_GLOBAL_STATS | dnnl.USE_SCALE | dnnl.USE_SHIFT
    pd = dnnl.PrimitiveDesc.create(
        "dnnl_batch_normalization_forward_primitive_desc_create", dnnl.LIBRARY.engine,
        dnnl.FORWARD_INFERENCE, md.handle, md.handle, float(attrs["epsilon"]), flags, None)
    if pd is None:
        return None
    vec = dnnl.MemoryDesc((image[3],), (1,))
    step = Step(pd, {ARG_SRC: md, ARG_DST: md, ARG_MEAN: vec, ARG_VARIANCE: vec,
                     ARG_SCALE: vec, ARG_SHIFT: vec}, outputs=(ARG_DST,))
    out_shape = tuple(shapes[0])

    def run(x, mean, var, gamma, beta, out=None):
        y = np.empty(out_shape, np.float32) if out is None else out
        step({ARG_SRC: contiguous(x), ARG_DST: y, ARG_MEAN: contiguous(mean),
              ARG_VARIANCE: contiguous(var), ARG_SCALE: contiguous(gamma),
              ARG_SHIFT: contiguous(beta)})
        return y
    run.impl = step.impl
    return writes_out(run)


def batchnorm_grad_gamma(shapes, dtypes, attrs) -> Run | None:
    """batchnorm_grad_gamma(g, x, mean, var) = sum(g * (x - mean)) * rsqrt(var + epsilon):
    oneDNN's backward batchnorm with global statistics gives exactly that as diff_scale (its
    diff_src and diff_shift are computed too and dropped)."""
    if len(shapes) != 4 or not all(np.dtype(d) == F32 for d in dtypes):
        return None
    image = channels_last_image(tuple(shapes[1]), attrs.get("axis"))
    c = None if image is None else image[3]
    if (image is None or 0 in image or tuple(shapes[0]) != tuple(shapes[1])
            or any(tuple(s) != (c,) for s in shapes[2:])):
        return None
    md, vec = nhwc(image), dnnl.MemoryDesc((c,), (1,))
    flags = dnnl.USE_GLOBAL_STATS | dnnl.USE_SCALE | dnnl.USE_SHIFT
    eps = float(attrs["epsilon"])
    hint = dnnl.PrimitiveDesc.create(
        "dnnl_batch_normalization_forward_primitive_desc_create", dnnl.LIBRARY.engine,
        dnnl.FORWARD_TRAINING, md.handle, md.handle, eps, flags, None)
    pd = None if hint is None else dnnl.PrimitiveDesc.create(
        "dnnl_batch_normalization_backward_primitive_desc_create", dnnl.LIBRARY.engine,
        dnnl.BACKWARD, md.handle, md.handle, md.handle, eps, flags, hint.handle, None,
        keep=(hint,))
    if pd is None:
        return None
    step = Step(pd, {ARG_SRC: md, ARG_DIFF_DST: md, ARG_MEAN: vec, ARG_VARIANCE: vec,
                     ARG_SCALE: vec, ARG_DIFF_SRC: md, ARG_DIFF_SCALE: vec,
                     ARG_DIFF_SHIFT: vec},
                outputs=(ARG_DIFF_SRC, ARG_DIFF_SCALE, ARG_DIFF_SHIFT))
    ones = np.ones(c, np.float32)
    dx = np.empty(image, np.float32)     # written and dropped; a kernel-private buffer
    dbeta = np.empty(c, np.float32)

    def run(g, x, mean, var, out=None):
        dgamma = np.empty(c, np.float32) if out is None else out
        step({ARG_SRC: contiguous(x), ARG_DIFF_DST: contiguous(g), ARG_MEAN: contiguous(mean),
              ARG_VARIANCE: contiguous(var), ARG_SCALE: ones, ARG_DIFF_SRC: dx,
              ARG_DIFF_SCALE: dgamma, ARG_DIFF_SHIFT: dbeta})
        return dgamma
    run.impl = step.impl
    return writes_out(run)


# -- matmul ----------------------------------------------------------------------------------------

# Below this many multiply-adds (M*K*N) a matmul stays with NumPy's GEMM (one OpenBLAS
# thread, see runtime/threads.py): oneDNN's call and its 2-thread split do not pay there.
# Median ms, NumPy vs oneDNN (2 OpenMP threads), 2 cores, tools/bench_onednn.py and a sweep:
#   [64,1024]x[1024,10] (0.66M) 0.027 vs 0.077; its Ta/Tb gradients 0.029 vs 0.085, 0.054 vs 0.087
#   [256,1024]x[1024,10] (2.6M) 0.124 vs 0.206; Ta 0.182 vs 0.202, Tb 0.151 vs 0.170
#   [64,256]x[256,256]   (4.2M) 0.112 vs 0.108; Ta 0.112 vs 0.116, Tb 0.146 vs 0.119
#   [64,512]x[512,256]   (8.4M) 0.213 vs 0.178; Ta 0.235 vs 0.154, Tb 0.308 vs 0.153
#   [64,1024]x[1024,1024] (67M) 1.81 vs 1.61;  Ta 1.75 vs 1.35,  Tb 1.99 vs 1.46
#   [256,1024]x[1024,1024] (268M) 5.86 vs 3.01; Ta 5.99 vs 5.28, Tb 6.26 vs 2.89
# From 8.4M up, 39 shape/transpose cases measured 0.98x to 2.2x NumPy's speed; mnist's rows
# held up (1.02x to 1.34x) with a busy process spinning on one of the two cores.
MATMUL_MIN_MACS = 1 << 23


def matrix_md(shape: tuple, transposed: bool) -> dnnl.MemoryDesc:
    """A C-contiguous 2-D array as oneDNN's (rows, cols) matrix, or as its transpose (the
    same buffer read with swapped strides: no copy)."""
    rows, cols = shape
    if transposed:
        return dnnl.MemoryDesc((cols, rows), (1, cols))
    return dnnl.MemoryDesc((rows, cols), (cols, 1))


def trusted_matmul(pd) -> bool:
    """False for oneDNN's reference matmul (slow: NumPy runs instead).  The brgemm matmul
    taken for 2-D float32 on AVX-512 stayed inside its buffers against guard pages, with
    both transposes (tests/runtime/test_onednn.py)."""
    return not pd.impl().startswith("ref")


def matmul(shapes, dtypes, attrs, min_macs: int = MATMUL_MIN_MACS) -> Run | None:
    """matmul(a, b) of two float32 matrices, either read transposed (``transpose_a``,
    ``transpose_b``) through the strides of its memory descriptor; declined below
    ``min_macs`` multiply-adds (batched matmuls and other dtypes: the reference)."""
    ta, tb = attrs.get("transpose_a", False), attrs.get("transpose_b", False)
    if (len(shapes) != 2 or not all(np.dtype(d) == F32 for d in dtypes)
            or any(len(s) != 2 or 0 in s for s in shapes)
            or not (isinstance(ta, bool) and isinstance(tb, bool))):
        return None
    a_shape, b_shape = tuple(shapes[0]), tuple(shapes[1])
    m, k = a_shape[::-1] if ta else a_shape
    k2, n = b_shape[::-1] if tb else b_shape
    if k != k2 or m * k * n < min_macs:
        return None
    a_md, b_md, c_md = matrix_md(a_shape, ta), matrix_md(b_shape, tb), matrix_md((m, n), False)
    pd = dnnl.PrimitiveDesc.create("dnnl_matmul_primitive_desc_create", dnnl.LIBRARY.engine,
                                   a_md.handle, b_md.handle, None, c_md.handle, None)
    if pd is None or not trusted_matmul(pd):
        return None
    step = Step(pd, {ARG_SRC: a_md, ARG_WEIGHTS: b_md, ARG_DST: c_md}, outputs=(ARG_DST,))

    def run(a, b, out=None):
        c = np.empty((m, n), np.float32) if out is None else out
        step({ARG_SRC: contiguous(a), ARG_WEIGHTS: contiguous(b), ARG_DST: c})
        return c
    run.impl = step.impl
    return writes_out(run)


# -- the table -----------------------------------------------------------------------------------------

def conv2d_bias(shapes, dtypes, attrs) -> Run | None:
    """The ``conv2d_bias`` op (the conv_bias pass's fusion) as one primitive."""
    return conv2d_bias_relu(shapes, dtypes, attrs, bool(attrs.get("relu")))


FACTORIES: dict[str, Callable] = {
    "conv2d": conv2d,
    "conv2d_bias": conv2d_bias,
    "conv2d_backprop_input": conv2d_backprop_input,
    "conv2d_backprop_filter": conv2d_backprop_filter,
    "conv2d_transpose": conv2d_transpose,
    "maxpool": pool_forward("maxpool", dnnl.POOLING_MAX),
    "maxpool_grad": maxpool_grad,
    "avgpool": pool_forward("avgpool", dnnl.POOLING_AVG_EXCLUDE_PADDING),
    "avgpool_grad": avgpool_grad,
    "batchnorm_apply": batchnorm_apply,
    "matmul": matmul,
    # batchnorm_grad_gamma (above) matches the reference but is left out: oneDNN's backward
    # batchnorm also computes diff_src and synchronizes its threads several times, which a
    # busy neighbour process turns into waits.  [64,28,28,16], median of 40: quiet machine
    # 0.27 ms vs NumPy 0.80 ms, but 7.96 ms vs 0.65 ms with one core busy elsewhere.
}


def declining_errors(factory: Callable) -> Callable:
    """The factory, returning None (the reference runs) where oneDNN refuses to build the
    primitive, e.g. invalid_arguments for a shape it does not take; errors while RUNNING a
    primitive still raise."""
    def build(shapes, dtypes, attrs):
        try:
            return factory(shapes, dtypes, attrs)
        except dnnl.OneDNNError:
            return None
    build.__doc__, build.__name__ = factory.__doc__, factory.__name__
    return build


def onednn_kernels() -> dict[str, Callable]:
    """{op name: factory(shapes, dtypes, attrs) -> run | None}; {} when oneDNN is unavailable
    (``onednn.unavailable_reason()`` says why)."""
    if not dnnl.available():
        return {}
    return {op: declining_errors(factory) for op, factory in FACTORIES.items()}
