"""Elementwise ops: arithmetic with NumPy broadcasting, activations, comparisons, casts.

Each block declares one op: shape rule, kernel over ``xp``, and the VJP that emits IR.
Binary VJPs reduce the cotangent back to each operand's shape with ``sum_to_like``.
"""
from __future__ import annotations

import math
import operator

import numpy as np

from netlang.errors import ArgumentError, ShapeError
from netlang.ir.types import DType, TensorType, is_float_dtype, promote
from netlang.ops.registry import REQUIRED, defop
from netlang.ops.rules import (
    binary_rule,
    broadcast_types,
    compare_rule,
    float_only,
    float_same_type,
    flops_per_output,
    same_type,
    sum_to_shape,
)


def unbroadcast(b, g: int, like: int) -> int:
    """The cotangent ``g`` summed down to the shape of ``like`` (no-op when equal)."""
    if b.type_of(g).shape == b.type_of(like).shape:
        return g
    return b.sum_to_like(g, like)


def cotangent_rule(opname: str, g: TensorType, *others: TensorType) -> None:
    """Gradient ops take a float cotangent and float operands of its dtype (as autodiff
    builds them), so their kernels compute in exactly the dtype the rule promises."""
    float_only(opname, g)
    for t in others:
        if t.dtype != g.dtype:
            raise ShapeError(f"{opname}: the cotangent is {g} but an operand is {t}",
                             hint="a gradient op computes in one float dtype: cast them alike")


def no_bool_arithmetic(opname: str, t: TensorType, written: str) -> None:
    """NumPy refuses ``-`` and ``sign`` on booleans; say so at check instead of at run."""
    if t.dtype is DType.bool:
        raise ShapeError(f"{opname} ({written}) is not defined on bool tensors, got {t}",
                         hint="cast(x, dtype=i32) first to count true as 1 and false as 0")


# -- broadcasting helpers ------------------------------------------------------------------

def _sum_to_like_shape(g: TensorType, like: TensorType) -> TensorType:
    cotangent_rule("sum_to_like", g)
    return like.with_dtype(g.dtype)


defop("sum_to_like", arity=2, shape=_sum_to_like_shape, shape_only=(1,),
      kernel=lambda xp, g, like: sum_to_shape(xp, g, like.shape).astype(g.dtype, copy=False),
      vjp=lambda b, n, g: (b.broadcast_like(g, n.inputs[0]), None),
      doc="Sum the first input down to the second's shape (the VJP of broadcasting).")


def _broadcast_like_shape(x: TensorType, like: TensorType) -> TensorType:
    broadcast_types("broadcast_like", x, like)
    return like.with_dtype(x.dtype)


defop("broadcast_like", arity=2, shape=_broadcast_like_shape, shape_only=(1,),
      kernel=lambda xp, x, like: xp.broadcast_to(x, like.shape),
      vjp=lambda b, n, g: (b.sum_to_like(g, n.inputs[0]), None),
      doc="Broadcast the first input to the second's shape.")

# -- arithmetic ----------------------------------------------------------------------------

def common_dtype(a, b):
    """Both operands in the dtype the shape rule promised: f32 with i32 stays f32, where
    NumPy would widen to f64 and hand every later kernel a type the IR does not say."""
    if a.dtype == b.dtype:
        return a, b
    target = promote(DType.of(a.dtype), DType.of(b.dtype)).numpy
    return a.astype(target, copy=False), b.astype(target, copy=False)


defop("add", arity=2, expr="{0} + {1}", commutative=True,
      shape=binary_rule("add"), elementwise=True,
      kernel=lambda xp, a, b: operator.add(*common_dtype(a, b)),
      vjp=lambda b, n, g: (unbroadcast(b, g, n.inputs[0]), unbroadcast(b, g, n.inputs[1])))

def _sub_rule(a: TensorType, c: TensorType, **_) -> TensorType:
    out = broadcast_types("sub", a, c)
    no_bool_arithmetic("sub", out, "a - b of two bools")
    return out


defop("sub", arity=2, expr="{0} - {1}",
      shape=_sub_rule, elementwise=True,
      kernel=lambda xp, a, b: operator.sub(*common_dtype(a, b)),
      vjp=lambda b, n, g: (unbroadcast(b, g, n.inputs[0]),
                           unbroadcast(b, b.neg(g), n.inputs[1])))

defop("mul", arity=2, expr="{0} * {1}", commutative=True,
      shape=binary_rule("mul"), elementwise=True,
      kernel=lambda xp, a, b: operator.mul(*common_dtype(a, b)),
      vjp=lambda b, n, g: (unbroadcast(b, b.mul(g, n.inputs[1]), n.inputs[0]),
                           unbroadcast(b, b.mul(g, n.inputs[0]), n.inputs[1])))


