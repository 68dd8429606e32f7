"""Shape ops: reshape, transpose, concat, pad, flip, one_hot (and their VJP helpers).

Rules work on symbolic dims: ``reshape(f32[N,784], shape=(-1, 28, 28, 1))`` is
``f32[N,28,28,1]`` because ``784*N / 784 = N`` exactly, and concatenating two ``N``-row
tensors gives ``2*N`` rows.  Kernels return views where NumPy can (reshape of a contiguous
array, transpose, flip, the slices of concat's and pad's VJPs); nothing writes its inputs.
"""
from __future__ import annotations

from netlang.errors import ArgumentError, ShapeError
from netlang.ir.types import DType, TensorType, dim_add, dim_div, dim_mul, dim_prod
from netlang.ops.registry import REQUIRED, defop
from netlang.ops.rules import axes_of, axis_of, no_flops


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


# -- reshape -------------------------------------------------------------------------------

def _check_target(shape) -> tuple:
    if not isinstance(shape, (tuple, list)) or not all(_is_int(d) for d in shape):
        raise ShapeError(f"reshape: shape must be a tuple of ints, got {shape!r}",
                         hint="e.g. shape=(-1, 28, 28, 1); -1 stands for the batch")
    target = tuple(shape)
    if target.count(-1) > 1:
        raise ShapeError(f"reshape: only one dim may be -1, got {_shape_text(target)}")
    if any(d < -1 for d in target):
        raise ShapeError(f"reshape: dims must be positive or -1, got {_shape_text(target)}")
    return target


def _reshape_rule(x: TensorType, shape) -> TensorType:
    target = _check_target(shape)
    total = x.numel()
    known = dim_prod(d for d in target if d != -1)
    if -1 not in target:
        if total != known:
            hint = ("keep the batch dim with -1, e.g. shape=" + _shape_text((-1,) + target[1:])
                    if not x.is_static else "the number of elements must stay the same")
            raise ShapeError(f"reshape: cannot reshape {x} ({total} elements) into "
                             f"{_shape_text(target)} ({known} elements)", hint=hint)
        return x.with_shape(target)
    if known == 0:
        if target[0] != -1 or x.rank == 0:
            raise ShapeError(f"reshape: {_shape_text(target)} has a dim of 0, so its -1 could "
                             "be any size", hint="give -1 as the first (batch) dim, or no -1")
        missing = x.shape[0]                  # the batch dim, as flatten's (-1, 0) means
        return x.with_shape((missing, *target[1:]))
    missing = dim_div(total, known)
    if missing is None:
        raise ShapeError(f"reshape: cannot reshape {x} ({total} elements) into "
                         f"{_shape_text(target)}: {total} is not a multiple of {known}",
                         hint="the known dims must divide the element count exactly")
    return x.with_shape(tuple(missing if d == -1 else d for d in target))


def _reshape_kernel(xp, x, shape):
    shape = tuple(shape)
    if shape and shape[0] == -1 and 0 in shape[1:]:   # -1 is the batch dim (see the rule)
        shape = (x.shape[0], *shape[1:])
    return x.reshape(shape)


defop("reshape", arity=1, shape=_reshape_rule, attrs={"shape": REQUIRED}, flops=no_flops,
      kernel=_reshape_kernel,
      vjp=lambda b, n, g: (b.reshape_like(g, n.inputs[0]),),
      doc="Same elements, new shape; one dim may be -1 (flatten is reshape(x, (-1, k))).")


def _reshape_like_rule(x: TensorType, like: TensorType) -> TensorType:
    if x.numel() != like.numel():
        raise ShapeError(f"reshape_like: {x} ({x.numel()} elements) cannot take the shape "
                         f"of {like} ({like.numel()} elements)")
    return like.with_dtype(x.dtype)


defop("reshape_like", arity=2, shape=_reshape_like_rule, flops=no_flops, shape_only=(1,),
      kernel=lambda xp, x, like: x.reshape(like.shape),
      vjp=lambda b, n, g: (b.reshape_like(g, n.inputs[0]), None),
      doc="x reshaped to like's shape (reshape's VJP; works with symbolic dims).")

# -- transpose -----------------------------------------------------------------------------


def _transpose_rule(x: TensorType, perm) -> TensorType:
    if perm is None:
        return x.with_shape(x.shape[::-1])
    if (not isinstance(perm, (tuple, list)) or not all(_is_int(p) for p in perm)
            or sorted(perm) != list(range(x.rank))):
        raise ShapeError(f"transpose: perm {perm!r} is not a permutation of the {x.rank} "
                         f"axes of {x}",
                         hint=f"list every axis once, e.g. perm={tuple(range(x.rank))[::-1]}")
    return x.with_shape(tuple(x.shape[p] for p in perm))


def _transpose_vjp(b, n, g):
    perm = n.attrs["perm"]
    inverse = None if perm is None else tuple(sorted(range(len(perm)), key=lambda i: perm[i]))
    return (b.transpose(g, perm=inverse),)


