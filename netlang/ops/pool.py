"""Pooling over NHWC images: maxpool, avgpool and their gradients (tf.nn.max_pool/avg_pool).

``window`` and ``stride`` are ints or pairs (``stride=None`` means ``stride = window``);
``padding`` is SAME or VALID with TensorFlow's rule (see ops/conv.py).  SAME max pooling pads
with -inf; SAME average pooling averages over the cells inside the image only, like TF.
``dilation`` (an int or pair; None means 1) spreads the window's taps apart, as ONNX's and
PyTorch's pool ``dilations``: a 2x2 window with dilation 2 reads cells (0,0), (0,2), (2,0), (2,2).

Every kernel is a loop over the kh*kw window taps, each a strided slab of the whole batch
(``x[:, i::s, j::s, :]`` for the common window == stride case), so there is no Python loop
over the batch or pixels and no copy of the input.  ``maxpool_grad`` routes each output
gradient to the first maximum of its window (taps in row-major order), as
``maxpool_grad_grad`` (its adjoint, for gradients of gradients) gathers from the same cell.
"""
from __future__ import annotations

import numpy as np

from netlang.errors import ShapeError
from netlang.ir.types import TensorType, dim_prod
from netlang.ops.conv import (
    Axis,
    check_image,
    crop_padding,
    offset_slice,
    pad_image,
    padding_mode,
    pair,
    window_geometry,
)
from netlang.ops.registry import defop

# ``dilation`` defaults to None (not (1, 1)) so that undilated pools print as they always did.
POOL_ATTRS = {"window": (2, 2), "stride": None, "padding": "VALID", "dilation": None}


def pool_geometry(op: str, hw: tuple, window, stride, padding, dilation=None
                  ) -> tuple[Axis, Axis]:
    window = pair(op, "window", window)
    stride = window if stride is None else pair(op, "stride", stride)
    dilation = (1, 1) if dilation is None else pair(op, "dilation", dilation)
    spans = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    mode = padding_mode(op, padding)
    if isinstance(mode, tuple) and any(p >= k for side, k in zip(mode, spans) for p in side):
        dilated = "" if spans == list(window) else f" (dilated to {spans[0]}x{spans[1]})"
        raise ShapeError(f"{op}: padding={mode} pads as much as the {window[0]}x{window[1]} "
                         f"window{dilated} or more, so a window could hold padding alone",
                         hint="pad each side by less than the window")
    axes = window_geometry(op, hw, window, stride, dilation, padding)
    for name, a in zip(("height", "width"), axes):
        if isinstance(a.size, int) and a.dilation > 1 and taps_inside(a).min() == 0:
            raise ShapeError(f"{op}: with dilation {a.dilation} a window's {a.k} taps all "
                             f"fall in the padding of the {a.size}-cell {name}",
                             hint="use a smaller dilation or padding, or a larger input")
    return axes


def taps_inside(a: Axis) -> np.ndarray:
    """How many taps of each window position fall inside the image (not in its padding)."""
    cells = np.arange(a.out)[:, None] * a.stride - a.before + np.arange(a.k) * a.dilation
    return ((cells >= 0) & (cells < a.size)).sum(axis=1)


def undilated(attrs: dict) -> bool:
    """The pool reads adjacent cells (the fast paths' case)."""
    return attrs.get("dilation") in (None, 1, (1, 1), [1, 1])


def pool_type(op: str, x: TensorType, window, stride, padding, dilation=None) -> TensorType:
    check_image(op, x)
    gh, gw = pool_geometry(op, x.shape[1:3], window, stride, padding, dilation)
    return x.with_shape((x.shape[0], gh.out, gw.out, x.shape[3]))


def check_same(op: str, what: str, got: TensorType, expected: TensorType) -> None:
    if got != expected:
        raise ShapeError(f"{op}: {what} is {got} but the pooled output is {expected}")


def taps(gh: Axis, gw: Axis) -> list[tuple]:
    """The padded-input slab of every window tap, row-major (this order breaks ties)."""
    return [offset_slice(gh, gw, i, j) for i in range(gh.k) for j in range(gw.k)]


def disjoint(gh: Axis, gw: Axis) -> bool:
    """Windows do not overlap, so each input cell belongs to at most one window."""
    return gh.stride >= gh.span and gw.stride >= gw.span


