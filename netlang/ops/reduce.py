"""Reductions: sum, mean, max, min, prod over ``axis`` (None, an int or a tuple), argmax, argmin.

Shape rules work on symbolic dims (reducing ``f32[N,10]`` over axis 0 gives ``f32[10]``);
kernels take their counts from the arrays, so ``mean`` over the batch divides by the batch
size of the run, not by a number fixed at compile time.  The VJPs put the reduced axes back
with small helper ops (``expand_like``, ``mean_grad``, ``max_grad``, ``prod_grad``) that are
ordinary ops with their own rules, kernels and VJPs, so second derivatives work too.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from netlang.errors import ShapeError
from netlang.ir.types import DType, TensorType, is_float_dtype
from netlang.ops.elementwise import cotangent_rule
from netlang.ops.registry import REQUIRED, defop
from netlang.ops.rules import (
    axes_of,
    axis_of,
    extreme,
    flops_per_input,
    flops_per_output,
    kept_shape,
    leading_axes,
    no_flops,
    reduced_shape,
    sum_leading_axes,
)

REDUCE_ATTRS = {"axis": None, "keepdims": False}


def _check_keepdims(opname: str, keepdims) -> None:
    if not isinstance(keepdims, bool):
        raise ShapeError(f"{opname}: keepdims must be true or false, got {keepdims!r}")


def _reduced_type(opname: str, x: TensorType, axis, keepdims) -> TensorType:
    _check_keepdims(opname, keepdims)
    return x.with_shape(reduced_shape(x.shape, axes_of(opname, axis, x), keepdims))


def runtime_axes(axis, ndim: int) -> tuple[int, ...]:
    """``axis`` as a tuple of non-negative ints for an array of ``ndim`` axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        return (axis % ndim,)
    return tuple(a % ndim for a in axis)


def _np_axis(axis):
    """NumPy and CuPy take an int, a tuple or None (not a list, which the frontend may give)."""
    return tuple(axis) if isinstance(axis, list) else axis


def _normalized(b, n) -> tuple[int, ...]:
    """The reduced axes of node ``n`` as non-negative ints (what the helper ops take)."""
    return axes_of(n.op, n.attrs["axis"], b.type_of(n.inputs[0]))


# -- sum and prod --------------------------------------------------------------------------

def _count_dtype(x: TensorType) -> DType:
    return DType.i64 if x.dtype is DType.bool else x.dtype


def _sum_like_rule(opname: str):
    def rule(x: TensorType, axis, keepdims) -> TensorType:
        return _reduced_type(opname, x, axis, keepdims).with_dtype(_count_dtype(x))
    return rule


def _accumulator(x):
    """Keep the input's dtype: NumPy would widen int32 to int64 (bools count in int64)."""
    return None if is_float_dtype(x.dtype) else ("int64" if x.dtype.kind == "b" else x.dtype)


def _sum_kernel(xp, x, axis, keepdims):
    count = leading_axes(_np_axis(axis), x.ndim) if x.ndim else None
    if count is not None and is_float_dtype(x.dtype):
        out = sum_leading_axes(xp, x, count)
        return out.reshape(kept_shape(x.shape, range(count))) if keepdims else xp.asarray(out)
    return xp.asarray(x.sum(axis=_np_axis(axis), keepdims=keepdims, dtype=_accumulator(x)))


def _sum_vjp(b, n, g):
    return (b.expand_like(g, n.inputs[0], axis=_normalized(b, n), keepdims=n.attrs["keepdims"]),)


defop("sum", arity=1, shape=_sum_like_rule("sum"), attrs=dict(REDUCE_ATTRS),
      flops=flops_per_input(1), kernel=_sum_kernel, vjp=_sum_vjp,
      doc="Sum over axis (None: all axes); keepdims keeps reduced axes as size 1.")


def _prod_kernel(xp, x, axis, keepdims):
    return xp.asarray(x.prod(axis=_np_axis(axis), keepdims=keepdims, dtype=_accumulator(x)))


def _prod_vjp(b, n, g):
    return (b.prod_grad(g, n.inputs[0], axis=_normalized(b, n),
                        keepdims=n.attrs["keepdims"]),)


defop("prod", arity=1, shape=_sum_like_rule("prod"), attrs=dict(REDUCE_ATTRS),
      flops=flops_per_input(1), kernel=_prod_kernel, vjp=_prod_vjp,
      doc="Product over axis; its gradient is exact where inputs are zero.")

