"""Indexing and repetition: gather (embeddings, ONNX's Gather), top_k, tile, expand.

``gather(x, indices; axis)`` takes the slices of ``x`` at integer ``indices`` along ``axis``
(``numpy.take``; negative indices count from the end): the result is ``x.shape[:axis] +
indices.shape + x.shape[axis+1:]``.  Its VJP scatters the gradient back with additions
(``gather_grad``, a repeated index gets the sum), whose own VJP is gather again.

``top_k(x; k, axis)`` is the k largest entries along ``axis`` in descending order (the first
index on ties, as ONNX's TopK and ``torch.topk`` on CPU), ``top_k_indices`` their i64
positions: two ops, as netlang ops have one output each.  The values' gradient flows to the
picked entries (a ``gather_grad`` along the axis); indices have none.

``tile(x; reps)`` repeats x ``reps[i]`` times along axis i (``numpy.tile``); its VJP sums the
copies (``tile_grad``).  ``expand(x; shape)`` broadcasts x to ``shape`` (ONNX's Expand,
``numpy.broadcast_to`` with NumPy's rules both ways); its VJP is ``sum_to_like``.
"""
from __future__ import annotations

from netlang.errors import ShapeError
from netlang.ir.types import DType, TensorType, broadcast_shapes, dim_mul
from netlang.ops.registry import REQUIRED, defop
from netlang.ops.rules import axis_of, no_flops


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# -- gather ---------------------------------------------------------------------------------

def _gather_rule(x: TensorType, indices: TensorType, axis) -> TensorType:
    if x.rank == 0:
        raise ShapeError(f"gather needs an axis to take along, got the scalar {x}")
    if not indices.dtype.is_int:
        raise ShapeError(f"gather: indices must be integers, got {indices}",
                         hint="cast(indices, dtype=i64)")
    a = axis_of("gather", axis, x)
    return TensorType(x.dtype, x.shape[:a] + indices.shape + x.shape[a + 1:])


def _gather_kernel(xp, x, indices, axis=0):
    return xp.take(x, indices, axis=axis)


def _gather_grad_rule(g: TensorType, indices: TensorType, like: TensorType, axis
                      ) -> TensorType:
    expected = _gather_rule(like, indices, axis)
    if g.shape != expected.shape:
        raise ShapeError(f"gather_grad: the gradient is {g} but gather's output is {expected}")
    return like.with_dtype(g.dtype)


def _gather_grad_kernel(xp, g, indices, like, axis=0):
    """zeros like ``like``, plus each slice of g added at its index (repeats sum)."""
    a = axis % like.ndim
    out = xp.zeros(like.shape, dtype=g.dtype)
    idx = indices % like.shape[a]
    moved = xp.moveaxis(g, list(range(a, a + idx.ndim)), list(range(idx.ndim)))
    xp.add.at(xp.moveaxis(out, a, 0), idx, moved)
    return out


defop("gather", arity=2, shape=_gather_rule, attrs={"axis": 0}, flops=no_flops,
      kernel=_gather_kernel,
      vjp=lambda b, n, g: (b.gather_grad(g, n.inputs[1], n.inputs[0], axis=n.attrs["axis"]),
                           None),
      doc="The slices of x at integer indices along axis (numpy.take; an embedding lookup "
          "is gather(W, ids)).")

defop("gather_grad", arity=3, shape=_gather_grad_rule, attrs={"axis": 0}, flops=no_flops,
      kernel=_gather_grad_kernel,
      vjp=lambda b, n, ct: (b.gather(ct, n.inputs[1], axis=n.attrs["axis"]), None, None),
      doc="gather's VJP: (g, indices, like_x) -> zeros like x with g added at the indices.")

# -- top_k ----------------------------------------------------------------------------------


def _top_k_rule(dtype_of):
    def rule(x: TensorType, k, axis) -> TensorType:
        if x.rank == 0:
            raise ShapeError(f"top_k needs an axis, got the scalar {x}")
        if x.dtype is DType.bool:
            raise ShapeError(f"top_k ranks numbers, got {x}", hint="cast(x, dtype=i32)")
        a = axis_of("top_k", axis, x)
        if not _is_int(k) or k < 1:
            raise ShapeError(f"top_k: k must be a positive int, got {k!r}")
        if _is_int(x.shape[a]) and k > x.shape[a]:
            raise ShapeError(f"top_k: k={k} is more than the {x.shape[a]} entries along axis "
                             f"{a} of {x}")
        return TensorType(dtype_of(x), x.shape[:a] + (k,) + x.shape[a + 1:])
    return rule


def top_k_positions(xp, x, k, axis):
    """Positions of the k largest along ``axis``, largest first, the first index on ties
    (a stable sort of the negated values)."""
    order = xp.argsort(-x, axis=axis, kind="stable")
    return xp.take(order, xp.arange(k), axis=axis)


def _top_k_vjp(b, n, g):
    x = n.inputs[0]
    k, axis = n.attrs["k"], n.attrs["axis"]
    picks = b.top_k_indices(x, k=k, axis=axis)
    return (b.op("top_k_grad", g, picks, x, axis=axis),)


defop("top_k", arity=1, shape=_top_k_rule(lambda x: x.dtype), attrs={"k": REQUIRED, "axis": -1},
      flops=no_flops,
      kernel=lambda xp, x, k, axis=-1: xp.take_along_axis(
          x, top_k_positions(xp, x, k, axis), axis=axis),
      vjp=_top_k_vjp,
      doc="The k largest entries along axis, largest first (ONNX's TopK values).")

