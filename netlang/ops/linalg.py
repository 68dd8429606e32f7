"""Matrix multiplication: ``matmul(a, b)`` on [..., M, K] @ [..., K, N], batch dims broadcast.

``transpose_a`` / ``transpose_b`` (as in ``tf.matmul``) multiply by a transposed operand
without materializing it: BLAS reads the transposed view directly.  The VJP uses them, so a
dense layer's backward pass is two GEMMs (``g @ W^T`` and ``x^T @ g``) and no transposes.
"""
from __future__ import annotations

from netlang.errors import ShapeError
from netlang.ir.types import TensorType, broadcast_shapes, dim_mul, dim_prod
from netlang.ops.elementwise import unbroadcast
from netlang.ops.registry import defop


def _shown(t: TensorType, transposed: bool) -> str:
    return f"transpose({t})" if transposed else str(t)


def _matrix_dims(t: TensorType, transposed: bool) -> tuple:
    rows, cols = t.shape[-2], t.shape[-1]
    return (cols, rows) if transposed else (rows, cols)


def _check_operands(a: TensorType, b: TensorType, transpose_a, transpose_b) -> None:
    for flag in ("transpose_a", "transpose_b"):
        value = transpose_a if flag == "transpose_a" else transpose_b
        if not isinstance(value, bool):
            raise ShapeError(f"matmul: {flag} must be true or false, got {value!r}")
    for t in (a, b):
        if t.rank < 2:
            raise ShapeError(f"matmul needs matrices (rank >= 2), got {a} @ {b}",
                             hint="reshape a vector v to (1, -1) or (-1, 1) first")
    if a.dtype != b.dtype or not a.dtype.is_float:
        raise ShapeError(f"matmul needs two float operands of the same dtype, got {a} @ {b}",
                         hint=f"cast(x, dtype={a.dtype if a.dtype.is_float else b.dtype})")


def _matmul_rule(a: TensorType, b: TensorType, transpose_a=False,
                 transpose_b=False) -> TensorType:
    _check_operands(a, b, transpose_a, transpose_b)
    m, k = _matrix_dims(a, transpose_a)
    k2, n = _matrix_dims(b, transpose_b)
    shown = f"{_shown(a, transpose_a)} @ {_shown(b, transpose_b)}"
    if k != k2:
        raise ShapeError(f"matmul: inner dims disagree: {shown} ({k} != {k2})",
                         hint="the left operand's last dim must equal the right operand's "
                              "second-to-last dim")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if batch is None:
        raise ShapeError(f"matmul: batch dims do not broadcast: {shown}",
                         hint="leading dims must be equal or 1, compared from the right")
    return TensorType(a.dtype, batch + (m, n))


def _matmul_flops(out: TensorType, a: TensorType, b: TensorType, transpose_a=False,
                  transpose_b=False):
    """2*M*K*N per matrix product (a multiply-add is 2 FLOPs), times the batch."""
    k = _matrix_dims(a, transpose_a)[1]
    return dim_mul(2, dim_mul(dim_prod(out.shape), k))


def _matmul_kernel(xp, a, b, transpose_a=False, transpose_b=False):
    if transpose_a:
        a = a.swapaxes(-1, -2)
    if transpose_b:
        b = b.swapaxes(-1, -2)
    out = xp.matmul(a, b)
    if a.dtype == b.dtype != out.dtype:      # ml_dtypes' bfloat16 matmul returns float32
        out = out.astype(a.dtype)
    return out


def _matmul_vjp(b, n, g):
    """TensorFlow's _MatMulGrad: each case a GEMM with transposed operands, no copies."""
    x, y = n.inputs
    ta, tb = n.attrs["transpose_a"], n.attrs["transpose_b"]
    if not ta and not tb:
        gx, gy = b.matmul(g, y, transpose_b=True), b.matmul(x, g, transpose_a=True)
    elif not ta and tb:
        gx, gy = b.matmul(g, y), b.matmul(g, x, transpose_a=True)
    elif ta and not tb:
        gx, gy = b.matmul(y, g, transpose_b=True), b.matmul(x, g)
    else:
        gx = b.matmul(y, g, transpose_a=True, transpose_b=True)
        gy = b.matmul(g, x, transpose_a=True, transpose_b=True)
    return unbroadcast(b, gx, x), unbroadcast(b, gy, y)


defop("matmul", arity=2, shape=_matmul_rule, flops=_matmul_flops, kernel=_matmul_kernel,
      attrs={"transpose_a": False, "transpose_b": False}, vjp=_matmul_vjp,
      doc="a @ b on the last two axes; leading (batch) dims broadcast.")
