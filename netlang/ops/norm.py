"""Batch normalization as a few fused ops (what the ``batchnorm`` layer lowers onto).

Every op here normalizes along one channel ``axis`` of ``x``; its per-channel inputs (mean,
variance, gamma, beta) are vectors shaped ``[C]`` that the kernels broadcast along that axis,
and the reductions run over every other axis.  Forward:

    var = batch_variance(x, mean)                      # mean((x - mean)**2)
    y   = batchnorm_apply(x, mean, var, gamma, beta)   # x * scale + (beta - mean * scale)
                                                       # scale = gamma * rsqrt(var + epsilon)

The kernels run the same floating-point steps, in the same order, as the primitive ops the
layer used to lower onto, so the numbers a user sees are unchanged.  First-order gradients
are fused ops too (``batchnorm_grad_x``, ``batchnorm_grad_gamma``, ``batch_variance_grad``);
their own VJPs re-emit the equivalent primitive ops and differentiate those, so gradients of
gradients stay exact without being fast.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from netlang.errors import ShapeError
from netlang.ir.types import TensorType, is_float_dtype
from netlang.ops.registry import REQUIRED, defop, get_op
from netlang.ops.reverse import backpropagate
from netlang.ops.rules import (
    float_only,
    flops_per_input,
    leading_axes,
    normalize_axis,
    sum_leading_axes,
)

# -- shared rules and kernel helpers ------------------------------------------------------------


def _check_vectors(opname: str, x: TensorType, axis, vectors) -> int:
    """The normalized channel axis, after checking every vector is ``[C]`` for that axis."""
    float_only(opname, x)
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise ShapeError(f"{opname}: axis must be an int, got {axis!r}")
    axis = normalize_axis(opname, axis, x.rank)
    want = TensorType(x.dtype, (x.shape[axis],))
    for v in vectors:
        if v != want:
            raise ShapeError(f"{opname}: expected a {want} vector for axis {axis} of {x}, "
                             f"got {v}", hint="per-channel statistics and parameters are [C]")
    return axis


def _norm_rule(opname: str, big: tuple[int, ...], per_channel: bool):
    """Inputs ``big`` are shaped like x (the last of them), the others are [C] vectors; the
    output is a [C] vector when ``per_channel``, else shaped like x."""
    def rule(*types: TensorType, axis, **_) -> TensorType:
        x = types[big[-1]]
        for i in big:
            if types[i] != x:
                raise ShapeError(f"{opname}: input {i} is {types[i]}, expected {x}")
        vectors = [t for i, t in enumerate(types) if i not in big]
        axis = _check_vectors(opname, x, axis, vectors)
        return TensorType(x.dtype, (x.shape[axis],)) if per_channel else x
    return rule


def _along(v, axis: int, ndim: int):
    """A [C] array shaped to broadcast along ``axis`` of an ``ndim``-axis array."""
    if axis % ndim == ndim - 1:
        return v
    return v.reshape(tuple(-1 if i == axis % ndim else 1 for i in range(ndim)))


def _other_axes(axis: int, ndim: int) -> tuple[int, ...]:
    return tuple(i for i in range(ndim) if i != axis % ndim)


def _sum_over_others(xp, x, axis: int):
    """Sum over every axis but ``axis`` (one BLAS product when the channel axis is last)."""
    axes = _other_axes(axis, x.ndim)
    count = leading_axes(axes, x.ndim) if axes else None
    if count is not None and is_float_dtype(x.dtype):
        return xp.asarray(sum_leading_axes(xp, x, count))
    return xp.asarray(x.sum(axis=axes))


def _count(x, axis: int) -> int:
    return math.prod(x.shape[a] for a in _other_axes(axis, x.ndim))


def inverse_std(xp, var, epsilon):
    """rsqrt(var + epsilon) with the same steps as the ``add`` and ``rsqrt`` kernels."""
    out = xp.asarray(xp.sqrt(var + var.dtype.type(epsilon)))
    return xp.divide(1, out, out=out)


# -- the same computations as primitive IR (for second derivatives) ------------------------------

def _along_ir(b, vec: int, like: int, axis: int) -> int:
    t = b.type_of(like)
    axis = axis % t.rank
    if axis == t.rank - 1:
        return vec
    return b.reshape(vec, shape=tuple(t.shape[axis] if i == axis else 1 for i in range(t.rank)))


def _inverse_std_ir(b, var: int, epsilon) -> int:
    return b.rsqrt(b.add(var, b.const(epsilon, b.type_of(var).dtype)))


def _batch_variance_grad_ir(b, g, x, mean, axis):
    axes = _other_axes(axis, b.type_of(x).rank)
    spread = b.mean_grad(g, x, axis=axes, keepdims=False)
    centered = b.sub(x, _along_ir(b, mean, x, axis))
    return b.mul(spread, b.mul(centered, b.const(2.0, b.type_of(x).dtype)))


def _batchnorm_grad_x_ir(b, g, var, gamma, axis, epsilon):
    scale = b.mul(_inverse_std_ir(b, var, epsilon), gamma)
    return b.mul(g, _along_ir(b, scale, g, axis))


def _batchnorm_grad_gamma_ir(b, g, x, mean, var, axis, epsilon):
    axes = _other_axes(axis, b.type_of(x).rank)
    centered = b.sub(x, _along_ir(b, mean, x, axis))
    dot = b.sum(b.mul(g, centered), axis=axes, keepdims=False)
    return b.mul(dot, _inverse_std_ir(b, var, epsilon))


def vjp_by_primitives(emit: Callable) -> Callable:
    """A VJP that re-emits the op as primitive IR and runs autodiff's reverse loop over it.

    Each input is first passed through ``identity`` so that an input given twice gets one
    cotangent per position, as autodiff expects.
    """
    def vjp(b, node, g):
        leaves = [b.identity(i) for i in node.inputs]
        out = emit(b, *leaves, **node.attrs)
        return tuple(backpropagate(b, out, leaves, seed=g, partial=True))
    return vjp


# -- batch_variance ------------------------------------------------------------------------------

def _batch_variance_kernel(xp, x, mean, axis):
    centered = x - _along(mean, axis, x.ndim)
    xp.multiply(centered, centered, out=centered)
    return get_op("mean").kernel(xp, centered, axis=_other_axes(axis, x.ndim), keepdims=False)


def _batch_variance_vjp(b, n, g):
    """dx = 2 * g * (x - mean) / count; dmean = 2 * g * (mean - mean(x)) (zero when ``mean``
    is the batch mean).  ``mean(x)`` is written as the lowering writes the batch mean, so CSE
    merges it with that node and the gradient costs no second pass over ``x``."""
    x, mean = n.inputs
    axis = n.attrs["axis"]
    dx = b.batch_variance_grad(g, x, mean, axis=axis)
    batch_mean = b.mean(x, axis=_other_axes(axis, b.type_of(x).rank), keepdims=False)
    dmean = b.mul(b.mul(g, b.sub(mean, batch_mean)), b.const(2.0, b.type_of(x).dtype))
    return dx, dmean


defop("batch_variance", arity=2, shape=_norm_rule("batch_variance", (0,), True), attrs={"axis": REQUIRED},
      flops=flops_per_input(3), kernel=_batch_variance_kernel, vjp=_batch_variance_vjp,
      doc="mean((x - mean)**2) over every axis but axis: the population variance per channel.")


def _batch_variance_grad_kernel(xp, g, x, mean, axis):
    spread = g * g.dtype.type(1.0 / max(_count(x, axis), 1))
    out = x - _along(mean, axis, x.ndim)
    xp.multiply(out, _along(spread + spread, axis, x.ndim), out=out)
    return out


defop("batch_variance_grad", arity=3, shape=_norm_rule("batch_variance_grad", (1,), False),
      attrs={"axis": REQUIRED}, flops=flops_per_input(3), kernel=_batch_variance_grad_kernel,
      vjp=vjp_by_primitives(_batch_variance_grad_ir),
      doc="The VJP of batch_variance w.r.t. x: 2 * g * (x - mean) / count.")

# -- batchnorm_apply -----------------------------------------------------------------------------


def _batchnorm_apply_kernel(xp, x, mean, var, gamma, beta, axis, epsilon):
    scale = inverse_std(xp, var, epsilon) * gamma
    shift = -(mean * scale) + beta
    out = x * _along(scale, axis, x.ndim)
    return xp.add(out, _along(shift, axis, x.ndim), out=out)


def _batchnorm_apply_vjp(b, n, g):
    """dx = g * scale; dbeta = sum(g); dgamma = sum(g * (x - mean)) * rsqrt(var + eps);
    dmean = -dbeta * scale; dvar = -dgamma * gamma / (2 * (var + eps))."""
    x, mean, var, gamma, _ = n.inputs
    axis, epsilon = n.attrs["axis"], n.attrs["epsilon"]
    dtype = b.type_of(x).dtype
    dx = b.batchnorm_grad_x(g, var, gamma, axis=axis, epsilon=epsilon)
    dbeta = b.sum(g, axis=_other_axes(axis, b.type_of(x).rank), keepdims=False)
    dgamma = b.batchnorm_grad_gamma(g, x, mean, var, axis=axis, epsilon=epsilon)
    dmean = b.neg(b.mul(dbeta, b.mul(_inverse_std_ir(b, var, epsilon), gamma)))
    spread = b.add(var, b.const(epsilon, dtype))
    dvar = b.mul(b.div(b.mul(dgamma, gamma), spread), b.const(-0.5, dtype))
    return dx, dmean, dvar, dgamma, dbeta


defop("batchnorm_apply", arity=5, shape=_norm_rule("batchnorm_apply", (0,), False),
      attrs={"axis": REQUIRED, "epsilon": REQUIRED}, flops=flops_per_input(2),
      kernel=_batchnorm_apply_kernel, vjp=_batchnorm_apply_vjp,
      doc="batchnorm_apply(x, mean, var, gamma, beta): gamma * (x - mean) / sqrt(var + "
          "epsilon) + beta, the [C] vectors broadcast along axis.")


def _batchnorm_grad_x_kernel(xp, g, var, gamma, axis, epsilon):
    scale = inverse_std(xp, var, epsilon) * gamma
    return g * _along(scale, axis, g.ndim)


defop("batchnorm_grad_x", arity=3, shape=_norm_rule("batchnorm_grad_x", (0,), False),
      attrs={"axis": REQUIRED, "epsilon": REQUIRED}, flops=flops_per_input(1),
      kernel=_batchnorm_grad_x_kernel, vjp=vjp_by_primitives(_batchnorm_grad_x_ir),
      doc="The VJP of batchnorm_apply w.r.t. x: g * gamma * rsqrt(var + epsilon).")


def _batchnorm_grad_gamma_kernel(xp, g, x, mean, var, axis, epsilon):
    centered = x - _along(mean, axis, x.ndim)
    xp.multiply(centered, g, out=centered)
    return _sum_over_others(xp, centered, axis) * inverse_std(xp, var, epsilon)


defop("batchnorm_grad_gamma", arity=4, shape=_norm_rule("batchnorm_grad_gamma", (0, 1), True),
      attrs={"axis": REQUIRED, "epsilon": REQUIRED}, flops=flops_per_input(3),
      kernel=_batchnorm_grad_gamma_kernel, vjp=vjp_by_primitives(_batchnorm_grad_gamma_ir),
      doc="The VJP of batchnorm_apply w.r.t. gamma: sum(g * (x - mean)) * rsqrt(var + eps).")