defop("transpose", arity=1, shape=_transpose_rule, attrs={"perm": None}, flops=no_flops,
      kernel=lambda xp, x, perm: xp.transpose(x, None if perm is None else tuple(perm)),
      vjp=_transpose_vjp,
      doc="Permute the axes (perm=None reverses them).  Returns a view.")

# -- concat --------------------------------------------------------------------------------


def _concat_dim(xs: tuple, axis: int):
    total = xs[0].shape[axis]
    for t in xs[1:]:
        summed = dim_add(total, t.shape[axis])
        if summed is None:
            raise ShapeError(f"concat: cannot add the dims {total} and {t.shape[axis]} along "
                             f"axis {axis} (inputs " + ", ".join(map(str, xs)) + ")",
                             hint="symbolic dims add only to like terms (N + N = 2*N)")
        total = summed
    return total


def _concat_rule(*xs: TensorType, axis) -> TensorType:
    if not xs:
        raise ShapeError("concat needs at least one input")
    first = xs[0]
    ax = axis_of("concat", axis, first)
    for t in xs[1:]:
        if t.rank != first.rank:
            raise ShapeError(f"concat: inputs have different ranks: {first} and {t}")
        if t.dtype != first.dtype:
            raise ShapeError(f"concat: inputs have different dtypes: {first} and {t}",
                             hint=f"cast(x, dtype={first.dtype}) first")
        for i, (a, c) in enumerate(zip(first.shape, t.shape)):
            if i != ax and a != c:
                raise ShapeError(f"concat: {first} and {t} differ in axis {i} ({a} != {c})",
                                 hint=f"only the concatenation axis ({ax}) may differ")
    return first.with_shape(first.shape[:ax] + (_concat_dim(xs, ax),) + first.shape[ax + 1:])


def _units(d) -> int:
    """A dim in units of its symbol: 3 -> 3, 2*N -> 2 (concat's dims are all like terms)."""
    return d if isinstance(d, int) else d.coef


def _concat_vjp(b, n, g):
    if len(n.inputs) == 1:
        return (g,)
    ax = axis_of("concat", n.attrs["axis"], n.type)
    sizes = [_units(b.type_of(x).shape[ax]) for x in n.inputs]
    out, start = [], 0
    for size in sizes:
        out.append(b.concat_part(g, axis=ax, start=start, stop=start + size, parts=sum(sizes)))
        start += size
    return tuple(out)


defop("concat", arity=None, shape=_concat_rule, attrs={"axis": REQUIRED}, flops=no_flops,
      kernel=lambda xp, *xs, axis: xp.concatenate(xs, axis=axis),
      vjp=_concat_vjp,
      doc="Join tensors along axis; the other dims must agree.")


def _concat_part_rule(g: TensorType, axis, start, stop, parts) -> TensorType:
    ax = axis_of("concat_part", axis, g)
    if not all(_is_int(v) for v in (start, stop, parts)) or not 0 <= start < stop <= parts:
        raise ShapeError(f"concat_part: need 0 <= start < stop <= parts, got start={start}, "
                         f"stop={stop}, parts={parts}")
    unit = dim_div(g.shape[ax], parts)
    if unit is None:
        raise ShapeError(f"concat_part: axis {ax} of {g} does not split into {parts} units")
    return g.with_shape(g.shape[:ax] + (dim_mul(unit, stop - start),) + g.shape[ax + 1:])


def _concat_part_kernel(xp, g, axis, start, stop, parts):
    axis %= g.ndim
    unit = g.shape[axis] // parts   # the run's size of the symbol (N), or 1 for fixed dims
    return g[(slice(None),) * axis + (slice(start * unit, stop * unit),)]


def _concat_part_vjp(b, n, h):
    """Zeros where the other parts were, h in the middle: concat is its transpose."""
    (g,) = n.inputs
    a = n.attrs
    pieces = []
    if a["start"] > 0:
        before = b.concat_part(g, axis=a["axis"], start=0, stop=a["start"], parts=a["parts"])
        pieces.append(b.fill_like(before, value=0.0))
    pieces.append(h)
    if a["stop"] < a["parts"]:
        after = b.concat_part(g, axis=a["axis"], start=a["stop"], stop=a["parts"],
                              parts=a["parts"])
        pieces.append(b.fill_like(after, value=0.0))
    return (b.concat(*pieces, axis=a["axis"]) if len(pieces) > 1 else h,)


defop("concat_part", arity=1, shape=_concat_part_rule, flops=no_flops,
      attrs={"axis": REQUIRED, "start": REQUIRED, "stop": REQUIRED, "parts": REQUIRED},
      kernel=_concat_part_kernel, vjp=_concat_part_vjp,
      doc="Units [start, stop) of axis cut into `parts` equal units: the slice of concat's "
          "cotangent that belongs to one input (symbolic sizes split at run time).")

# -- pad -----------------------------------------------------------------------------------


