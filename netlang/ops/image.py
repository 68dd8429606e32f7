"""Image resizing over NHWC tensors with TensorFlow 1.x semantics, and its gradient.

``resize(x; size=(h, w), method)`` matches ``tf.image.resize_nearest_neighbor``,
``resize_bilinear`` and ``resize_bicubic`` with their TF 1.x defaults
(``align_corners=False, half_pixel_centers=False``): output pixel ``o`` samples the input
at ``o * in/out`` (float32), nearest takes ``floor`` (clamped), bilinear interpolates
between ``floor`` and ``ceil`` (clamped), bicubic uses the legacy TF kernel: Keys' cubic
with ``a = -0.75``, taps ``floor-1 .. floor+2`` clamped to the edge, weights read from
TF's 1024-entry table.  (``a = -0.5`` with renormalized edges is TF's
``half_pixel_centers=True`` mode, not the TF 1.x default.)

Each method is separable, so the resize is two small GEMMs with interpolation matrices
``A_h [out_h, in_h]`` and ``A_w [out_w, in_w]``: ``y[n] = A_h x[n] A_w^T`` per channel, and
the gradient is the transpose, ``resize_grad(g) = A_h^T g A_w``.
"""
from __future__ import annotations

import functools

import numpy as np

from netlang.errors import ArgumentError, ShapeError
from netlang.ir.types import TensorType, dim_prod
from netlang.ops.conv import check_image, pair
from netlang.ops.registry import REQUIRED, defop
from netlang.ops.rules import in_input_dtype

METHODS = ("nearest", "bilinear", "bicubic")
TABLE_SIZE = 1024          # TF's resize_bicubic_op.cc kTableSize


def resize_method(op: str, method) -> str:
    m = str(method).lower()
    if m not in METHODS:
        raise ArgumentError(f"{op}: method must be one of {', '.join(METHODS)}, got {method!r}")
    return m


def _positions(n_in: int, n_out: int) -> np.ndarray:
    """Where output pixel o samples the input: o * (in/out), in float32 like TF."""
    scale = np.float32(n_in) / np.float32(n_out)
    return np.arange(n_out, dtype=np.float32) * scale


def _keys_table(a: float = -0.75) -> np.ndarray:
    """TF's coefficient table: [i, 0] = w(t), [i, 1] = w(t + 1) at t = i / 1024."""
    t = np.arange(TABLE_SIZE + 1, dtype=np.float64) / TABLE_SIZE
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    s = t + 1
    far = ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
    return np.stack([near, far], axis=1).astype(np.float32)


@functools.lru_cache(maxsize=64)
def interpolation_matrix(n_in: int, n_out: int, method: str) -> np.ndarray:
    """``A [n_out, n_in]`` with ``resized = A @ signal`` along one axis (float32 weights)."""
    pos = _positions(n_in, n_out)
    rows = np.arange(n_out)
    a = np.zeros((n_out, n_in), dtype=np.float32)
    floor = np.floor(pos).astype(np.int64)
    if method == "nearest":
        a[rows, np.minimum(floor, n_in - 1)] = 1.0
    elif method == "bilinear":
        lerp = pos - np.floor(pos)
        upper = np.minimum(np.ceil(pos).astype(np.int64), n_in - 1)
        np.add.at(a, (rows, np.maximum(floor, 0)), 1 - lerp)
        np.add.at(a, (rows, upper), lerp)
    else:
        table = _keys_table()
        offset = np.rint((pos - np.floor(pos)) * TABLE_SIZE).astype(np.int64)
        weights = [table[offset, 1], table[offset, 0], table[TABLE_SIZE - offset, 0],
                   table[TABLE_SIZE - offset, 1]]
        for tap, w in zip(range(-1, 3), weights):
            np.add.at(a, (rows, np.clip(floor + tap, 0, n_in - 1)), w)
    a.setflags(write=False)
    return a


