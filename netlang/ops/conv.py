"""Convolutions over NHWC images: conv2d, its input and filter gradients, conv2d_transpose.

Filters are ``[kh, kw, cin, cout]`` (``conv2d_transpose``: ``[kh, kw, cout, cin]``, as in
TensorFlow).  ``padding`` is ``"SAME"`` or ``"VALID"`` with TensorFlow's rule: SAME gives
``out = ceil(in / stride)`` and pads ``max((out-1)*stride + (k-1)*dilation + 1 - in, 0)`` in
total, the odd extra row/column at the bottom/right; or explicit ``((top, bottom), (left,
right))`` as ONNX and PyTorch give it.

The reference kernels over ``xp`` (NumPy and CuPy share them; the CPU backend runs oneDNN or
its own fast paths instead, see runtime/cpu_kernels.py):

- forward: a strided window view of the (padded) input is copied once into the patch
  matrix ``[N*OH*OW, kh*kw*cin]`` (im2col) and multiplied by the filter in ONE GEMM whose
  result already is the NHWC output;
- filter gradient: ``patches^T @ g``, one GEMM;
- input gradient: per kernel offset, ``g @ W[i, j]^T`` (one batched GEMM), then a
  scatter-add of kh*kw shifted slabs into the padded input (col2im).  No loops over the
  batch or pixels; the only Python loop is over the kh*kw kernel offsets.

The gradient ops are linear in each argument, so their VJPs are again these three ops and
gradients of gradients work.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from netlang.errors import ArgumentError, ShapeError
from netlang.ir.types import MAX_INT32, TensorType, derived_dim, dim_prod
from netlang.ops.elementwise import unbroadcast
from netlang.ops.registry import defop
from netlang.ops.rules import in_input_dtype

CONV_ATTRS = {"stride": (1, 1), "padding": "VALID", "dilation": (1, 1)}
# conv2d and its gradients also take ``groups``: channels split into that many independent
# convolutions (depthwise: one group per input channel).  None (the default, left out of the
# IR text and so of the network's hash) is one group.
GROUPED_ATTRS = {**CONV_ATTRS, "groups": None}


# -- attributes and geometry ---------------------------------------------------------------

def pair(op: str, name: str, value) -> tuple[int, int]:
    """``2`` or ``(2, 2)`` -> ``(2, 2)``; anything else is an argument error."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ArgumentError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (a, b)):
        raise ArgumentError(f"{op}: {name} must be positive integers, got {value!r}")
    if max(a, b) > MAX_INT32:
        raise ArgumentError(f"{op}: {name} must be at most {MAX_INT32}, got {value!r}")
    return a, b