# -- mean ----------------------------------------------------------------------------------


def _mean_rule(x: TensorType, axis, keepdims) -> TensorType:
    out = _reduced_type("mean", x, axis, keepdims)
    return out if x.dtype.is_float else out.with_dtype(DType.f32)


def _mean_kernel(xp, x, axis, keepdims):
    count = leading_axes(_np_axis(axis), x.ndim) if x.ndim else None
    rows = math.prod(x.shape[:count]) if count is not None else None
    if count is not None and is_float_dtype(x.dtype):
        out = (sum_leading_axes(xp, x, count) / x.dtype.type(rows) if rows
               else xp.full(x.shape[count:], np.nan, x.dtype))   # the mean of nothing: NaN
        return out.reshape(kept_shape(x.shape, range(count))) if keepdims else xp.asarray(out)
    dtype = None if is_float_dtype(x.dtype) else "float32"  # accuracy = mean(equal(...)) is f32
    if x.size:
        return xp.asarray(x.mean(axis=_np_axis(axis), keepdims=keepdims, dtype=dtype))
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)     # NumPy's "Mean of empty slice"
        return xp.asarray(x.mean(axis=_np_axis(axis), keepdims=keepdims, dtype=dtype))


def _mean_vjp(b, n, g):
    return (b.mean_grad(g, n.inputs[0], axis=_normalized(b, n), keepdims=n.attrs["keepdims"]),)


defop("mean", arity=1, shape=_mean_rule, attrs=dict(REDUCE_ATTRS),
      flops=flops_per_input(1), kernel=_mean_kernel, vjp=_mean_vjp,
      doc="Mean over axis, dividing by the run's element count; ints and bools give f32.")

# -- max and min ---------------------------------------------------------------------------


def _extreme_rule(opname: str):
    def rule(x: TensorType, axis, keepdims) -> TensorType:
        return _reduced_type(opname, x, axis, keepdims)
    return rule


def _extreme_vjp(b, n, g):
    return (b.max_grad(g, n.inputs[0], n.id, axis=_normalized(b, n),
                       keepdims=n.attrs["keepdims"]),)


defop("max", arity=1, shape=_extreme_rule("max"), attrs=dict(REDUCE_ATTRS),
      flops=flops_per_input(1), vjp=_extreme_vjp,
      kernel=lambda xp, x, axis, keepdims: xp.asarray(
          extreme(xp, x, "max", _np_axis(axis), keepdims)),
      doc="Maximum over axis (-inf over an empty axis); the gradient goes to the maximal "
          "entries.")

defop("min", arity=1, shape=_extreme_rule("min"), attrs=dict(REDUCE_ATTRS),
      flops=flops_per_input(1), vjp=_extreme_vjp,
      kernel=lambda xp, x, axis, keepdims: xp.asarray(
          extreme(xp, x, "min", _np_axis(axis), keepdims)),
      doc="Minimum over axis (+inf over an empty axis); the gradient goes to the minimal "
          "entries.")

# -- argmax --------------------------------------------------------------------------------


def _all_finite_rule(*xs: TensorType) -> TensorType:
    if not xs:
        raise ShapeError("all_finite needs at least one input")
    for x in xs:
        if not x.dtype.is_float:
            raise ShapeError(f"all_finite takes float tensors, got {x}")
    return TensorType(DType.bool, ())


def _all_finite_kernel(xp, *xs):
    return xp.asarray(all(bool(xp.isfinite(x).all()) for x in xs))


defop("all_finite", arity=None, shape=_all_finite_rule, flops=flops_per_input(1),
      kernel=_all_finite_kernel, nondiff="all_finite returns a boolean",
      doc="True when no element of any input is an infinity or a NaN (dynamic loss scaling "
          "skips a step whose gradients overflowed).")


def _arg_rule(opname: str):
    def rule(x: TensorType, axis, select_last_index) -> TensorType:
        if x.rank == 0:
            raise ShapeError(f"{opname} needs at least one axis, got the scalar {x}")
        if select_last_index is not None and not isinstance(select_last_index, bool):
            raise ShapeError(f"{opname}: select_last_index must be true or false, got "
                             f"{select_last_index!r}")
        keep = axis_of(opname, axis, x)
        if x.shape[keep] == 0:
            raise ShapeError(f"{opname}: axis {axis} of {x} is empty, so it has no index to "
                             "return", hint="take it along an axis with entries")
        return TensorType(DType.i64, tuple(d for i, d in enumerate(x.shape) if i != keep))
    return rule


