"""Random ops: values drawn from the ``rng=`` Generator the executor passes (seeded per session).

``dropout_mask(x; rate)`` is the noise of inverted dropout (tf.nn.dropout): each entry is
``1/(1-rate)`` with probability ``1-rate`` and 0 otherwise, shaped and typed like x, so
``x * dropout_mask(x)`` keeps the expected activation.  It is random and impure: the
optimizer never merges or folds it, and it has no gradient of its own.  ``dropout_mask_of(x,
rate)`` takes the rate as a scalar tensor (a fed input) instead of an attribute.
"""
from __future__ import annotations

import numpy as np

from netlang.errors import ArgumentError, ExecutionError
from netlang.ir.types import TensorType
from netlang.ops.registry import REQUIRED, defop


def check_rate(rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ArgumentError(f"dropout rate must be a number in [0, 1), got {rate!r}",
                            hint="rate is the fraction of units dropped, e.g. dropout(0.5)")
    return float(rate)


def _dropout_mask_shape(x: TensorType, rate) -> TensorType:
    check_rate(rate)
    if not x.dtype.is_float:
        raise ArgumentError(f"dropout needs a float tensor, got {x}")
    return x


def dropout_mask_kernel(xp, x, rate, rng=None, out=None):
    """The mask from ``rng``'s uniform draws.  ``out`` (a C-contiguous NumPy array of x's
    shape and dtype, from the executor's buffer plan) receives the same numbers the
    allocating path returns, drawn into it directly."""
    rate = check_rate(rate)
    rng = rng if rng is not None else np.random.default_rng()
    dtype = np.dtype(x.dtype)
    scale = dtype.type(1.0 / (1.0 - rate))
    draws = dtype if dtype.itemsize >= 4 else np.dtype(np.float32)  # halves: drawn as f32
    if out is not None and draws == dtype:
        rng.random(out=out, dtype=dtype)
        np.greater_equal(out, dtype.type(rate), out=out)
        out *= scale
        return out
    keep = rng.random(x.shape, dtype=draws) >= draws.type(rate)
    mask = keep.astype(dtype)
    mask *= scale
    if out is not None:
        out[...] = mask
        return out
    return xp.asarray(mask)


dropout_mask_kernel.writes_out = True     # on the CPU (NumPy): see ``Executor._kernel``


defop("dropout_mask", arity=1, shape=_dropout_mask_shape, kernel=dropout_mask_kernel,
      attrs={"rate": REQUIRED}, random=True, pure=False,
      nondiff="dropout_mask is random noise; the gradient flows through the multiply",
      flops=lambda out, x, **_: out.numel(),
      doc="0 or 1/(1-rate), shaped like x: the noise of inverted dropout.")


# -- the rate as a tensor (seed 004's keep_prob placeholder) ------------------------------------

def _dropout_mask_of_shape(x: TensorType, rate: TensorType) -> TensorType:
    if rate.rank != 0 or not rate.dtype.is_float:
        raise ArgumentError(f"a dropout rate given as a tensor must be a float scalar, got "
                            f"{rate}", hint="declare it like input rate: f32[] = 0.5")
    if not x.dtype.is_float:
        raise ArgumentError(f"dropout needs a float tensor, got {x}")
    return x


def dropout_mask_of_kernel(xp, x, rate, rng=None, out=None):
    """``dropout_mask`` with the rate read from a scalar tensor when the run gets there (one
    compiled step for every rate fed); a rate outside [0, 1) stops the run naming it."""
    value = float(rate)
    if not 0 <= value < 1:
        raise ExecutionError(f"the dropout rate is {value}, outside [0, 1)",
                             hint="feed a rate such as 0.5 (0 keeps every unit)")
    return dropout_mask_kernel(xp, x, value, rng=rng, out=out)


dropout_mask_of_kernel.writes_out = True


defop("dropout_mask_of", arity=2, shape=_dropout_mask_of_shape, kernel=dropout_mask_of_kernel,
      random=True, pure=False,
      nondiff="dropout_mask_of is random noise; the gradient flows through the multiply",
      flops=lambda out, x, rate: out.numel(),
      doc="dropout_mask(x) with the rate a float scalar tensor (an input fed at run time), "
          "the same draws as dropout_mask for the same rate.")