def apply_separable(xp, x, ah: np.ndarray, aw: np.ndarray):
    """``y[n, :, :, c] = ah @ x[n, :, :, c] @ aw.T`` as two batched GEMMs, NHWC in and out."""
    n, h, w, c = x.shape
    ah, aw = xp.asarray(ah, dtype=x.dtype), xp.asarray(aw, dtype=x.dtype)
    rows = xp.matmul(ah, x.reshape(n, h, w * c))                  # [N, OH, W*C]
    oh = ah.shape[0]
    out = xp.matmul(aw, rows.reshape(n * oh, w, c))              # [N*OH, OW, C]
    return out.reshape(n, oh, aw.shape[0], c)


def nearest_agrees(n_in: int, n_out: int) -> bool:
    """Whether ONNX's nearest resize (asymmetric, floor of ``o / scale`` with the float32
    ``scale = out / in``) picks the same pixels as netlang's ``floor(o * in / out)``."""
    o = np.arange(n_out, dtype=np.float32)
    ours = np.floor(o * (np.float32(n_in) / np.float32(n_out)))
    theirs = np.floor(o / (np.float32(n_out) / np.float32(n_in)))
    return bool(np.array_equal(np.minimum(ours, n_in - 1), np.minimum(theirs, n_in - 1)))


def resize_kernel(xp, x, size, method="bilinear"):
    oh, ow = pair("resize", "size", size)
    m = resize_method("resize", method)
    return apply_separable(xp, x, interpolation_matrix(x.shape[1], oh, m),
                           interpolation_matrix(x.shape[2], ow, m))


def resize_grad_kernel(xp, g, like, size, method="bilinear"):
    m = resize_method("resize_grad", method)
    ah = interpolation_matrix(like.shape[1], g.shape[1], m)
    aw = interpolation_matrix(like.shape[2], g.shape[2], m)
    return apply_separable(xp, g, ah.T, aw.T)


def resize_type(op: str, x: TensorType, size, method) -> TensorType:
    check_image(op, x)
    resize_method(op, method)
    oh, ow = pair(op, "size", size)
    if not all(isinstance(d, int) for d in x.shape[1:3]):
        raise ShapeError(f"{op} needs known image height and width, got {x}")
    return x.with_shape((x.shape[0], oh, ow, x.shape[3]))


def _resize_grad_shape(g: TensorType, like: TensorType, size, method) -> TensorType:
    out = resize_type("resize_grad", like, size, method)
    if g != out:
        raise ShapeError(f"resize_grad: the output gradient is {g} but the resized image is "
                         f"{out}")
    return like


def _resize_flops(out: TensorType, x: TensorType, **_):
    """Rows pass A_h @ x, then columns pass A_w @ rows."""
    n, h, w, c = x.shape
    oh, ow = out.shape[1:3]
    return dim_prod((2, n, c, oh * h * w + oh * ow * w))


def _resize_grad_flops(out: TensorType, g: TensorType, like: TensorType, **_):
    n, oh, ow, c = g.shape
    h, w = like.shape[1:3]
    return dim_prod((2, n, c, h * oh * ow + h * w * ow))


defop("resize", arity=1, shape=lambda x, size, method: resize_type("resize", x, size, method),
      kernel=in_input_dtype(resize_kernel),
      vjp=lambda b, n, g: (b.resize_grad(g, n.inputs[0], **n.attrs),),
      attrs={"size": REQUIRED, "method": "bilinear"}, flops=_resize_flops,
      doc="Resize NHWC images to size=(h, w): nearest, bilinear or bicubic, TF 1.x rules.")

defop("resize_grad", arity=2, shape=_resize_grad_shape, kernel=in_input_dtype(resize_grad_kernel),
      vjp=lambda b, n, ct: (b.resize(ct, **n.attrs), None),
      attrs={"size": REQUIRED, "method": "bilinear"}, flops=_resize_grad_flops,
      doc="resize's VJP: (g, like_x) -> the transposed interpolation applied to g.")