def covers_all(gh: Axis, gw: Axis) -> bool:
    """Every cell of the padded input is in exactly one window (window == stride, no rest)."""
    return (gh.dilation == gw.dilation == 1 and gh.stride == gh.k and gw.stride == gw.k
            and gh.out * gh.k == gh.padded and gw.out * gw.k == gw.padded)


def pool_attrs(node) -> dict:
    return {k: node.attrs.get(k) for k in POOL_ATTRS}


def _pool_flops(out: TensorType, *inputs, window, **_):
    kh, kw = pair("pool", "window", window)
    return dim_prod((*out.shape, kh * kw))


# -- maxpool -------------------------------------------------------------------------------

def maxpool_kernel(xp, x, window=(2, 2), stride=None, padding="VALID", dilation=None):
    gh, gw = pool_geometry("maxpool", x.shape[1:3], window, stride, padding, dilation)
    xpad = pad_image(xp, x, gh, gw, value=-np.inf)
    slabs = taps(gh, gw)
    if len(slabs) == 1:
        return xp.ascontiguousarray(xpad[slabs[0]])
    out = xp.maximum(xpad[slabs[0]], xpad[slabs[1]])
    for idx in slabs[2:]:
        xp.maximum(out, xpad[idx], out=out)
    return out


def first_max_masks(xp, xpad, y, gh: Axis, gw: Axis):
    """Yield (tap slab, mask) where the mask marks outputs whose FIRST maximum is that tap."""
    slabs = taps(gh, gw)
    free = None                       # outputs whose maximum no earlier tap has taken
    for t, idx in enumerate(slabs):
        if t == len(slabs) - 1 and free is not None:
            yield idx, free           # the max is somewhere in the window: here, if not before
            return
        hit = xpad[idx] == y
        if free is None:
            free = ~hit
        else:
            hit &= free
            xp.logical_xor(free, hit, out=free)
        yield idx, hit


def maxpool_grad_kernel(xp, x, y, g, window=(2, 2), stride=None, padding="VALID",
                        dilation=None):
    gh, gw = pool_geometry("maxpool_grad", x.shape[1:3], window, stride, padding, dilation)
    xpad = pad_image(xp, x, gh, gw, value=-np.inf)
    shape = (x.shape[0], gh.padded, gw.padded, x.shape[3])
    full = covers_all(gh, gw)
    dx = xp.empty(shape, dtype=g.dtype) if full else xp.zeros(shape, dtype=g.dtype)
    for idx, hit in first_max_masks(xp, xpad, y, gh, gw):
        if disjoint(gh, gw):
            xp.multiply(g, hit, out=dx[idx])
        else:
            dx[idx] += g * hit
    return crop_padding(xp, dx, gh, gw)


def maxpool_grad_grad_kernel(xp, x, y, h, window=(2, 2), stride=None, padding="VALID",
                             dilation=None):
    gh, gw = pool_geometry("maxpool_grad_grad", x.shape[1:3], window, stride, padding,
                           dilation)
    xpad = pad_image(xp, x, gh, gw, value=-np.inf)
    hpad = pad_image(xp, h, gh, gw)
    out = xp.zeros(y.shape, dtype=h.dtype)
    for idx, hit in first_max_masks(xp, xpad, y, gh, gw):
        out += hpad[idx] * hit
    return out


def _maxpool_shape(x: TensorType, window, stride, padding, dilation=None) -> TensorType:
    return pool_type("maxpool", x, window, stride, padding, dilation)


def _maxpool_grad_shape(x: TensorType, y: TensorType, g: TensorType, window, stride,
                        padding, dilation=None) -> TensorType:
    out = pool_type("maxpool_grad", x, window, stride, padding, dilation)
    check_same("maxpool_grad", "the pooled value y", y, out)
    check_same("maxpool_grad", "the output gradient", g, out)
    return x


def _maxpool_grad_grad_shape(x: TensorType, y: TensorType, h: TensorType, window, stride,
                             padding, dilation=None) -> TensorType:
    out = pool_type("maxpool_grad_grad", x, window, stride, padding, dilation)
    check_same("maxpool_grad_grad", "the pooled value y", y, out)
    if h != x:
        raise ShapeError(f"maxpool_grad_grad: the input-shaped gradient is {h}, expected {x}")
    return out