def _arg_kernel(pick: str):
    """argmax/argmin along ``axis``: the first index on ties, or with ``select_last_index``
    the last one (ONNX's attribute): that is the first index of the reversed axis."""
    def kernel(xp, x, axis, select_last_index=None):
        find = getattr(xp, pick)
        if not select_last_index:
            return xp.asarray(find(x, axis=axis)).astype("int64", copy=False)
        last = x.shape[axis] - 1
        return xp.asarray(last - find(xp.flip(x, axis=axis), axis=axis)).astype("int64",
                                                                                  copy=False)
    return kernel


for _name, _word in (("argmax", "largest"), ("argmin", "smallest")):
    defop(_name, arity=1, shape=_arg_rule(_name),
          attrs={"axis": -1, "select_last_index": None}, flops=flops_per_input(1),
          kernel=_arg_kernel(_name), nondiff=f"{_name} returns integer indices",
          doc=f"Index of the {_word} entry along axis, as i64: the first one on ties, the "
              "last with select_last_index=true.")

# -- helper ops: the reductions' VJPs ------------------------------------------------------


def _expand_rule(opname: str, g: TensorType, like: TensorType, axis, keepdims) -> TensorType:
    """Check that ``g`` is ``like`` reduced over ``axis``; the result has like's shape."""
    _check_keepdims(opname, keepdims)
    expected = reduced_shape(like.shape, axes_of(opname, axis, like), keepdims)
    if g.shape != expected:
        shown = TensorType(g.dtype, expected)
        raise ShapeError(f"{opname}: {g} is not {like} reduced over axis {axis} "
                         f"(expected {shown})")
    return like.with_dtype(g.dtype)


def _grad_rule(opname: str, g: TensorType, like: TensorType, axis, keepdims,
               *same_dtype: TensorType) -> TensorType:
    """A reduction's VJP helper: a float cotangent (and operands of its dtype) expanded."""
    cotangent_rule(opname, g, *same_dtype)
    return _expand_rule(opname, g, like, axis, keepdims)


def _expanded(g, shape: tuple, axes: tuple):
    """``g`` reshaped so it broadcasts against ``shape`` (reduced axes as size 1)."""
    return g.reshape(kept_shape(shape, axes))


def _expand_like_kernel(xp, g, like, axis, keepdims):
    axes = runtime_axes(axis, like.ndim)
    return xp.broadcast_to(_expanded(g, like.shape, axes), like.shape)


defop("expand_like", arity=2, attrs={"axis": REQUIRED, "keepdims": False}, shape_only=(1,),
      shape=lambda g, like, axis, keepdims: _expand_rule("expand_like", g, like, axis,
                                                         keepdims),
      flops=no_flops, kernel=_expand_like_kernel,
      vjp=lambda b, n, h: (b.sum(h, axis=n.attrs["axis"], keepdims=n.attrs["keepdims"]), None),
      doc="Broadcast g (like reduced over axis) back to like's shape: sum's VJP.")


def _mean_grad_kernel(xp, g, like, axis, keepdims):
    axes = runtime_axes(axis, like.ndim)
    count = math.prod(like.shape[a] for a in axes)   # the run's count (N is known by now)
    if count == 0:                                   # nothing was averaged: no gradient
        return xp.zeros(like.shape, g.dtype)
    return xp.broadcast_to(_expanded(g, like.shape, axes) / count, like.shape)


def _count_rule(x: TensorType, axis, inverse) -> TensorType:
    axes_of("count", axis, x)
    if not isinstance(inverse, bool):
        raise ShapeError(f"count: inverse must be true or false, got {inverse!r}")
    if not x.dtype.is_float:
        raise ShapeError(f"count: the count takes x's dtype, which must be a float, got {x}")
    return TensorType(x.dtype, ())


def _count_kernel(xp, x, axis, inverse):
    count = math.prod(x.shape[a] for a in runtime_axes(axis, x.ndim))
    # the steps mean_grad (count) and batch_variance_grad (dtype(1 / count)) take
    return xp.asarray(1.0 / max(count, 1) if inverse else count, dtype=x.dtype)


defop("count", arity=1, shape=_count_rule, attrs={"axis": None, "inverse": False},
      flops=no_flops, kernel=_count_kernel, vjp=lambda b, n, g: (None,),
      doc="How many elements of x a reduction over axis takes, as a scalar of x's dtype "
          "(1 / that with inverse=true): the run's count, so N is the run's batch.  The "
          "batchnorm pass divides per-channel vectors by it instead of broadcasting them.")


