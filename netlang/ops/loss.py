"""Losses: softmax and sigmoid cross-entropy from logits, mean squared error, l2_loss.

Cross-entropies work on logits with log-sum-exp, never on probabilities, so large logits
neither overflow nor lose the loss to ``log(0)``.  ``softmax_cross_entropy`` takes labels
either as integer class ids ``[N]`` (TF's sparse form) or as one-hot/probability rows
``[N,C]``; both give one loss per example, to be averaged with ``mean``.
"""
from __future__ import annotations

from netlang.errors import ShapeError
from netlang.ir.types import TensorType, broadcast_shapes, dim_mul
from netlang.ops.activations import softmax_kernel
from netlang.ops.elementwise import unbroadcast
from netlang.ops.registry import defop
from netlang.ops.rules import broadcast_types, float_only, flops_per_input, flops_per_output

# -- softmax cross-entropy -----------------------------------------------------------------


def _xent_labels(opname: str, logits: TensorType, labels: TensorType) -> bool:
    """Check the labels against the logits; True for class ids, False for probabilities."""
    float_only(opname, logits)
    if logits.rank == 0:
        raise ShapeError(f"{opname} needs logits with a class axis, got {logits}")
    if labels.dtype.is_int and labels.shape == logits.shape[:-1]:
        return True
    if labels.dtype == logits.dtype and labels.shape == logits.shape:
        return False
    ids = logits.with_shape(logits.shape[:-1]).shape_str()
    raise ShapeError(f"{opname}: labels {labels} do not fit logits {logits}",
                     hint=f"give class ids i32[{ids}] or probabilities {logits}")


def _xent_rule(logits: TensorType, labels: TensorType) -> TensorType:
    _xent_labels("softmax_cross_entropy", logits, labels)
    return TensorType(logits.dtype, logits.shape[:-1])


def check_class_ids(xp, labels, classes: int) -> None:
    """Out-of-range ids are an error, as in TF on CPU.  Skipped on GPU, where reading the
    min and max back would stall the device every step."""
    if xp.__name__ != "numpy" or labels.size == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= classes:
        raise ValueError(f"label {lo if lo < 0 else hi} is out of range for {classes} classes "
                         f"(ids must be in [0, {classes - 1}])")


def _picked(xp, z, labels):
    """z[..., label] for every example.  NumPy gathers; CuPy compares against the class
    indices in one elementwise kernel, cheaper there than building gather indices."""
    if xp.__name__ == "numpy":
        return xp.take_along_axis(z, labels[..., None], axis=-1)[..., 0]
    return (z * (labels[..., None] == xp.arange(z.shape[-1]))).sum(axis=-1)


def _xent_kernel(xp, logits, labels):
    z = logits - logits.max(axis=-1, keepdims=True)
    lse = xp.asarray(xp.log(xp.exp(z).sum(axis=-1)))   # log-sum-exp of the shifted logits
    if labels.dtype.kind in "iu":
        check_class_ids(xp, labels, logits.shape[-1])
        lse -= _picked(xp, z, labels)
        return lse
    # sum(labels * (lse - z)): exact even for rows that do not sum to 1.
    out = lse * labels.sum(axis=-1)
    z *= labels
    out -= z.sum(axis=-1)
    return xp.asarray(out)


def _xent_vjp(b, n, g):
    """logits: softmax - labels (one fused kernel); float labels: -g * log_softmax(logits)."""
    logits, labels = n.inputs
    d_logits = b.softmax_cross_entropy_grad(g, logits, labels)
    if b.type_of(labels).dtype.is_int:
        return d_logits, None
    wide = _expand_classes(b, g, logits)
    return d_logits, b.neg(b.mul(wide, b.log_softmax(logits, axis=-1)))


def _expand_classes(b, g: int, logits: int) -> int:
    """The per-example cotangent g [N] broadcast over the class axis to [N,C]."""
    last = b.type_of(logits).rank - 1
    return b.expand_like(g, logits, axis=(last,), keepdims=False)


defop("softmax_cross_entropy", arity=2, shape=_xent_rule, flops=flops_per_input(5),
      kernel=_xent_kernel, vjp=_xent_vjp,
      doc="-sum(labels * log_softmax(logits)) per example; labels are class ids [N] or "
          "probability rows [N,C] (the gradient is exact for any rows, as a loss of soft "
          "targets needs).")


def _xent_grad_rule(g: TensorType, logits: TensorType, labels: TensorType) -> TensorType:
    _xent_labels("softmax_cross_entropy_grad", logits, labels)
    if g.shape != logits.shape[:-1] or g.dtype != logits.dtype:
        raise ShapeError(f"softmax_cross_entropy_grad: cotangent {g} does not match "
                         f"logits {logits}")
    return logits


def _xent_grad_kernel(xp, g, logits, labels):
    p = softmax_kernel(xp, logits)
    if labels.dtype.kind in "iu":
        check_class_ids(xp, labels, logits.shape[-1])
        _subtract_one_hot(xp, p, labels)
    else:
        p *= labels.sum(axis=-1, keepdims=True)   # 1 for probability rows
        p -= labels
    p *= g[..., None]
    return p