defop("top_k_indices", arity=1, shape=_top_k_rule(lambda x: DType.i64),
      attrs={"k": REQUIRED, "axis": -1}, flops=no_flops,
      kernel=lambda xp, x, k, axis=-1: top_k_positions(xp, x, k, axis).astype("int64"),
      nondiff="top_k_indices returns integer positions",
      doc="The i64 positions of top_k's entries (the first index on ties).")


def _top_k_grad_rule(g: TensorType, picks: TensorType, like: TensorType, axis) -> TensorType:
    if not picks.dtype.is_int or picks.rank != like.rank:
        raise ShapeError(f"top_k_grad: positions must be integers of x's rank, got {picks}")
    if g.shape != picks.shape:
        raise ShapeError(f"top_k_grad: the gradient {g} and the positions {picks} differ")
    return like.with_dtype(g.dtype)


def _top_k_grad_kernel(xp, g, picks, like, axis=-1):
    out = xp.zeros(like.shape, dtype=g.dtype)
    xp.put_along_axis(out, picks, g, axis=axis)     # the k positions are distinct
    return out


defop("top_k_grad", arity=3, shape=_top_k_grad_rule, attrs={"axis": -1}, flops=no_flops,
      kernel=_top_k_grad_kernel,
      vjp=lambda b, n, ct: (b.op("take_along", ct, n.inputs[1], axis=n.attrs["axis"]),
                            None, None),
      doc="top_k's VJP: (g, positions, like_x) -> zeros like x with g at the positions.")


def _take_along_rule(x: TensorType, picks: TensorType, axis) -> TensorType:
    axis_of("take_along", axis, x)
    if picks.rank != x.rank or not picks.dtype.is_int:
        raise ShapeError(f"take_along: positions must be integers of x's rank, got {picks}")
    return TensorType(x.dtype, picks.shape)


defop("take_along", arity=2, shape=_take_along_rule, attrs={"axis": -1}, flops=no_flops,
      kernel=lambda xp, x, picks, axis=-1: xp.take_along_axis(x, picks, axis=axis),
      vjp=lambda b, n, g: (b.op("top_k_grad", g, n.inputs[1], n.inputs[0],
                                axis=n.attrs["axis"]), None),
      doc="x read at positions along axis (numpy.take_along_axis): top_k_grad's adjoint.")

# -- tile and expand --------------------------------------------------------------------------


def _tile_rule(x: TensorType, reps) -> TensorType:
    if (not isinstance(reps, (tuple, list)) or len(reps) != x.rank
            or not all(_is_int(r) and r >= 1 for r in reps)):
        raise ShapeError(f"tile: reps must be {x.rank} positive ints (one per axis of {x}), "
                         f"got {reps!r}")
    return TensorType(x.dtype, tuple(dim_mul(d, r) for d, r in zip(x.shape, reps)))


def _tile_grad_kernel(xp, g, like, reps):
    """Sum of the copies: g viewed as [r0, d0, r1, d1, ...] summed over the r axes."""
    split = []
    for r, d in zip(reps, like.shape):
        split += [r, d]
    return xp.asarray(g.reshape(split).sum(axis=tuple(range(0, 2 * like.ndim, 2)),
                                           dtype=g.dtype))


defop("tile", arity=1, shape=_tile_rule, attrs={"reps": REQUIRED}, flops=no_flops,
      kernel=lambda xp, x, reps: xp.tile(x, tuple(reps)),
      vjp=lambda b, n, g: (b.op("tile_grad", g, n.inputs[0], reps=n.attrs["reps"]),),
      doc="x repeated reps[i] times along each axis i (numpy.tile, ONNX's Tile).")

defop("tile_grad", arity=2, shape=lambda g, like, reps: like.with_dtype(g.dtype),
      attrs={"reps": REQUIRED}, flops=no_flops, kernel=_tile_grad_kernel,
      vjp=lambda b, n, ct: (b.tile(ct, reps=n.attrs["reps"]), None),
      doc="tile's VJP: (g, like_x) -> the sum of g's copies, shaped like x.")


def _expand_rule(x: TensorType, shape) -> TensorType:
    if not isinstance(shape, (tuple, list)) or not all(_is_int(d) and d >= 1 for d in shape):
        raise ShapeError(f"expand: shape must be a tuple of positive ints, got {shape!r}")
    out = broadcast_shapes(x.shape, tuple(shape))
    if out is None:
        raise ShapeError(f"expand: {x} does not broadcast to {tuple(shape)}",
                         hint="each dim must be equal, or 1 in one of the two")
    return TensorType(x.dtype, out)


defop("expand", arity=1, shape=_expand_rule, attrs={"shape": REQUIRED}, flops=no_flops,
      kernel=lambda xp, x, shape: xp.array(xp.broadcast_to(     # a copy, as other ops
          x, tuple(int(d) for d in _expand_rule(TensorType(DType.of(x.dtype), x.shape),
                                                 shape).shape)), copy=True),
      vjp=lambda b, n, g: (b.sum_to_like(g, n.inputs[0]),),
      doc="x broadcast to shape, NumPy's rule both ways (ONNX's Expand).")
