"""Shape/dtype rules shared by several op families, and kernel helpers they share."""
from __future__ import annotations

from netlang.errors import ShapeError
from netlang.ir.types import DType, TensorType, broadcast_shapes, promote


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


def normalize_axes(opname: str, axis, rank: int) -> tuple[int, ...]:
    """``None`` -> all axes; an int or a tuple -> sorted non-negative axes."""
    if axis is None:
        return tuple(range(rank))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = sorted({normalize_axis(opname, a, rank) for a in axes})
    if len(out) != len(axes):
        raise ShapeError(f"{opname}: repeated axis in {axis}")
    return tuple(out)


def reduced_shape(shape: tuple, axes: tuple[int, ...], keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def sum_to_shape(xp, g, shape: tuple):
    """Sum a broadcast result back down to ``shape`` (the VJP of broadcasting)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    out = g.sum(axis=axes, keepdims=True) if axes else g
    return out.reshape(shape)