def _subtract_one_hot(xp, p, labels) -> None:
    """p[..., label] -= 1 in place (p is the kernel's own fresh softmax)."""
    if xp.__name__ == "numpy":
        rows = p.reshape(-1, p.shape[-1])        # a view: p is contiguous
        rows[xp.arange(rows.shape[0]), labels.reshape(-1)] -= 1
    else:
        p -= labels[..., None] == xp.arange(p.shape[-1])


def _xent_grad_vjp(b, n, h):
    """out = g * (p*s - y) with p = softmax(logits) and s = sum(y) (1 for class ids): linear
    in g, softmax's VJP for the logits, and for float labels d/dy_j = sum(u*p) - u_j."""
    g, logits, labels = n.inputs
    ones = b.fill_like(g, value=1.0)
    d_g = b.sum(b.mul(h, b.softmax_cross_entropy_grad(ones, logits, labels)), axis=-1)
    u = b.mul(h, _expand_classes(b, g, logits))
    p = b.softmax(logits, axis=-1)
    sparse = b.type_of(labels).dtype.is_int
    w = u if sparse else b.mul(u, b.sum(labels, axis=-1, keepdims=True))
    d_logits = b.mul(p, b.sub(w, b.sum(b.mul(w, p), axis=-1, keepdims=True)))
    d_labels = None if sparse else b.sub(b.sum(b.mul(u, p), axis=-1, keepdims=True), u)
    return d_g, d_logits, d_labels


defop("softmax_cross_entropy_grad", arity=3, shape=_xent_grad_rule,
      flops=flops_per_output(6), kernel=_xent_grad_kernel, vjp=_xent_grad_vjp,
      doc="g * (softmax(logits) * sum(labels) - labels): softmax_cross_entropy's VJP in one "
          "kernel (sum(labels) is 1 for class ids and probability rows).")

# -- sigmoid cross-entropy -----------------------------------------------------------------


def _sigmoid_xent_rule(logits: TensorType, labels: TensorType) -> TensorType:
    float_only("sigmoid_cross_entropy", logits)
    if labels != logits:
        raise ShapeError(f"sigmoid_cross_entropy: logits {logits} and labels {labels} must "
                         f"have the same shape and dtype",
                         hint=f"labels are probabilities {logits}, one per logit")
    return logits


def _sigmoid_xent_kernel(xp, x, z):
    # max(x, 0) - x*z + log(1 + exp(-|x|)): TF's form, no overflow for any x.
    out = xp.maximum(x, 0) - x * z
    out += xp.log1p(xp.exp(-xp.abs(x)))
    return xp.asarray(out)


defop("sigmoid_cross_entropy", arity=2,
      expr="({0} > 0 ? {0} : ({T})0) - {0} * {1} + log1p(exp({0} < 0 ? {0} : -{0}))",
      shape=_sigmoid_xent_rule, elementwise=True,
      flops=flops_per_output(6), kernel=_sigmoid_xent_kernel,
      vjp=lambda b, n, g: (b.mul(g, b.sub(b.sigmoid(n.inputs[0]), n.inputs[1])),
                           b.neg(b.mul(g, n.inputs[0]))),
      doc="-z*log(sigmoid(x)) - (1-z)*log(1-sigmoid(x)) elementwise, from logits x.")

# -- mean squared error and l2_loss --------------------------------------------------------


def _mse_rule(pred: TensorType, target: TensorType) -> TensorType:
    float_only("mse", pred)
    float_only("mse", target)
    return broadcast_types("mse", pred, target).with_shape(())


def _mse_kernel(xp, pred, target):
    d = pred - target
    return xp.asarray(xp.vdot(d, d) / max(d.size, 1))


def _mse_vjp(b, n, g):
    """2 * (pred - target) * g / count, the count taken at run time (N may be symbolic)."""
    pred, target = n.inputs
    d = b.sub(pred, target)
    rank = b.type_of(d).rank
    share = b.mean_grad(g, d, axis=tuple(range(rank)), keepdims=False)
    gd = b.mul(share, b.mul(d, b.const(2.0, b.type_of(d).dtype)))
    return unbroadcast(b, gd, pred), unbroadcast(b, b.neg(gd), target)


def _mse_flops(out: TensorType, pred: TensorType, target: TensorType, **_):
    shape = broadcast_shapes(pred.shape, target.shape) or pred.shape
    return dim_mul(TensorType(out.dtype, shape).numel(), 3)


defop("mse", arity=2, shape=_mse_rule, flops=_mse_flops, kernel=_mse_kernel, vjp=_mse_vjp,
      doc="mean((pred - target)**2) over every element, a scalar.")


def _l2_rule(x: TensorType) -> TensorType:
    float_only("l2_loss", x)
    return x.with_shape(())


defop("l2_loss", arity=1, shape=_l2_rule, flops=flops_per_input(2),
      kernel=lambda xp, x: xp.asarray(xp.vdot(x, x) * 0.5),
      vjp=lambda b, n, g: (b.mul(n.inputs[0], g),),
      doc="sum(x**2) / 2, as tf.nn.l2_loss (weight decay).")
