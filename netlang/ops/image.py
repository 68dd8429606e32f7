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
# Where output pixel o samples the input (None, the default, is TF 1.x's asymmetric):
COORDINATES = ("asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners")
# How nearest rounds that position (None: floor, TF 1.x's; ONNX's default is round_prefer_floor)
NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
TABLE_SIZE = 1024          # TF's resize_bicubic_op.cc kTableSize


def resize_method(op: str, method) -> str:
    m = str(method).lower()
    if m not in METHODS:
        raise ArgumentError(f"{op}: method must be one of {', '.join(METHODS)}, got {method!r}")
    return m


def resize_modes(op: str, method: str, coordinates, nearest_mode) -> tuple[str, str]:
    """(coordinates, nearest_mode) with their defaults, or an argument error."""
    c = "asymmetric" if coordinates is None else str(coordinates).lower()
    if c not in COORDINATES:
        raise ArgumentError(f"{op}: coordinates must be one of {', '.join(COORDINATES)}, got "
                            f"{coordinates!r}")
    m = "floor" if nearest_mode is None else str(nearest_mode).lower()
    if m not in NEAREST_MODES:
        raise ArgumentError(f"{op}: nearest_mode must be one of {', '.join(NEAREST_MODES)}, "
                            f"got {nearest_mode!r}")
    if method == "bicubic" and c != "asymmetric":
        raise ArgumentError(f"{op}: bicubic resizes with TF 1.x's asymmetric coordinates only",
                            hint="use bilinear or nearest with other coordinates")
    return c, m


def _positions(n_in: int, n_out: int, coordinates: str = "asymmetric") -> np.ndarray:
    """Where output pixel o samples the input, in float32 like TF: asymmetric o * in/out;
    half_pixel (o + 0.5) * in/out - 0.5 (TF 2, ONNX's default; pytorch_half_pixel the same
    but 0 for a single output pixel); align_corners o * (in - 1)/(out - 1)."""
    o = np.arange(n_out, dtype=np.float32)
    if coordinates == "align_corners":
        if n_out == 1:
            return np.zeros(1, np.float32)
        return o * (np.float32(n_in - 1) / np.float32(n_out - 1))
    scale = np.float32(n_in) / np.float32(n_out)
    if coordinates == "pytorch_half_pixel" and n_out == 1:
        return np.zeros(1, np.float32)
    if coordinates in ("half_pixel", "pytorch_half_pixel"):
        return (o + np.float32(0.5)) * scale - np.float32(0.5)
    return o * scale


def _nearest(pos: np.ndarray, mode: str) -> np.ndarray:
    if mode == "floor":
        return np.floor(pos)
    if mode == "ceil":
        return np.ceil(pos)
    if mode == "round_prefer_floor":
        return np.ceil(pos - np.float32(0.5))
    return np.floor(pos + np.float32(0.5))          # round_prefer_ceil


def _keys_table(a: float = -0.75) -> np.ndarray:
    """TF's coefficient table: [i, 0] = w(t), [i, 1] = w(t + 1) at t = i / 1024."""
    t = np.arange(TABLE_SIZE + 1, dtype=np.float64) / TABLE_SIZE
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    s = t + 1
    far = ((a * s - 5 * a) * s + 8 * a) * s - 4 * a
    return np.stack([near, far], axis=1).astype(np.float32)


@functools.lru_cache(maxsize=64)
def interpolation_matrix(n_in: int, n_out: int, method: str, coordinates: str = "asymmetric",
                         nearest_mode: str = "floor") -> np.ndarray:
    """``A [n_out, n_in]`` with ``resized = A @ signal`` along one axis (float32 weights)."""
    pos = _positions(n_in, n_out, coordinates)
    rows = np.arange(n_out)
    a = np.zeros((n_out, n_in), dtype=np.float32)
    floor = np.floor(pos).astype(np.int64)
    if method == "nearest":
        picked = _nearest(pos, nearest_mode).astype(np.int64)
        a[rows, np.clip(picked, 0, n_in - 1)] = 1.0
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