defop("maxpool", arity=1, shape=_maxpool_shape, kernel=maxpool_kernel,
      vjp=lambda b, n, g: (b.maxpool_grad(n.inputs[0], n.id, g, **pool_attrs(n)),),
      attrs=dict(POOL_ATTRS), flops=_pool_flops,
      doc="Max over each window (tf.nn.max_pool); SAME pads with -inf.")

defop("maxpool_grad", arity=3, shape=_maxpool_grad_shape, kernel=maxpool_grad_kernel,
      vjp=lambda b, n, ct: (None, None, b.maxpool_grad_grad(*n.inputs[:2], ct,
                                                            **pool_attrs(n))),
      attrs=dict(POOL_ATTRS), flops=_pool_flops,
      doc="maxpool's VJP: (x, y, g) -> g routed to the first maximum of each window.")

defop("maxpool_grad_grad", arity=3, shape=_maxpool_grad_grad_shape,
      kernel=maxpool_grad_grad_kernel,
      vjp=lambda b, n, ct: (None, None, b.maxpool_grad(*n.inputs[:2], ct, **pool_attrs(n))),
      attrs=dict(POOL_ATTRS), flops=_pool_flops,
      doc="maxpool_grad's adjoint in g: (x, y, h) -> h read at each window's first maximum.")


# -- avgpool -------------------------------------------------------------------------------

def inverse_counts(xp, gh: Axis, gw: Axis, dtype):
    """1 / (taps of each window inside the image), shaped [1, OH, OW, 1] (TF's SAME rule)."""
    counts = np.outer(taps_inside(gh), taps_inside(gw)).astype(np.float64)
    return xp.asarray((1.0 / counts).astype(dtype)[None, :, :, None])


def avgpool_kernel(xp, x, window=(2, 2), stride=None, padding="VALID", dilation=None):
    gh, gw = pool_geometry("avgpool", x.shape[1:3], window, stride, padding, dilation)
    xpad = pad_image(xp, x, gh, gw)
    slabs = taps(gh, gw)
    out = xp.array(xpad[slabs[0]], copy=True)
    for idx in slabs[1:]:
        out += xpad[idx]
    out *= inverse_counts(xp, gh, gw, x.dtype)
    return out


def avgpool_grad_kernel(xp, g, like, window=(2, 2), stride=None, padding="VALID",
                        dilation=None):
    gh, gw = pool_geometry("avgpool_grad", like.shape[1:3], window, stride, padding, dilation)
    share = g * inverse_counts(xp, gh, gw, g.dtype)
    shape = (like.shape[0], gh.padded, gw.padded, like.shape[3])
    full = covers_all(gh, gw)
    dx = xp.empty(shape, dtype=g.dtype) if full else xp.zeros(shape, dtype=g.dtype)
    for idx in taps(gh, gw):
        if full:
            dx[idx] = share
        else:
            dx[idx] += share
    return crop_padding(xp, dx, gh, gw)


def _avgpool_shape(x: TensorType, window, stride, padding, dilation=None) -> TensorType:
    return pool_type("avgpool", x, window, stride, padding, dilation)


def _avgpool_grad_shape(g: TensorType, like: TensorType, window, stride, padding,
                        dilation=None) -> TensorType:
    out = pool_type("avgpool_grad", like, window, stride, padding, dilation)
    check_same("avgpool_grad", "the output gradient", g, out)
    return like


defop("avgpool", arity=1, shape=_avgpool_shape, kernel=avgpool_kernel,
      vjp=lambda b, n, g: (b.avgpool_grad(g, n.inputs[0], **pool_attrs(n)),),
      attrs=dict(POOL_ATTRS), flops=_pool_flops,
      doc="Mean over each window (tf.nn.avg_pool); SAME averages the cells inside only.")

defop("avgpool_grad", arity=2, shape=_avgpool_grad_shape, kernel=avgpool_grad_kernel,
      vjp=lambda b, n, ct: (b.avgpool(ct, **pool_attrs(n)), None),
      attrs=dict(POOL_ATTRS), flops=_pool_flops,
      doc="avgpool's VJP: (g, like_x) -> each window's gradient spread evenly over its cells.")