def _div_vjp(b, n, g):
    x, y = n.inputs
    gx = b.div(g, y)
    gy = b.neg(b.mul(gx, n.id))  # d(x/y)/dy = -(x/y)/y
    return unbroadcast(b, gx, x), unbroadcast(b, gy, y)


def _div_rule(a: TensorType, c: TensorType, **_) -> TensorType:
    out = broadcast_types("div", a, c)
    return out if out.dtype.is_float else out.with_dtype(DType.f32)


def _div_kernel(xp, a, b):
    a, b = common_dtype(a, b)   # f32 / f64 is f64, as the rule says
    return xp.true_divide(a, b).astype(a.dtype if is_float_dtype(a.dtype) else "float32",
                                       copy=False)


defop("div", arity=2, expr="({T}){0} / ({T}){1}",
      shape=_div_rule, elementwise=True,
      kernel=_div_kernel,
      vjp=_div_vjp)

def _neg_rule(x: TensorType, **_) -> TensorType:
    no_bool_arithmetic("neg", x, "unary -")
    return x


defop("neg", arity=1, expr="-{0}",
      shape=_neg_rule, elementwise=True,
      kernel=lambda xp, x: -x,
      vjp=lambda b, n, g: (b.neg(g),))

defop("square", arity=1, expr="{0} * {0}",
      shape=same_type, elementwise=True,
      kernel=lambda xp, x: x * x,
      vjp=lambda b, n, g: (b.mul(g, b.mul(n.inputs[0], b.const(2.0, b.type_of(g).dtype))),))

defop("exp", arity=1, expr="exp(({T}){0})",
      shape=float_same_type("exp"), elementwise=True,
      kernel=lambda xp, x: xp.exp(x),
      vjp=lambda b, n, g: (b.mul(g, n.id),))

defop("log", arity=1, expr="log(({T}){0})",
      shape=float_same_type("log"), elementwise=True,
      kernel=lambda xp, x: xp.log(x),
      vjp=lambda b, n, g: (b.div(g, n.inputs[0]),))

defop("sqrt", arity=1, expr="sqrt(({T}){0})",
      shape=float_same_type("sqrt"), elementwise=True,
      kernel=lambda xp, x: xp.sqrt(x),
      vjp=lambda b, n, g: (b.div(g, b.mul(n.id, b.const(2.0, b.type_of(g).dtype))),))

defop("sin", arity=1, expr="sin(({T}){0})",
      shape=float_same_type("sin"), elementwise=True,
      kernel=lambda xp, x: xp.sin(x),
      vjp=lambda b, n, g: (b.mul(g, b.cos(n.inputs[0])),))

defop("cos", arity=1, expr="cos(({T}){0})",
      shape=float_same_type("cos"), elementwise=True,
      kernel=lambda xp, x: xp.cos(x),
      vjp=lambda b, n, g: (b.neg(b.mul(g, b.sin(n.inputs[0]))),))

# -- rounding and erf (ONNX's Floor, Ceil, Round, Erf) --------------------------------------

defop("floor", arity=1, expr="floor(({T}){0})",
      shape=float_same_type("floor"), elementwise=True,
      kernel=lambda xp, x: xp.floor(x),
      vjp=lambda b, n, g: (None,),
      doc="The largest integer <= x (as a float); its derivative is zero almost everywhere.")

defop("ceil", arity=1, expr="ceil(({T}){0})",
      shape=float_same_type("ceil"), elementwise=True,
      kernel=lambda xp, x: xp.ceil(x),
      vjp=lambda b, n, g: (None,),
      doc="The smallest integer >= x (as a float); its derivative is zero almost everywhere.")

defop("round", arity=1, expr="rint(({T}){0})",
      shape=float_same_type("round"), elementwise=True,
      kernel=lambda xp, x: xp.rint(x),
      vjp=lambda b, n, g: (None,),
      doc="The nearest integer, halves to even (NumPy's rint, ONNX's Round); zero derivative.")

SQRT_2_OVER_PI = 0.7978845608028654     # sqrt(2 / pi)
INV_SQRT_2 = 0.7071067811865476


def erf_kernel(xp, x):
    """The error function.  NumPy has no erf ufunc: the reference takes libm's (double)
    per element; generated CPU and GPU kernels call erf in the loop."""
    if hasattr(xp, "erf"):
        return xp.erf(x)
    return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=x.dtype)


defop("erf", arity=1, expr="erf(({T}){0})",
      shape=float_same_type("erf"), elementwise=True,
      kernel=erf_kernel,
      vjp=lambda b, n, g: (b.mul(g, b.mul(b.exp(b.neg(b.square(n.inputs[0]))),
                                          b.const(2.0 / math.sqrt(math.pi),
                                                  b.type_of(g).dtype))),),
      doc="The error function 2/sqrt(pi) * integral of exp(-t^2) from 0 to x.")

