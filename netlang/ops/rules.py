"""Shape/dtype rules shared by several op families, and kernel helpers they share."""
from __future__ import annotations

import functools
import math

import numpy as np

from netlang.errors import ShapeError
from netlang.ir.types import (
    DType,
    TensorType,
    broadcast_shapes,
    dim_mul,
    is_float_dtype,
    promote,
)


def same_type(x: TensorType, **_) -> TensorType:
    return x


def float_only(opname: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise ShapeError(f"{opname} needs a float tensor, got {t}",
                         hint=f"cast(x, dtype=f32) before {opname}")


def float_same_type(opname: str):
    def rule(x: TensorType, **_) -> TensorType:
        float_only(opname, x)
        return x
    return rule


def broadcast_types(opname: str, a: TensorType, b: TensorType) -> TensorType:
    shape = broadcast_shapes(a.shape, b.shape)
    if shape is None:
        raise ShapeError(
            f"{opname}: shapes {a} and {b} do not broadcast",
            hint="dims must be equal or 1, compared from the right (NumPy broadcasting)")
    return TensorType(promote(a.dtype, b.dtype), shape)


def binary_rule(opname: str):
    def rule(a: TensorType, b: TensorType, **_) -> TensorType:
        return broadcast_types(opname, a, b)
    return rule


def compare_rule(opname: str):
    def rule(a: TensorType, b: TensorType, **_) -> TensorType:
        return broadcast_types(opname, a, b).with_dtype(DType.bool)
    return rule


def normalize_axis(opname: str, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"{opname}: axis {axis} is out of range for a rank-{rank} tensor",
                         hint=f"use an axis in [{-rank}, {rank - 1}]")
    return axis % rank if rank else 0


def reduced_shape(shape: tuple, axes: tuple[int, ...], keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def leading_axes(axes, ndim: int) -> int | None:
    """``k`` when ``axes`` are exactly the first k axes (0, 1, ..., k-1), else None."""
    if axes is None:
        return ndim
    axes = (axes,) if isinstance(axes, int) else tuple(a % ndim for a in axes)
    return len(axes) if sorted(axes) == list(range(len(axes))) else None


def in_input_dtype(kernel):
    """``kernel`` with its result in its first input's dtype: the GEMMs inside convolutions
    and resizes give float32 for ml_dtypes' bfloat16 (NumPy has no bfloat16 BLAS)."""
    @functools.wraps(kernel)
    def run(xp, x, *rest, **attrs):
        out = kernel(xp, x, *rest, **attrs)
        return out if out.dtype == x.dtype else out.astype(x.dtype)
    return run


def sum_leading_axes(xp, x, count: int, out=None):
    """Sum a float array over its first ``count`` axes as one matrix-vector product.

    NumPy reduces leading axes row by row with its inner loop over the short trailing axes
    (a bias or batchnorm gradient over [N,H,W,C] with C=16 crawls); BLAS runs at memory speed.
    ``out``: a C-contiguous array of the result's size and x's dtype to write it into (the
    same product, the same bits).
    """
    rows = math.prod(x.shape[:count])
    if x.dtype.kind != "f" or x.dtype.itemsize < 4 or not x.flags.c_contiguous or rows < 2 \
            or count == 0:   # BLAS has no half GEMV
        result = x.sum(axis=tuple(range(count)))
        if out is None:
            return result
        out.reshape(result.shape)[...] = result
        return out
    flat = x.reshape(rows, -1)
    if out is None:
        return (_ones(xp, rows, x.dtype) @ flat).reshape(x.shape[count:])
    xp.matmul(_ones(xp, rows, x.dtype), flat, out=out.reshape(-1))
    return out


def extreme(xp, x, pick: str, axis, keepdims: bool = False):
    """``x.max`` / ``x.min`` over ``axis``, where an empty axis (an input with a dim of 0)
    gives the identity, -inf / +inf (the dtype's least / greatest integer), as ONNX's
    ReduceMax / ReduceMin of an empty set do, instead of NumPy's error."""
    if x.size == 0:
        if x.dtype.kind == "b":
            initial = pick == "min"
        elif is_float_dtype(x.dtype):
            initial = -np.inf if pick == "max" else np.inf
        else:
            initial = np.iinfo(x.dtype).min if pick == "max" else np.iinfo(x.dtype).max
        return getattr(x, pick)(axis=axis, keepdims=keepdims, initial=initial)
    return getattr(x, pick)(axis=axis, keepdims=keepdims)


@functools.lru_cache(maxsize=32)
def _ones(xp, rows: int, dtype):
    """A vector of ones, made once per size (a training step sums the same shapes every
    step; a new one each time was its largest allocation after the buffer plan)."""
    return xp.ones(rows, dtype=dtype)


def sum_to_shape(xp, g, shape: tuple):
    """Sum a broadcast result back down to ``shape`` (the VJP of broadcasting)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    if not axes:
        return g.reshape(shape)
    count = leading_axes(axes, g.ndim)
    if count is not None:
        return sum_leading_axes(xp, g, count).reshape(shape)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


# -- axes named against a type, and FLOPs counts (reduce, shape, activation, loss families) --

def axis_of(opname: str, axis, t: TensorType) -> int:
    """One axis of ``t`` as a non-negative int; errors name the type (``f32[N,10]``)."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ShapeError(f"{opname}: axis must be an int, got {axis!r}")
    if not -t.rank <= axis < t.rank:
        hint = ("a scalar has no axes" if t.rank == 0
                else f"use an axis in [{-t.rank}, {t.rank - 1}]")
        raise ShapeError(f"{opname}: axis {axis} is out of range for {t}", hint=hint)
    return axis % t.rank


def axes_of(opname: str, axis, t: TensorType) -> tuple[int, ...]:
    """``None`` -> every axis of ``t``; an int or a tuple -> sorted non-negative axes."""
    if axis is None:
        return tuple(range(t.rank))
    if isinstance(axis, int) and not isinstance(axis, bool):
        return (axis_of(opname, axis, t),)
    if not isinstance(axis, (tuple, list)):
        raise ShapeError(f"{opname}: axis must be an int, a tuple of ints or None, "
                         f"got {axis!r}")
    out = tuple(axis_of(opname, a, t) for a in axis)
    if len(set(out)) != len(out):
        raise ShapeError(f"{opname}: axis {tuple(axis)} names an axis of {t} twice")
    return tuple(sorted(out))


def kept_shape(shape: tuple, axes) -> tuple:
    """``shape`` with the reduced ``axes`` set to 1 (what ``keepdims=True`` gives)."""
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def flops_per_output(per: int = 1):
    """A FLOPs rule: ``per`` operations for every output element."""
    def flops(out: TensorType, *_, **__):
        return dim_mul(out.numel(), per)
    return flops


def flops_per_input(per: int = 1):
    """A FLOPs rule: ``per`` operations for every element of the first input."""
    def flops(out: TensorType, x: TensorType, *_, **__):
        return dim_mul(x.numel(), per)
    return flops


def no_flops(*_, **__) -> int:
    """Data movement only (reshape, transpose, concat, pad ...)."""
    return 0