def onnx_positions(n_in: int, n_out: int, coordinates: str = "asymmetric",
                   scale: float | None = None) -> np.ndarray:
    """Where ONNX's Resize samples (float32): it divides by ``scale`` (out / in unless the
    model gives its own) where netlang multiplies by in / out."""
    o = np.arange(n_out, dtype=np.float32)
    if coordinates == "align_corners":
        return _positions(n_in, n_out, coordinates)
    s = np.float32(n_out) / np.float32(n_in) if scale is None else np.float32(scale)
    if coordinates == "pytorch_half_pixel" and n_out == 1:
        return np.zeros(1, np.float32)
    if coordinates in ("half_pixel", "pytorch_half_pixel"):
        return (o + np.float32(0.5)) / s - np.float32(0.5)
    return o / s


def nearest_agrees(n_in: int, n_out: int, coordinates: str = "asymmetric",
                   nearest_mode: str = "floor", scale: float | None = None) -> bool:
    """Whether ONNX's nearest resize picks the same pixels as netlang's (the two compute
    the position in float32 in different orders, which can cross a rounding boundary)."""
    ours = _nearest(_positions(n_in, n_out, coordinates), nearest_mode)
    theirs = _nearest(onnx_positions(n_in, n_out, coordinates, scale), nearest_mode)
    return bool(np.array_equal(np.clip(ours, 0, n_in - 1), np.clip(theirs, 0, n_in - 1)))


def resize_kernel(xp, x, size, method="bilinear", coordinates=None, nearest_mode=None):
    oh, ow = pair("resize", "size", size)
    m = resize_method("resize", method)
    modes = resize_modes("resize", m, coordinates, nearest_mode)
    return apply_separable(xp, x, interpolation_matrix(x.shape[1], oh, m, *modes),
                           interpolation_matrix(x.shape[2], ow, m, *modes))


def resize_grad_kernel(xp, g, like, size, method="bilinear", coordinates=None,
                       nearest_mode=None):
    m = resize_method("resize_grad", method)
    modes = resize_modes("resize_grad", m, coordinates, nearest_mode)
    ah = interpolation_matrix(like.shape[1], g.shape[1], m, *modes)
    aw = interpolation_matrix(like.shape[2], g.shape[2], m, *modes)
    return apply_separable(xp, g, ah.T, aw.T)


def resize_type(op: str, x: TensorType, size, method, coordinates=None, nearest_mode=None
                ) -> TensorType:
    check_image(op, x)
    resize_modes(op, resize_method(op, method), coordinates, nearest_mode)
    oh, ow = pair(op, "size", size)
    if not all(isinstance(d, int) for d in x.shape[1:3]):
        raise ShapeError(f"{op} needs known image height and width, got {x}")
    return x.with_shape((x.shape[0], oh, ow, x.shape[3]))


def _resize_grad_shape(g: TensorType, like: TensorType, size, method, coordinates=None,
                       nearest_mode=None) -> TensorType:
    out = resize_type("resize_grad", like, size, method, coordinates, nearest_mode)
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


RESIZE_ATTRS = {"size": REQUIRED, "method": "bilinear", "coordinates": None,
                "nearest_mode": None}

defop("resize", arity=1, shape=lambda x, **a: resize_type("resize", x, **a),
      kernel=in_input_dtype(resize_kernel),
      vjp=lambda b, n, g: (b.resize_grad(g, n.inputs[0], **n.attrs),),
      attrs=dict(RESIZE_ATTRS), flops=_resize_flops,
      doc="Resize NHWC images to size=(h, w): nearest, bilinear or bicubic, TF 1.x rules; "
          "coordinates=half_pixel or align_corners and nearest's rounding as ONNX names them.")

defop("resize_grad", arity=2, shape=_resize_grad_shape, kernel=in_input_dtype(resize_grad_kernel),
      vjp=lambda b, n, ct: (b.resize(ct, **n.attrs), None),
      attrs=dict(RESIZE_ATTRS), flops=_resize_grad_flops,
      doc="resize's VJP: (g, like_x) -> the transposed interpolation applied to g.")
