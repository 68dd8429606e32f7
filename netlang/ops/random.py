"""Random ops: values drawn from the ``rng=`` Generator the executor passes (seeded per session).

``dropout_mask(x; rate)`` is the noise of inverted dropout (tf.nn.dropout): each entry is
``1/(1-rate)`` with probability ``1-rate`` and 0 otherwise, shaped and typed like x, so
``x * dropout_mask(x)`` keeps the expected activation.  It is random and impure: the
optimizer never merges or folds it, and it has no gradient of its own.
"""
from __future__ import annotations

import numpy as np

from netlang.errors import ArgumentError
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
    if out is not None:
        rng.random(out=out, dtype=dtype)
        np.greater_equal(out, dtype.type(rate), out=out)
        out *= scale
        return out
    keep = rng.random(x.shape, dtype=dtype) >= dtype.type(rate)
    mask = keep.astype(dtype)
    mask *= scale
    return xp.asarray(mask)


dropout_mask_kernel.writes_out = True     # on the CPU (NumPy): see ``Executor._kernel``


defop("dropout_mask", arity=1, shape=_dropout_mask_shape, kernel=dropout_mask_kernel,
      attrs={"rate": REQUIRED}, random=True, pure=False,
      nondiff="dropout_mask is random noise; the gradient flows through the multiply",
      flops=lambda out, x, **_: out.numel(),
      doc="0 or 1/(1-rate), shaped like x: the noise of inverted dropout.")
