"""Activations beyond relu/sigmoid/tanh: leaky relu, elu, softmax, log-softmax and maxout.

Formulas follow seed 000's slides: leaky relu ``max(0.1x, x)``, elu ``x if x >= 0 else
alpha*(e^x - 1)``, maxout ``max(w1.x + b1, w2.x + b2)`` (here: the max over each group of
``pieces`` consecutive channels of the last axis, after one dense/conv layer with k*pieces
outputs).  Softmax and log-softmax subtract the row maximum first so exp never overflows.
"""
from __future__ import annotations

import math

from netlang.errors import ShapeError
from netlang.ir.types import TensorType, dim_div, dim_mul
from netlang.ops.elementwise import (
    INV_SQRT_2,
    SQRT_2_OVER_PI,
    cotangent_rule,
    erf_kernel,
    unbroadcast,
)
from netlang.ops.registry import defop
from netlang.ops.rules import (
    axis_of,
    binary_rule,
    extreme,
    float_only,
    flops_per_input,
    flops_per_output,
    no_flops,
)

# -- leaky relu ----------------------------------------------------------------------------


def _alpha_rule(opname: str, minimum: float | None = None):
    def rule(x: TensorType, alpha) -> TensorType:
        float_only(opname, x)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise ShapeError(f"{opname}: alpha must be a number, got {alpha!r}")
        if minimum is not None and alpha < minimum:
            raise ShapeError(f"{opname}: alpha must be >= {minimum}, got {alpha}")
        return x
    return rule


def _leaky_relu_kernel(xp, x, alpha):
    if 0 <= alpha <= 1:   # the seed's max(alpha*x, x): one temporary less than where()
        return xp.maximum(x, x * alpha)
    return xp.where(x > 0, x, x * alpha)


defop("leaky_relu", arity=1, expr="({0} > 0 ? ({T}){0} : ({T}){alpha} * {0})",
      shape=_alpha_rule("leaky_relu"), attrs={"alpha": 0.1},
      elementwise=True, flops=flops_per_output(2), kernel=_leaky_relu_kernel,
      vjp=lambda b, n, g: (b.leaky_relu_grad(g, n.inputs[0], alpha=n.attrs["alpha"]),),
      doc="x where x > 0, else alpha*x (seed 000: max(0.1x, x)).")


def _leaky_relu_grad_rule(g: TensorType, x: TensorType, alpha) -> TensorType:
    cotangent_rule("leaky_relu_grad", g, x)
    return binary_rule("leaky_relu_grad")(g, x)


defop("leaky_relu_grad", arity=2, expr="({1} > 0 ? ({T}){0} : ({T}){alpha} * {0})",
      shape=_leaky_relu_grad_rule, attrs={"alpha": 0.1},
      elementwise=True, flops=flops_per_output(2),
      kernel=lambda xp, g, x, alpha: xp.where(x > 0, g, g * alpha),
      vjp=lambda b, n, g: (unbroadcast(b, b.leaky_relu_grad(g, n.inputs[1],
                                                            alpha=n.attrs["alpha"]),
                                       n.inputs[0]), None),
      doc="g where x > 0, else alpha*g (leaky_relu's VJP).")

# -- elu -----------------------------------------------------------------------------------


def _elu_kernel(xp, x, alpha):
    # expm1 of min(x, 0): exact near 0 and no overflow warning for large positive x.
    neg = xp.expm1(xp.minimum(x, 0))
    neg *= alpha
    return xp.where(x > 0, x, neg)


defop("elu", arity=1, expr="({0} > 0 ? ({T}){0} : ({T}){alpha} * expm1(({T}){0}))",
      shape=_alpha_rule("elu", minimum=0), attrs={"alpha": 1.0},
      elementwise=True, flops=flops_per_output(4), kernel=_elu_kernel,
      vjp=lambda b, n, g: (b.elu_grad(g, n.id, alpha=n.attrs["alpha"]),),
      doc="x where x > 0, else alpha*(exp(x) - 1); alpha >= 0.")


def _elu_grad_rule(g: TensorType, y: TensorType, alpha) -> TensorType:
    cotangent_rule("elu_grad", g, y)
    return binary_rule("elu_grad")(g, y)