defop("mean_grad", arity=2, attrs={"axis": REQUIRED, "keepdims": False}, shape_only=(1,),
      shape=lambda g, like, axis, keepdims: _grad_rule("mean_grad", g, like, axis, keepdims),
      flops=flops_per_input(1), kernel=_mean_grad_kernel,
      vjp=lambda b, n, h: (b.mean(h, axis=n.attrs["axis"], keepdims=n.attrs["keepdims"]),
                           None),
      doc="g / count broadcast back to like's shape: mean's VJP.")


def _max_grad_rule(g: TensorType, x: TensorType, y: TensorType, axis, keepdims):
    if y.shape != g.shape:
        raise ShapeError(f"max_grad: the reduced value {y} and its cotangent {g} differ")
    return _grad_rule("max_grad", g, x, axis, keepdims)


def _max_grad_kernel(xp, g, x, y, axis, keepdims):
    axes = runtime_axes(axis, x.ndim)
    if x.size == 0:                       # an empty input has no entry to take a gradient
        return xp.zeros(x.shape, g.dtype)
    hit = x == _expanded(y, x.shape, axes)
    # Ties share the gradient evenly, as TensorFlow's reduce_max gradient does.
    count = hit.sum(axis=axes, keepdims=True, dtype=g.dtype)
    return hit * (_expanded(g, x.shape, axes) / count)


def _max_grad_vjp(b, n, h):
    g, x, y = n.inputs
    weights = b.max_grad(b.fill_like(g, value=1.0), x, y, **n.attrs)
    return (b.sum(b.mul(h, weights), axis=n.attrs["axis"], keepdims=n.attrs["keepdims"]),
            None, None)


defop("max_grad", arity=3, attrs={"axis": REQUIRED, "keepdims": False},
      shape=_max_grad_rule, flops=flops_per_output(3), kernel=_max_grad_kernel,
      vjp=_max_grad_vjp,
      doc="max_grad(g, x, y): g routed to where x equals its reduction y (max and min VJP).")


def _prod_grad_kernel(xp, g, x, axis, keepdims):
    axes = runtime_axes(axis, x.ndim)
    return _product_of_others(xp, x, axes) * _expanded(g, x.shape, axes)


def _product_of_others(xp, x, axes: tuple):
    """For each entry, the product of the other entries of its group: exclusive cumprods
    from both ends, so zeros in x need no division (TensorFlow's _ProdGrad does the same)."""
    if not axes:
        return xp.ones_like(x)
    tail = tuple(range(x.ndim - len(axes), x.ndim))
    moved = xp.moveaxis(x, axes, tail)
    flat = moved.reshape(moved.shape[:x.ndim - len(axes)] + (-1,))
    one = xp.ones(flat.shape[:-1] + (1,), dtype=x.dtype)
    left = xp.cumprod(xp.concatenate([one, flat[..., :-1]], axis=-1), axis=-1)
    right = xp.cumprod(xp.concatenate([one, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    left *= right
    return xp.moveaxis(left.reshape(moved.shape), tail, axes)


def _prod_grad_vjp(b, n, h):
    """out_i = g * others_i.  d/dg: sum(h * others).  d/dx_j: (sum_i h_i out_i - h_j out_j)
    / x_j, since d others_i/dx_j = others_i / x_j for i != j (exact wherever x_j != 0)."""
    g, x = n.inputs
    axis, keepdims = n.attrs["axis"], n.attrs["keepdims"]
    others = b.prod_grad(b.fill_like(g, value=1.0), x, axis=axis, keepdims=keepdims)
    dg = b.sum(b.mul(h, others), axis=axis, keepdims=keepdims)
    t = b.mul(h, n.id)
    total = b.expand_like(b.sum(t, axis=axis, keepdims=keepdims), x, axis=axis,
                          keepdims=keepdims)
    return dg, b.div(b.sub(total, t), x)


defop("prod_grad", arity=2, attrs={"axis": REQUIRED, "keepdims": False},
      shape=lambda g, x, axis, keepdims: _grad_rule("prod_grad", g, x, axis, keepdims, x),
      flops=flops_per_output(4), kernel=_prod_grad_kernel, vjp=_prod_grad_vjp,
      doc="prod_grad(g, x): g times the product of the other entries (prod's VJP).")