def padding_mode(op: str, padding) -> str | tuple:
    """``"SAME"``, ``"VALID"``, or explicit per-side padding ``((top, bottom), (left,
    right))`` (ONNX's and PyTorch's; an int ``p`` pads every side by p)."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "VALID"):
            raise ArgumentError(f"{op}: padding must be SAME, VALID or ((top, bottom), "
                                f"(left, right)), got {padding!r}")
        return mode
    return explicit_padding(op, padding)


def explicit_padding(op: str, padding) -> tuple:
    """``((top, bottom), (left, right))`` from that form or one int for every side."""
    if isinstance(padding, int) and not isinstance(padding, bool):
        padding = ((padding, padding), (padding, padding))
    ok = (isinstance(padding, (tuple, list)) and len(padding) == 2 and all(
        isinstance(p, (tuple, list)) and len(p) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in p)
        for p in padding))
    if not ok:
        raise ArgumentError(f"{op}: padding must be SAME, VALID or ((top, bottom), (left, "
                            f"right)) of non-negative ints, got {padding!r}")
    return tuple(tuple(int(v) for v in p) for p in padding)


def padding_text(mode) -> str:
    """How an error names the padding: ``padding=VALID``, ``padding=((1, 0), (1, 0))``."""
    return f"padding={mode}"


class Axis(NamedTuple):
    """One spatial axis of a sliding window: sizes, steps and the padding TensorFlow uses."""

    size: int          # input length
    k: int             # window taps
    stride: int
    dilation: int
    out: int           # number of window positions
    before: int        # zero (or -inf) padding at the start
    after: int         # ... and at the end (gets the odd extra one)

    @property
    def span(self) -> int:
        """Length the dilated window covers."""
        return (self.k - 1) * self.dilation + 1

    @property
    def padded(self) -> int:
        return self.size + self.before + self.after


def axis_geometry(size: int, k: int, stride: int, dilation: int, mode) -> Axis | None:
    """TensorFlow's output size and padding for one axis (``mode`` SAME, VALID, or this
    axis's explicit ``(before, after)``); None when the window does not fit."""
    span = (k - 1) * dilation + 1
    if isinstance(mode, tuple):
        before, after = mode
        if size + before + after < span:
            return None
        return Axis(size, k, stride, dilation, (size + before + after - span) // stride + 1,
                    before, after)
    if mode == "SAME":
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        return Axis(size, k, stride, dilation, out, total // 2, total - total // 2)
    if size < span:
        return None
    return Axis(size, k, stride, dilation, (size - span) // stride + 1, 0, 0)


def window_geometry(op: str, hw: tuple, khw: tuple, stride, dilation, padding,
                    what: str = "window") -> tuple[Axis, Axis]:
    """Both spatial axes, or a shape error naming the sizes that do not fit."""
    mode = padding_mode(op, padding)
    modes = mode if isinstance(mode, tuple) else (mode, mode)
    stride, dilation = pair(op, "stride", stride), pair(op, "dilation", dilation)
    check_known_kernel(op, khw)
    if not all(isinstance(d, int) for d in hw):
        return symbolic_geometry(op, hw, khw, stride, dilation, mode)
    axes = [axis_geometry(n, k, s, d, m)
            for n, k, s, d, m in zip(hw, khw, stride, dilation, modes)]
    if None in axes:
        spans = [(k - 1) * d + 1 for k, d in zip(khw, dilation)]
        dil = "" if tuple(spans) == tuple(khw) else f" (dilated to {spans[0]}x{spans[1]})"
        padded = "" if mode == "VALID" else " padded"
        raise ShapeError(
            f"{op}: the {khw[0]}x{khw[1]} {what}{dil} is larger than the{padded} "
            f"{hw[0]}x{hw[1]} input with {padding_text(mode)}",
            hint="use padding=SAME, a smaller kernel, or a larger input")
    if axes[0].padded * axes[1].padded > MAX_INT32:
        raise ShapeError(
            f"{op}: padding={mode} pads the {hw[0]}x{hw[1]} input to "
            f"{axes[0].padded}x{axes[1].padded}, more than the {MAX_INT32} cells a kernel "
            f"can index", hint=f"use a {what} no larger than the input, or padding=VALID")
    return axes[0], axes[1]


def symbolic_geometry(op: str, hw: tuple, khw: tuple, stride: tuple, dilation: tuple,
                      mode) -> tuple[Axis, Axis]:
    """Both axes when the image's height or width is a symbol (``f32[N,H,W,1]``, seed 003's
    filters over images of any size).  padding=SAME with stride 1 keeps the size; any other
    window derives the output size as a new symbol named by its formula, one form for all:
    ``(H-2)`` (VALID 3x3), ``((H+1)//2)`` (SAME with stride 2, and a 1x1 VALID window with
    stride 2: the same size, so the same symbol), ``((H-1)//2)`` (VALID 3x3, stride 2).
    Where the padding depends on the size (SAME with a stride), the axis's ``before`` and
    ``after`` are None: the kernels compute them from the image they get."""
    axes = []
    modes = mode if isinstance(mode, tuple) else (mode, mode)
    for n, k, s, d, m in zip(hw, khw, stride, dilation, modes):
        if isinstance(n, int):
            axes.append(axis_geometry(n, k, s, d, m))
            continue
        span = (k - 1) * d + 1
        if m == "SAME":              # out = ceil(n / s)
            shift = s - 1
            before, after = ((span - 1) // 2, span - 1 - (span - 1) // 2) if s == 1 else (
                None, None)
        else:                        # out = (n + before + after - span) // s + 1
            before, after = m if isinstance(m, tuple) else (0, 0)
            shift = before + after - span + s
        axes.append(Axis(n, k, s, d, _derived_size(n, shift, s), before, after))
    return axes[0], axes[1]


def _derived_size(n, shift: int, stride: int):
    """``(n + shift) // stride`` as a dim: n itself, or a symbol named by that formula."""
    if stride == 1:
        if shift == 0:
            return n
        return derived_dim(f"({n}{shift:+d})", n, lambda v, c=shift: v + c)
    text = f"(({n}{shift:+d})//{stride})" if shift else f"({n}//{stride})"
    return derived_dim(text, n, lambda v, c=shift, s=stride: (v + c) // s)


def check_known_kernel(op: str, khw: tuple) -> None:
    """A filter's height and width must be numbers: a window of K taps has no shape rule."""
    if not all(isinstance(k, int) for k in khw):
        raise ShapeError(f"{op} needs a known kernel height and width, got [{khw[0]},{khw[1]}]",
                         hint="give the filter's first two dims as numbers, e.g. f32[3,3,1,32]")


# -- shape checks --------------------------------------------------------------------------

def check_image(op: str, x: TensorType) -> None:
    """A 4-D float NHWC tensor, or an error that says how to get one."""
    if x.rank != 4:
        hint = "reshape it to [N,H,W,C] first"
        if x.rank == 2 and isinstance(x.shape[1], int) and math.isqrt(x.shape[1]) ** 2 == (
                x.shape[1]):
            side = math.isqrt(x.shape[1])
            hint += f", e.g. reshape(x, shape=(-1, {side}, {side}, 1))"
        raise ShapeError(f"{op} expects 4-D input [N,H,W,C], got {x}; add reshape or flatten?",
                         hint=hint)
    if not x.dtype.is_float:
        raise ShapeError(f"{op} needs a float image, got {x}", hint=f"cast(x, dtype=f32) "
                         f"before {op}")


def check_filter(op: str, w: TensorType, x: TensorType, layout: str = "kh,kw,cin,cout",
                 groups: int | None = None) -> None:
    if w.rank != 4:
        raise ShapeError(f"{op} expects a 4-D filter [{layout}], got {w}")
    if w.dtype != x.dtype:
        raise ShapeError(f"{op}: the image is {x.dtype} but the filter is {w.dtype}",
                         hint="cast one of them so both have the same dtype")
    expects = w.shape[2] if layout.endswith("cin,cout") else w.shape[3]
    if groups is not None and groups != 1:
        check_groups(op, groups, x.shape[3], w.shape[3], expects)
        return
    if x.shape[3] != expects:
        raise ShapeError(f"{op}: input has {x.shape[3]} channels but the filter expects "
                         f"{expects} (filter {w})",
                         hint=f"the filter layout is [{layout}]")


def check_groups(op: str, groups, cin, cout, per_group) -> None:
    """``groups`` splits ``cin`` input and ``cout`` output channels evenly, and a filter of
    a grouped convolution reads ``cin / groups`` channels."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ShapeError(f"{op}: groups must be a positive int, got {groups!r}")
    for what, count in (("input", cin), ("output", cout)):
        if not isinstance(count, int) or count % groups:
            raise ShapeError(f"{op}: {groups} groups do not divide the {count} {what} "
                             "channels", hint="groups must divide both channel counts")
    if per_group * groups != cin:
        raise ShapeError(f"{op}: with {groups} groups the filter reads {per_group} of the "
                         f"{cin} input channels per group, so {per_group * groups} in all",
                         hint=f"a grouped filter is [kh, kw, {cin // groups}, cout]")


def conv_out_type(op: str, x: TensorType, w: TensorType, stride, padding, dilation,
                  groups: int | None = None) -> TensorType:
    check_image(op, x)
    check_filter(op, w, x, groups=groups)
    gh, gw = window_geometry(op, x.shape[1:3], w.shape[:2], stride, dilation, padding)
    return TensorType(x.dtype, (x.shape[0], gh.out, gw.out, w.shape[3]))


def check_cotangent(op: str, g: TensorType, expected: TensorType) -> None:
    if g.shape != expected.shape or g.dtype != expected.dtype:
        raise ShapeError(f"{op}: the output gradient is {g} but the convolution's output is "
                         f"{expected}")


# -- kernels -------------------------------------------------------------------------------

def pad_image(xp, x, gh: Axis, gw: Axis, value=0.0):
    """x with the geometry's padding around H and W (x itself when there is none)."""
    if not (gh.before or gh.after or gw.before or gw.after):
        return x
    n, h, w, c = x.shape
    out = xp.full((n, gh.padded, gw.padded, c), value, dtype=x.dtype)
    out[:, gh.before:gh.before + h, gw.before:gw.before + w, :] = x
    return out


def window_view(xp, xpad, gh: Axis, gw: Axis):
    """The strided view (never written to) ``[N, OH, OW, kh, kw, C]`` of every window of xpad."""
    sn, sh, sw, sc = xpad.strides
    shape = (xpad.shape[0], gh.out, gw.out, gh.k, gw.k, xpad.shape[3])
    strides = (sn, sh * gh.stride, sw * gw.stride, sh * gh.dilation, sw * gw.dilation, sc)
    return xp.lib.stride_tricks.as_strided(xpad, shape, strides)


def tap_rows_cols(gh: Axis, gw: Axis, i: int, j: int) -> tuple[slice, slice]:
    """The padded-input rows and columns kernel tap (i, j) reads, one per output pixel."""
    h0, w0 = i * gh.dilation, j * gw.dilation
    return (slice(h0, h0 + (gh.out - 1) * gh.stride + 1, gh.stride),
            slice(w0, w0 + (gw.out - 1) * gw.stride + 1, gw.stride))


def offset_slice(gh: Axis, gw: Axis, i: int, j: int) -> tuple:
    """NHWC index of the padded-input cells that kernel tap (i, j) reads."""
    rows, cols = tap_rows_cols(gh, gw, i, j)
    return slice(None), rows, cols, slice(None)


def crop_padding(xp, xpad, gh: Axis, gw: Axis):
    if xpad.shape[1:3] == (gh.size, gw.size):
        return xpad
    return xp.ascontiguousarray(xpad[:, gh.before:gh.before + gh.size,
                                     gw.before:gw.before + gw.size, :])


def patch_matrix(xp, x, gh: Axis, gw: Axis):
    """im2col: ``[N*OH*OW, kh*kw*C]``, one row per output pixel (a single strided copy).

    With fewer than 4 channels the rows would be copied a few floats at a time, so the
    matrix is built as its transpose (each tap's pixels one long run) and returned as a
    transposed view; BLAS takes either layout without a copy.
    """
    if gh.k == gw.k == 1 and gh.padded == gh.size and gw.padded == gw.size:
        x = x[:, ::gh.stride, ::gw.stride, :] if gh.stride * gw.stride > 1 else x
        return xp.ascontiguousarray(x).reshape(-1, x.shape[3])
    view = window_view(xp, pad_image(xp, x, gh, gw), gh, gw)
    k = gh.k * gw.k * x.shape[3]
    if x.shape[3] < 4:
        return xp.ascontiguousarray(view.transpose(3, 4, 5, 0, 1, 2)).reshape(k, -1).T
    return view.reshape(-1, k)


def conv_with_patches(x, w, patches, gh: Axis, gw: Axis):
    """conv2d as ONE GEMM of the patch matrix and the filter: already the NHWC output."""
    out = patches @ w.reshape(-1, w.shape[3])
    return out.reshape(x.shape[0], gh.out, gw.out, w.shape[3])


def per_group(xp, groups: int, kernel, parts, axis: int = -1):
    """A grouped convolution as ``groups`` ungrouped ones: ``parts`` are (array, size of its
    last axis per group) pairs; each call gets the i-th channel slice of every array and the
    results are joined along ``axis``."""
    outs = []
    for i in range(groups):
        sliced = [xp.ascontiguousarray(a[..., i * k:(i + 1) * k]) for a, k in parts]
        outs.append(kernel(*sliced))
    return xp.concatenate(outs, axis=axis)


def conv2d_kernel(xp, x, w, stride=(1, 1), padding="VALID", dilation=(1, 1), groups=None):
    if groups not in (None, 1):
        return per_group(xp, groups, lambda a, b: conv2d_kernel(xp, a, b, stride, padding,
                                                                dilation),
                         [(x, x.shape[3] // groups), (w, w.shape[3] // groups)])
    gh, gw = window_geometry("conv2d", x.shape[1:3], w.shape[:2], stride, dilation, padding)
    return conv_with_patches(x, w, patch_matrix(xp, x, gh, gw), gh, gw)


def backprop_filter_kernel(xp, x, g, like_w, stride=(1, 1), padding="VALID",
                           dilation=(1, 1), groups=None):
    if groups not in (None, 1):
        cin, cout = x.shape[3] // groups, g.shape[3] // groups
        return per_group(xp, groups, lambda a, b, c: backprop_filter_kernel(
            xp, a, b, c, stride, padding, dilation), [(x, cin), (g, cout), (like_w, cout)])
    gh, gw = window_geometry("conv2d", x.shape[1:3], like_w.shape[:2], stride, dilation,
                             padding)
    return filter_gradient(xp, patch_matrix(xp, x, gh, gw), g, like_w.shape)


def filter_gradient(xp, patches, g, w_shape: tuple):
    """``patches^T @ g`` as the filter ``[kh, kw, cin, cout]``."""
    kh, kw, cin, cout = w_shape
    g2 = g.reshape(-1, cout)
    # Multiply in the orientation where the long M axis is contiguous in both operands:
    # OpenBLAS runs it faster than patches^T @ g on a row-major patch matrix.
    dw = patches.T @ g2 if patches.flags.f_contiguous else (g2.T @ patches).T
    return xp.ascontiguousarray(dw).reshape(kh, kw, cin, cout)


def backprop_input(xp, g, w, in_shape: tuple, gh: Axis, gw: Axis, taps=None):
    """The adjoint of conv2d w.r.t. its input: a GEMM per kernel tap, then col2im.
    ``taps`` may be a reusable ``[kh*kw, N*OH*OW, cin]`` buffer for the per-tap products."""
    kh, kw, cin, cout = w.shape
    g2 = g.reshape(-1, cout)
    if kh == kw == 1 and gh.padded == gh.size and gw.padded == gw.size and (
            gh.stride == gw.stride == 1):
        return (g2 @ w.reshape(cin, cout).T).reshape(in_shape)
    if cin < 4:
        return col2im_channels_first(xp, g2, w, in_shape, gh, gw)
    # taps[t] = g @ W[t]^T, t = i*kw + j: contiguous [N, OH, OW, cin] slabs to scatter-add.
    if taps is None:
        taps = xp.empty((kh * kw, g2.shape[0], cin), dtype=g.dtype)
    xp.matmul(g2[None], w.reshape(kh * kw, cin, cout).transpose(0, 2, 1), out=taps)
    taps = taps.reshape(kh, kw, in_shape[0], gh.out, gw.out, cin)
    dx = xp.zeros((in_shape[0], gh.padded, gw.padded, cin), dtype=g.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[offset_slice(gh, gw, i, j)] += taps[i, j]
    return crop_padding(xp, dx, gh, gw)


def col2im_channels_first(xp, g2, w, in_shape: tuple, gh: Axis, gw: Axis):
    """col2im for few input channels: accumulate [C, N, H, W] so each add reads long rows."""
    kh, kw, cin, cout = w.shape
    n = in_shape[0]
    taps = (w.reshape(-1, cout) @ g2.T).reshape(kh, kw, cin, n, gh.out, gw.out)
    dx = xp.zeros((cin, n, gh.padded, gw.padded), dtype=g2.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cols = tap_rows_cols(gh, gw, i, j)
            dx[:, :, rows, cols] += taps[i, j]
    dx = dx[:, :, gh.before:gh.before + gh.size, gw.before:gw.before + gw.size]
    return xp.ascontiguousarray(dx.transpose(1, 2, 3, 0))


def backprop_input_kernel(xp, g, w, like, stride=(1, 1), padding="VALID", dilation=(1, 1),
                          groups=None):
    if groups not in (None, 1):
        cin, cout = like.shape[3] // groups, g.shape[3] // groups
        return per_group(xp, groups, lambda a, b, c: backprop_input_kernel(
            xp, a, b, c, stride, padding, dilation), [(g, cout), (w, cout), (like, cin)])
    gh, gw = window_geometry("conv2d", like.shape[1:3], w.shape[:2], stride, dilation, padding)
    return backprop_input(xp, g, w, like.shape, gh, gw)


# -- conv2d --------------------------------------------------------------------------------

def _conv2d_shape(x: TensorType, w: TensorType, stride, padding, dilation, groups
                  ) -> TensorType:
    return conv_out_type("conv2d", x, w, stride, padding, dilation, groups)


def _conv_attrs(node) -> dict:
    return {k: node.attrs[k] for k in CONV_ATTRS}


def _grouped_attrs(node) -> dict:
    """The attributes conv2d and its two gradients share (``groups`` included; None for a
    ``conv2d_bias``, which the conv_bias pass makes of ungrouped convolutions only)."""
    return {**_conv_attrs(node), "groups": node.attrs.get("groups")}


def _conv2d_vjp(b, n, g):
    x, w = n.inputs
    a = _grouped_attrs(n)
    return (b.conv2d_backprop_input(g, w, x, **a), b.conv2d_backprop_filter(x, g, w, **a))


def _conv2d_flops(out: TensorType, x: TensorType, w: TensorType, **_):
    return dim_prod((2, *out.shape, *w.shape[:3]))


defop("conv2d", arity=2, shape=_conv2d_shape, kernel=in_input_dtype(conv2d_kernel), vjp=_conv2d_vjp,
      attrs=dict(GROUPED_ATTRS), flops=_conv2d_flops,
      doc="2-D cross-correlation of NHWC x with filter [kh,kw,cin/groups,cout] "
          "(tf.nn.conv2d; groups > 1: grouped, groups = cin: depthwise).")


# -- conv2d_bias: conv2d + per-channel bias (+ relu), as the conv_bias pass fuses them --------

def _conv2d_bias_shape(x: TensorType, w: TensorType, bias: TensorType, stride, padding,
                       dilation, relu) -> TensorType:
    out = conv_out_type("conv2d_bias", x, w, stride, padding, dilation)
    if bias.shape != (w.shape[3],) or bias.dtype != out.dtype:
        raise ShapeError(f"conv2d_bias: the bias must be {out.dtype}[{w.shape[3]}] (one per "
                         f"filter), got {bias}")
    if not isinstance(relu, bool):
        raise ArgumentError(f"conv2d_bias: relu must be true or false, got {relu!r}")
    return out


def conv2d_bias_kernel(xp, x, w, bias, stride=(1, 1), padding="VALID", dilation=(1, 1),
                       relu=False):
    """conv2d(x, w) + bias, then max(., 0) when ``relu``: exactly the unfused ops' values."""
    y = conv2d_kernel(xp, x, w, stride, padding, dilation)
    xp.add(y, bias, out=y)
    return xp.maximum(y, 0, out=y) if relu else y


def _conv2d_bias_vjp(b, n, g):
    """The VJPs of the ops it stands for, in the order autodiff would emit them."""
    x, w, bias = n.inputs
    if n.attrs["relu"]:
        g = b.relu_grad(g, n.id)
    a = _grouped_attrs(n)
    return (b.conv2d_backprop_input(g, w, x, **a), b.conv2d_backprop_filter(x, g, w, **a),
            unbroadcast(b, g, bias))


defop("conv2d_bias", arity=3, shape=_conv2d_bias_shape, kernel=in_input_dtype(conv2d_bias_kernel),
      vjp=_conv2d_bias_vjp, attrs={**CONV_ATTRS, "relu": False},
      flops=lambda out, x, w, bias, **_: dim_prod((2, *out.shape, *w.shape[:3])),
      doc="conv2d(x, w) + bias (+ relu): one kernel where the backend has one (oneDNN's "
          "bias argument and relu post-op); made by the conv_bias pass.")


# -- conv2d_backprop_input -----------------------------------------------------------------

def _backprop_input_shape(g: TensorType, w: TensorType, like: TensorType, stride, padding,
                          dilation, groups) -> TensorType:
    op = "conv2d_backprop_input"
    expected = conv_out_type(op, like, w, stride, padding, dilation, groups)
    check_cotangent(op, g, expected)
    return like.with_dtype(g.dtype)


def _backprop_input_vjp(b, n, ct):
    g, w, _ = n.inputs
    a = _grouped_attrs(n)
    return b.conv2d(ct, w, **a), b.conv2d_backprop_filter(ct, g, w, **a), None


def _backprop_input_flops(out: TensorType, g: TensorType, w: TensorType, like, **_):
    return dim_prod((2, *g.shape, *w.shape[:3]))


defop("conv2d_backprop_input", arity=3, shape=_backprop_input_shape,
      kernel=in_input_dtype(backprop_input_kernel), vjp=_backprop_input_vjp,
      attrs=dict(GROUPED_ATTRS),
      flops=_backprop_input_flops,
      doc="Gradient of conv2d w.r.t. its input: (g, w, like_x) -> shaped like x.")


# -- conv2d_backprop_filter ----------------------------------------------------------------

def _backprop_filter_shape(x: TensorType, g: TensorType, like_w: TensorType, stride, padding,
                           dilation, groups) -> TensorType:
    op = "conv2d_backprop_filter"
    expected = conv_out_type(op, x, like_w, stride, padding, dilation, groups)
    check_cotangent(op, g, expected)
    return like_w.with_dtype(x.dtype)


def _backprop_filter_vjp(b, n, ct):
    x, g, _ = n.inputs
    a = _grouped_attrs(n)
    return b.conv2d_backprop_input(g, ct, x, **a), b.conv2d(x, ct, **a), None


def _backprop_filter_flops(out: TensorType, x: TensorType, g: TensorType, like_w, **_):
    return dim_prod((2, *g.shape, *like_w.shape[:3]))


defop("conv2d_backprop_filter", arity=3, shape=_backprop_filter_shape,
      kernel=in_input_dtype(backprop_filter_kernel), vjp=_backprop_filter_vjp,
      attrs=dict(GROUPED_ATTRS),
      flops=_backprop_filter_flops,
      doc="Gradient of conv2d w.r.t. its filter: (x, g, like_w) -> shaped like w.")


# -- conv2d_transpose ----------------------------------------------------------------------

def transpose_out_size(size: int, k: int, stride: int, dilation: int, mode: str) -> int:
    """VALID: (in-1)*stride + dilated k; SAME: in*stride (tf.layers.conv2d_transpose)."""
    return size * stride if mode == "SAME" else (size - 1) * stride + (k - 1) * dilation + 1


def transpose_geometry(op: str, x_shape: tuple, w_shape: tuple, stride, padding, dilation):
    """(output shape, geometry of the conv2d whose input gradient this is)."""
    mode = padding_mode(op, padding)
    if not isinstance(mode, str):
        raise ArgumentError(f"{op}: padding must be SAME or VALID, got {padding!r}")
    stride, dilation = pair(op, "stride", stride), pair(op, "dilation", dilation)
    if not all(isinstance(d, int) for d in x_shape[1:3]):
        raise ShapeError(f"{op} needs known image height and width, got "
                         f"[{x_shape[1]},{x_shape[2]}]")
    check_known_kernel(op, w_shape[:2])
    hw = tuple(transpose_out_size(n, k, s, d, mode)
               for n, k, s, d in zip(x_shape[1:3], w_shape[:2], stride, dilation))
    gh, gw = window_geometry(op, hw, w_shape[:2], stride, dilation, padding)
    return (x_shape[0], hw[0], hw[1], w_shape[2]), gh, gw


def _transpose_shape(x: TensorType, w: TensorType, stride, padding, dilation) -> TensorType:
    op = "conv2d_transpose"
    check_image(op, x)
    check_filter(op, w, x, layout="kh,kw,cout,cin")
    shape, _, _ = transpose_geometry(op, x.shape, w.shape, stride, padding, dilation)
    return TensorType(x.dtype, shape)


def conv2d_transpose_kernel(xp, x, w, stride=(1, 1), padding="VALID", dilation=(1, 1)):
    shape, gh, gw = transpose_geometry("conv2d_transpose", x.shape, w.shape, stride, padding,
                                       dilation)
    return backprop_input(xp, x, w, shape, gh, gw)


def _transpose_vjp(b, n, ct):
    x, w = n.inputs
    a = _conv_attrs(n)
    return b.conv2d(ct, w, **a), b.conv2d_backprop_filter(ct, x, w, **a)


def _transpose_flops(out: TensorType, x: TensorType, w: TensorType, **_):
    return dim_prod((2, *x.shape, *w.shape[:3]))


defop("conv2d_transpose", arity=2, shape=_transpose_shape, kernel=in_input_dtype(conv2d_transpose_kernel),
      vjp=_transpose_vjp, attrs=dict(CONV_ATTRS), flops=_transpose_flops,
      doc="Transposed convolution, filter [kh,kw,cout,cin]; output VALID (in-1)*s+k, "
          "SAME in*s (tf.layers.conv2d_transpose).")