def _elu_grad_vjp(b, n, h):
    """d/dg is elu_grad itself; d/dy is h*g where y <= 0 (the slope there is y + alpha)."""
    g, y = n.inputs
    hg = b.mul(h, g)
    zero = b.fill_like(hg, value=0.0)
    positive = b.greater(y, b.const(0.0, b.type_of(y).dtype))
    return (unbroadcast(b, b.elu_grad(h, y, alpha=n.attrs["alpha"]), g),
            unbroadcast(b, b.select(positive, zero, hg), y))


defop("elu_grad", arity=2, expr="({1} > 0 ? ({T}){0} : ({T}){0} * (({T}){1} + ({T}){alpha}))",
      shape=_elu_grad_rule, attrs={"alpha": 1.0}, elementwise=True,
      flops=flops_per_output(2),
      # With alpha >= 0, y > 0 exactly where x > 0, and for x <= 0 the slope alpha*e^x = y+alpha.
      kernel=lambda xp, g, y, alpha: xp.where(y > 0, g, g * (y + alpha)),
      vjp=_elu_grad_vjp,
      doc="elu's VJP from its output y: g where y > 0, else g*(y + alpha).")

# -- gelu ----------------------------------------------------------------------------------


def _gelu_rule(x: TensorType, approximate) -> TensorType:
    float_only("gelu", x)
    if not isinstance(approximate, bool):
        raise ShapeError(f"gelu: approximate must be true or false, got {approximate!r}")
    return x


def _gelu_kernel(xp, x, approximate=False):
    if approximate:     # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        inner = x * (1 + x * x * x.dtype.type(0.044715)) * x.dtype.type(SQRT_2_OVER_PI)
        return x * (xp.tanh(inner) + 1) * x.dtype.type(0.5)
    return x * (erf_kernel(xp, x * x.dtype.type(INV_SQRT_2)) + 1) * x.dtype.type(0.5)


def _gelu_vjp(b, n, g):
    """exact: Phi(x) + x phi(x); tanh form: 0.5 (1 + t) + 0.5 x (1 - t^2) u'(x)."""
    x = n.inputs[0]
    dtype = b.type_of(x).dtype

    def c(v):
        return b.const(v, dtype)

    if n.attrs["approximate"]:
        x2 = b.square(x)
        t = b.tanh(b.mul(b.mul(x, b.add(b.mul(x2, c(0.044715)), c(1.0))), c(SQRT_2_OVER_PI)))
        du = b.mul(b.add(b.mul(x2, c(3 * 0.044715)), c(1.0)), c(SQRT_2_OVER_PI))
        slope = b.add(b.mul(b.add(t, c(1.0)), c(0.5)),
                      b.mul(b.mul(b.mul(x, b.sub(c(1.0), b.square(t))), du), c(0.5)))
    else:
        cdf = b.mul(b.add(b.erf(b.mul(x, c(INV_SQRT_2))), c(1.0)), c(0.5))
        pdf = b.mul(b.exp(b.mul(b.square(x), c(-0.5))), c(1.0 / math.sqrt(2 * math.pi)))
        slope = b.add(cdf, b.mul(x, pdf))
    return (b.mul(g, slope),)


defop("gelu", arity=1, shape=_gelu_rule, attrs={"approximate": False},
      flops=flops_per_output(8), kernel=_gelu_kernel, vjp=_gelu_vjp,
      doc="x * Phi(x), Phi the normal CDF (0.5 (1 + erf(x / sqrt 2))); approximate=true: "
          "the tanh form of BERT and GPT-2 (ONNX's Gelu).")

# -- softmax and log-softmax ---------------------------------------------------------------


def _softmax_rule(opname: str):
    def rule(x: TensorType, axis) -> TensorType:
        float_only(opname, x)
        axis_of(opname, axis, x)
        return x
    return rule


def softmax_kernel(xp, x, axis=-1):
    """exp(x - max) / sum(exp(x - max)): the shift keeps exp in range (loss.py shares it)."""
    out = x - extreme(xp, x, "max", axis, keepdims=True)
    xp.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out


def log_softmax_kernel(xp, x, axis=-1):
    """(x - max) - log(sum(exp(x - max))): log-sum-exp without overflow."""
    out = x - extreme(xp, x, "max", axis, keepdims=True)
    out -= xp.log(xp.exp(out).sum(axis=axis, keepdims=True))
    return out