# -- activations ---------------------------------------------------------------------------

defop("relu", arity=1, expr="({0} < ({T})0 ? ({T})0 : {0})",
      shape=float_same_type("relu"), elementwise=True,
      kernel=lambda xp, x: xp.maximum(x, 0),
      vjp=lambda b, n, g: (b.relu_grad(g, n.id),),
      doc="max(x, 0)")

def _relu_grad_rule(g: TensorType, y: TensorType, **_) -> TensorType:
    cotangent_rule("relu_grad", g, y)
    return broadcast_types("relu_grad", g, y)


defop("relu_grad", arity=2, expr="{0} * ({T})({1} > 0)",
      shape=_relu_grad_rule, elementwise=True,
      kernel=lambda xp, g, y: g * (y > 0),
      vjp=lambda b, n, g: (b.relu_grad(g, n.inputs[1]), None),
      doc="g where the relu output y is positive, else 0 (relu's VJP).")

defop("sigmoid", arity=1,
      expr="({0} >= 0 ? ({T})1 / (({T})1 + exp(-{0})) : exp({0}) / (({T})1 + exp({0})))",
      shape=float_same_type("sigmoid"), elementwise=True,
      kernel=lambda xp, x: _sigmoid(xp, x),
      vjp=lambda b, n, g: (b.mul(g, b.mul(n.id, b.sub(b.const(1.0, b.type_of(g).dtype),
                                                          n.id))),))


def _sigmoid(xp, x):
    # Split by sign so exp never overflows.
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


defop("tanh", arity=1, expr="tanh(({T}){0})",
      shape=float_same_type("tanh"), elementwise=True,
      kernel=lambda xp, x: xp.tanh(x),
      vjp=lambda b, n, g: (b.mul(g, b.sub(b.const(1.0, b.type_of(g).dtype),
                                          b.square(n.id))),))

# -- identity-like -------------------------------------------------------------------------

defop("identity", arity=1, shape=same_type,
      kernel=lambda xp, x: x,
      vjp=lambda b, n, g: (g,))

defop("stop_gradient", arity=1, shape=same_type,
      kernel=lambda xp, x: x,
      nondiff="stop_gradient blocks the gradient on purpose")


def _cast_rule(x: TensorType, dtype) -> TensorType:
    try:
        return x.with_dtype(DType(str(dtype)))
    except ValueError:
        raise ArgumentError(f"cast: unknown dtype '{dtype}'",
                         hint="use one of f32, f64, i32, i64, bool") from None


def _cast_vjp(b, n, g):
    src = b.type_of(n.inputs[0]).dtype
    if not (src.is_float and n.type.dtype.is_float):
        return (None,)
    return (b.cast(g, dtype=str(src)),)


defop("cast", arity=1, shape=_cast_rule, attrs={"dtype": REQUIRED},
      kernel=lambda xp, x, dtype: x.astype(DType(str(dtype)).numpy, copy=False),
      vjp=_cast_vjp)

defop("equal", arity=2, expr="{0} == {1}", commutative=True,
      shape=compare_rule("equal"), elementwise=True,
      kernel=lambda xp, a, b: a == b,
      nondiff="equal returns booleans")


def _fill_like_rule(x: TensorType, value, dtype) -> TensorType:
    return x if dtype is None else x.with_dtype(DType(str(dtype)))


defop("fill_like", arity=1, shape=_fill_like_rule, attrs={"value": REQUIRED, "dtype": None},
      shape_only=(0,),
      kernel=lambda xp, x, value, dtype: xp.full(
          x.shape, value, dtype=x.dtype if dtype is None else DType(str(dtype)).numpy),
      vjp=lambda b, n, g: (None,),
      doc="A tensor shaped like x filled with a constant (seeds autodiff with ones).")


def _select_rule(cond: TensorType, a: TensorType, c: TensorType) -> TensorType:
    if cond.dtype is not DType.bool:
        raise ShapeError(f"select: the condition must be bool, got {cond}")
    out = broadcast_types("select", a, c)
    return broadcast_types("select", cond, out).with_dtype(out.dtype)


def _select_vjp(b, n, g):
    cond, x, y = n.inputs
    zero = b.fill_like(g, value=0.0)
    return (None, unbroadcast(b, b.select(cond, g, zero), x),
            unbroadcast(b, b.select(cond, zero, g), y))


SELECT_OP = "select"   # constant folding resolves it when its condition is a constant

defop(SELECT_OP, arity=3, expr="({0} ? ({T}){1} : ({T}){2})",
      shape=_select_rule, elementwise=True,
      kernel=lambda xp, cond, a, b: xp.where(cond, *common_dtype(a, b)),
      vjp=_select_vjp,
      doc="select(cond, a, b): a where cond is true, else b (train/eval switches use it).")