def _pairs(opname: str, x: TensorType, paddings) -> tuple:
    ok = (isinstance(paddings, (tuple, list)) and len(paddings) == x.rank
          and all(isinstance(p, (tuple, list)) and len(p) == 2
                  and all(_is_int(v) and v >= 0 for v in p) for p in paddings))
    if not ok:
        example = tuple((1, 1) if i in (1, 2) else (0, 0) for i in range(x.rank))
        raise ShapeError(f"{opname}: paddings must give one (before, after) pair of "
                         f"non-negative ints per axis of {x}, got {paddings!r}",
                         hint=f"e.g. paddings={example}")
    return tuple((lo, hi) for lo, hi in paddings)


def _pad_rule(x: TensorType, paddings, value) -> TensorType:
    pairs = _pairs("pad", x, paddings)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ShapeError(f"pad: value must be a number, got {value!r}")
    out = []
    for i, (d, (lo, hi)) in enumerate(zip(x.shape, pairs)):
        if (lo, hi) != (0, 0) and not isinstance(d, int):
            raise ShapeError(f"pad: cannot pad the symbolic dim {d} (axis {i}) of {x}",
                             hint="pad only axes of known size; give (0, 0) for this one")
        out.append(d if (lo, hi) == (0, 0) else d + lo + hi)
    return x.with_shape(out)


def _inner(shape, paddings) -> tuple:
    """The slices of a padded array that hold the original values."""
    return tuple(slice(lo, d - hi) for d, (lo, hi) in zip(shape, paddings))


def _pad_kernel(xp, x, paddings, value):
    shape = tuple(d + lo + hi for d, (lo, hi) in zip(x.shape, paddings))
    out = xp.full(shape, value, dtype=x.dtype)
    out[_inner(shape, paddings)] = x
    return out


defop("pad", arity=1, shape=_pad_rule, attrs={"paddings": REQUIRED, "value": 0.0},
      flops=no_flops, kernel=_pad_kernel,
      vjp=lambda b, n, g: (b.unpad(g, paddings=n.attrs["paddings"]),),
      doc="Pad each axis with (before, after) entries of a constant value.")


def _unpad_rule(x: TensorType, paddings) -> TensorType:
    out = []
    for i, (d, (lo, hi)) in enumerate(zip(x.shape, _pairs("unpad", x, paddings))):
        if (lo, hi) == (0, 0):
            out.append(d)
        elif not isinstance(d, int) or d < lo + hi:
            raise ShapeError(f"unpad: cannot remove {lo} + {hi} entries from the dim {d} "
                             f"(axis {i}) of {x}")
        else:
            out.append(d - lo - hi)
    return x.with_shape(out)


defop("unpad", arity=1, shape=_unpad_rule, attrs={"paddings": REQUIRED}, flops=no_flops,
      kernel=lambda xp, x, paddings: x[_inner(x.shape, paddings)],
      vjp=lambda b, n, g: (b.pad(g, paddings=n.attrs["paddings"], value=0.0),),
      doc="Drop (before, after) entries from each axis (pad's VJP).  Returns a view.")

# -- flip ----------------------------------------------------------------------------------


def _flip_rule(x: TensorType, axis) -> TensorType:
    axes_of("flip", axis, x)
    return x


defop("flip", arity=1, shape=_flip_rule, attrs={"axis": REQUIRED}, flops=no_flops,
      kernel=lambda xp, x, axis: xp.flip(x, axis=tuple(axis) if isinstance(axis, list)
                                         else axis),
      vjp=lambda b, n, g: (b.flip(g, axis=n.attrs["axis"]),),
      doc="Reverse the order along axis (an int or a tuple): flip(w, axis=(0, 1)) turns "
          "conv2d's cross-correlation into true convolution.")

# -- one_hot -------------------------------------------------------------------------------


def _one_hot_rule(indices: TensorType, depth, dtype) -> TensorType:
    if not indices.dtype.is_int:
        raise ShapeError(f"one_hot needs integer class ids, got {indices}",
                         hint="cast(labels, dtype=i32)")
    if not _is_int(depth) or depth < 1:
        raise ShapeError(f"one_hot: depth must be a positive int, got {depth!r}")
    try:
        out = DType(str(dtype))
    except ValueError:
        raise ArgumentError(f"one_hot: unknown dtype '{dtype}'",
                         hint="use one of f32, f64, i32, i64, bool") from None
    return TensorType(out, indices.shape + (depth,))


def _one_hot_kernel(xp, indices, depth, dtype):
    # Ids outside [0, depth) give an all-zero row, as tf.one_hot does.
    return (indices[..., None] == xp.arange(depth)).astype(DType(str(dtype)).numpy)


defop("one_hot", arity=1, shape=_one_hot_rule, attrs={"depth": REQUIRED, "dtype": "f32"},
      flops=no_flops, kernel=_one_hot_kernel,
      nondiff="one_hot takes integer class ids",
      doc="[...] class ids -> [..., depth] with 1 at the id and 0 elsewhere.")