def _softmax_vjp(b, n, g):
    """y * (g - sum(g*y)): the softmax Jacobian applied without building it."""
    y, axis = n.id, n.attrs["axis"]
    return (b.mul(y, b.sub(g, b.sum(b.mul(g, y), axis=axis, keepdims=True))),)


def _log_softmax_vjp(b, n, g):
    """g - softmax(x) * sum(g), with softmax(x) = exp(log_softmax(x))."""
    axis = n.attrs["axis"]
    return (b.sub(g, b.mul(b.exp(n.id), b.sum(g, axis=axis, keepdims=True))),)


defop("softmax", arity=1, shape=_softmax_rule("softmax"), attrs={"axis": -1},
      flops=flops_per_output(5), kernel=softmax_kernel, vjp=_softmax_vjp,
      doc="exp(x) / sum(exp(x)) along axis, computed with the max subtracted.")

defop("log_softmax", arity=1, shape=_softmax_rule("log_softmax"), attrs={"axis": -1},
      flops=flops_per_output(5), kernel=log_softmax_kernel, vjp=_log_softmax_vjp,
      doc="x - logsumexp(x) along axis (numerically stable).")

# -- maxout --------------------------------------------------------------------------------


def _pieces_dim(opname: str, x: TensorType, pieces):
    """The number of groups k when the last dim is k*pieces."""
    if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 1:
        raise ShapeError(f"{opname}: pieces must be a positive int, got {pieces!r}")
    if x.rank == 0:
        raise ShapeError(f"{opname} needs a tensor with a channel axis, got {x}")
    k = dim_div(x.shape[-1], pieces)
    if k is None:
        raise ShapeError(f"{opname}: the last dim {x.shape[-1]} of {x} is not a multiple of "
                         f"pieces={pieces}", hint="give the layer before k*pieces outputs")
    return k


def _maxout_rule(x: TensorType, pieces) -> TensorType:
    return x.with_shape(x.shape[:-1] + (_pieces_dim("maxout", x, pieces),))


def grouped(x, pieces: int):
    """The view [..., k, pieces] of [..., k*pieces]."""
    return x.reshape(x.shape[:-1] + (x.shape[-1] // pieces, pieces))


def _maxout_kernel(xp, x, pieces):
    return grouped(x, pieces).max(axis=-1)


def _maxout_vjp(b, n, g):
    """Through max over the grouped view: split_last, max's VJP, merge_last (views only)."""
    view = b.split_last(n.inputs[0], pieces=n.attrs["pieces"])
    last = b.type_of(view).rank - 1
    return (b.merge_last(b.max_grad(g, view, n.id, axis=(last,), keepdims=False)),)


defop("maxout", arity=1, shape=_maxout_rule, attrs={"pieces": 2},
      flops=flops_per_input(1), kernel=_maxout_kernel, vjp=_maxout_vjp,
      doc="Max over each group of `pieces` consecutive channels: [..., k*pieces] -> [..., k].")


def _split_last_rule(x: TensorType, pieces) -> TensorType:
    return x.with_shape(x.shape[:-1] + (_pieces_dim("split_last", x, pieces), pieces))


defop("split_last", arity=1, shape=_split_last_rule, attrs={"pieces": 2},
      flops=no_flops,
      kernel=lambda xp, x, pieces: grouped(x, pieces),
      vjp=lambda b, n, g: (b.merge_last(g),),
      doc="[..., k*pieces] -> [..., k, pieces] (maxout's grouped view).")


def _merge_last_rule(x: TensorType) -> TensorType:
    if x.rank < 2:
        raise ShapeError(f"merge_last needs at least 2 axes, got {x}")
    return x.with_shape(x.shape[:-2] + (dim_mul(x.shape[-2], x.shape[-1]),))


defop("merge_last", arity=1, shape=_merge_last_rule,
      flops=no_flops,
      kernel=lambda xp, x: x.reshape(x.shape[:-2] + (x.shape[-2] * x.shape[-1],)),
      vjp=lambda b, n, g: (b.split_last(g, pieces=b.type_of(n.inputs[0]).shape[-1]),),
      doc="[..., k, p] -> [..., k*p] (undoes split_last).")
