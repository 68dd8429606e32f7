"""Local response normalization across channels (AlexNet's, ONNX's LRN, PyTorch's
LocalResponseNorm), over the last axis of NHWC images:

    y[c] = x[c] / (bias + alpha / size * sum(x[c'] ** 2 for c' in window(c))) ** beta

with ``window(c) = c - (size - 1) // 2 ... c + size // 2`` (clipped to the channels).  TF 1.x's
``tf.nn.local_response_normalization(depth_radius=r, alpha=a)`` is ``size = 2r + 1`` with
``alpha = a * size`` here (TF does not divide alpha by the window).

Its one helper op is linear: ``channel_window_sum(x; size, before)`` sums each window of
``size`` channels starting ``before`` channels back; its VJP is the same op with the window
mirrored (``before = size - 1 - before``), so lrn's VJP, written with it and elementwise ops,
differentiates again.
"""
from __future__ import annotations

from netlang.errors import ShapeError
from netlang.ir.types import TensorType
from netlang.ops.registry import REQUIRED, defop
from netlang.ops.rules import float_only, flops_per_output


def _check_window(opname: str, size, before=None) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ShapeError(f"{opname}: size must be a positive int, got {size!r}")
    if before is not None and (isinstance(before, bool) or not isinstance(before, int)
                               or not 0 <= before < size):
        raise ShapeError(f"{opname}: before must be an int in [0, {size - 1}], got {before!r}")


# -- channel_window_sum -----------------------------------------------------------------------

def _window_sum_rule(x: TensorType, size, before) -> TensorType:
    float_only("channel_window_sum", x)
    if x.rank == 0:
        raise ShapeError(f"channel_window_sum needs a channel axis, got the scalar {x}")
    _check_window("channel_window_sum", size, before)
    return x


def window_sum_kernel(xp, x, size, before):
    """out[..., c] = sum of x[..., c - before + i] for i < size (zero outside the channels),
    one shifted add per window tap."""
    c = x.shape[-1]
    widths = [(0, 0)] * (x.ndim - 1) + [(before, size - 1 - before)]
    padded = xp.pad(x, widths)
    out = xp.array(padded[..., 0:c], copy=True)
    for i in range(1, size):
        out += padded[..., i:i + c]
    return out


defop("channel_window_sum", arity=1, shape=_window_sum_rule,
      attrs={"size": REQUIRED, "before": REQUIRED}, flops=flops_per_output(1),
      kernel=window_sum_kernel,
      vjp=lambda b, n, g: (b.channel_window_sum(g, size=n.attrs["size"],
                                                before=n.attrs["size"] - 1
                                                - n.attrs["before"]),),
      doc="Sum over a window of `size` channels (the last axis) starting `before` back; "
          "lrn's sum of squares.")


# -- lrn --------------------------------------------------------------------------------------

def _lrn_rule(x: TensorType, size, alpha, beta, bias) -> TensorType:
    float_only("lrn", x)
    if x.rank == 0:
        raise ShapeError(f"lrn needs a channel axis, got the scalar {x}")
    _check_window("lrn", size)
    for name, value in (("alpha", alpha), ("beta", beta), ("bias", bias)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ShapeError(f"lrn: {name} must be a number, got {value!r}")
    return x


def _denominator(xp, x, size, alpha, bias):
    t = x.dtype.type
    return window_sum_kernel(xp, x * x, size, (size - 1) // 2) * t(alpha / size) + t(bias)


def _lrn_kernel(xp, x, size, alpha=1e-4, beta=0.75, bias=1.0):
    return x * _denominator(xp, x, size, alpha, bias) ** x.dtype.type(-beta)


def _lrn_vjp(b, n, g):
    """dx = g d^-beta - 2 alpha beta / size * x * window_sum'(g x d^(-beta-1)), with d the
    denominator and window_sum' the mirrored window."""
    x = n.inputs[0]
    size, alpha, beta, bias = (n.attrs[k] for k in ("size", "alpha", "beta", "bias"))
    dtype = b.type_of(x).dtype
    before = (size - 1) // 2
    d = b.add(b.mul(b.channel_window_sum(b.square(x), size=size, before=before),
                    b.const(alpha / size, dtype)), b.const(bias, dtype))
    direct = b.mul(g, b.pow(d, exponent=-beta))
    spread = b.mul(b.mul(g, x), b.pow(d, exponent=-beta - 1.0))
    back = b.channel_window_sum(spread, size=size, before=size - 1 - before)
    cross = b.mul(b.mul(x, back), b.const(-2.0 * alpha * beta / size, dtype))
    return (b.add(direct, cross),)


defop("lrn", arity=1, shape=_lrn_rule,
      attrs={"size": REQUIRED, "alpha": 1e-4, "beta": 0.75, "bias": 1.0},
      flops=flops_per_output(8), kernel=_lrn_kernel, vjp=_lrn_vjp,
      doc="Local response normalization across the last axis (AlexNet; ONNX's LRN): "
          "x / (bias + alpha/size * sum of squares over `size` channels) ** beta.")