# -- more elementwise ops: abs, maximum/minimum, pow, rsqrt, comparisons -------------------
# (FLOPs: one per output element; a transcendental counts a few.)


def _zeros_like(b, g: int) -> int:
    return b.fill_like(g, value=0.0)


def _sign_rule(x: TensorType, **_) -> TensorType:
    no_bool_arithmetic("sign", x, "the sign of a number")
    return x


defop("sign", arity=1, expr="({0} != {0} ? {0} : ({T})(({0} > 0) - ({0} < 0)))",
      shape=_sign_rule, elementwise=True, flops=flops_per_output(1),
      kernel=lambda xp, x: xp.sign(x),
      vjp=lambda b, n, g: (None,),
      doc="-1, 0 or 1 by the sign of x (abs's VJP); its derivative is zero almost everywhere.")

defop("abs", arity=1, expr="({0} < 0 ? -{0} : {0})",
      shape=same_type, elementwise=True, flops=flops_per_output(1),
      kernel=lambda xp, x: xp.abs(x),
      vjp=lambda b, n, g: (b.mul(g, b.sign(n.inputs[0])),),
      doc="|x|")


def _pick_vjp(b, n, g, a_loses: int):
    """Route g to the operand maximum/minimum picked; ties go to the first (as TF does)."""
    a, c = n.inputs
    zero = _zeros_like(b, g)
    return (unbroadcast(b, b.select(a_loses, zero, g), a),
            unbroadcast(b, b.select(a_loses, g, zero), c))


defop("maximum", arity=2, commutative=True,
      expr="(({0} != {0} || {0} > {1}) ? ({T}){0} : ({T}){1})",
      shape=binary_rule("maximum"), elementwise=True,
      flops=flops_per_output(1),
      kernel=lambda xp, a, b: xp.maximum(*common_dtype(a, b)),
      vjp=lambda b, n, g: _pick_vjp(b, n, g, b.less(*n.inputs)),
      doc="The larger of a and b, elementwise, with broadcasting.")

defop("minimum", arity=2, commutative=True,
      expr="(({0} != {0} || {0} < {1}) ? ({T}){0} : ({T}){1})",
      shape=binary_rule("minimum"), elementwise=True,
      flops=flops_per_output(1),
      kernel=lambda xp, a, b: xp.minimum(*common_dtype(a, b)),
      vjp=lambda b, n, g: _pick_vjp(b, n, g, b.greater(*n.inputs)),
      doc="The smaller of a and b, elementwise, with broadcasting.")


def _pow_rule(x: TensorType, exponent) -> TensorType:
    float_only("pow", x)
    if isinstance(exponent, bool) or not isinstance(exponent, (int, float)):
        raise ShapeError(f"pow: the exponent must be a number, got {exponent!r}",
                         hint="pow(x, exponent=2.0); for a tensor exponent use exp(y * log(x))")
    return x


def _pow_vjp(b, n, g):
    p = n.attrs["exponent"]
    if p == 0:
        return (None,)
    if p == 1:
        return (g,)
    slope = b.pow(n.inputs[0], exponent=p - 1)
    return (b.mul(g, b.mul(slope, b.const(p, b.type_of(g).dtype))),)


defop("pow", arity=1, expr="pow(({T}){0}, ({T}){exponent})",
      shape=_pow_rule, attrs={"exponent": REQUIRED}, elementwise=True,
      flops=flops_per_output(4),
      kernel=lambda xp, x, exponent: x ** exponent,  # ``**`` has NumPy's fast x*x, sqrt paths
      vjp=_pow_vjp,
      doc="x ** exponent for a constant exponent.")


def _rsqrt_kernel(xp, x):
    out = xp.asarray(xp.sqrt(x))  # asarray: NumPy gives a scalar for a 0-d input
    return xp.divide(1, out, out=out)


defop("rsqrt", arity=1, expr="({T})1 / sqrt(({T}){0})",
      shape=float_same_type("rsqrt"), elementwise=True,
      flops=flops_per_output(2), kernel=_rsqrt_kernel,
      vjp=lambda b, n, g: (b.mul(g, b.mul(b.pow(n.id, exponent=3.0),
                                          b.const(-0.5, b.type_of(g).dtype))),),
      doc="1 / sqrt(x) (batchnorm's scale).")

defop("greater", arity=2, expr="{0} > {1}",
      shape=compare_rule("greater"), elementwise=True,
      flops=flops_per_output(1),
      kernel=lambda xp, a, b: a > b,
      nondiff="greater returns booleans")

defop("less", arity=2, expr="{0} < {1}",
      shape=compare_rule("less"), elementwise=True,
      flops=flops_per_output(1),
      kernel=lambda xp, a, b: a < b,
      nondiff="less returns booleans")
