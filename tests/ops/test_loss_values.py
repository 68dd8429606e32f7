"""Losses: exact values, numerical stability at extreme logits, gradients, label errors."""
from __future__ import annotations

import numpy as np
import pytest

from netlang.errors import ExecutionError, ShapeError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType, sym
from netlang.ops.builder import Builder
from netlang.passes.autodiff import gradients
from tests.ops.harness import run

N = sym("N")


def loss_and_grads(op: str, *arrays, wrt=(0,)):
    arrays = [np.asarray(a) for a in arrays]
    b = Builder(Graph())
    ins = [b.input(f"x{i}", TensorType(DType.of(a.dtype), a.shape)) for i, a in enumerate(arrays)]
    y = b.op(op, *ins)
    grads = gradients(b, y, [ins[i] for i in wrt])
    return run(b.graph, [y, *grads], dict(zip(ins, arrays)))


LOGITS = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]], np.float32)
LABELS = np.array([0, 1], np.int32)


def reference_xent(logits, labels):
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return -np.log(p[np.arange(len(labels)), labels]), p


def test_softmax_cross_entropy_with_class_ids():
    loss, grad = loss_and_grads("softmax_cross_entropy", LOGITS, LABELS)
    expected, p = reference_xent(LOGITS.astype(np.float64), LABELS)
    assert loss.dtype == np.float32 and grad.dtype == np.float32
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(grad, p - np.eye(3)[LABELS], rtol=1e-6, atol=1e-7)


def test_one_hot_labels_give_the_same_loss_and_label_gradient_is_minus_log_softmax():
    onehot = np.eye(3, dtype=np.float32)[LABELS]
    loss, grad, dlabels = loss_and_grads("softmax_cross_entropy", LOGITS, onehot, wrt=(0, 1))
    expected, p = reference_xent(LOGITS.astype(np.float64), LABELS)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(grad, p - onehot, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dlabels, -np.log(p), rtol=1e-6)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    loss, grad = loss_and_grads("softmax_cross_entropy", logits, np.array([2], np.int32))
    np.testing.assert_allclose(loss, [2000.0])
    np.testing.assert_allclose(grad, [[1, 0, -1]], atol=1e-6)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()


def test_out_of_range_class_ids_are_an_execution_error():
    with pytest.raises(ExecutionError) as info:
        loss_and_grads("softmax_cross_entropy", LOGITS, np.array([0, 3], np.int32))
    assert "label 3 is out of range for 3 classes (ids must be in [0, 2])" in str(info.value)


def test_label_shapes_that_fit_neither_form_are_shape_errors():
    b = Builder(Graph())
    logits = b.input("logits", TensorType(DType.f32, (N, 10)))
    labels = b.input("labels", TensorType(DType.i32, (N, 10)))
    with pytest.raises(ShapeError) as info:
        b.softmax_cross_entropy(logits, labels)
    assert info.value.message == ("softmax_cross_entropy: labels i32[N,10] do not fit "
                                  "logits f32[N,10]")
    assert info.value.hint == "give class ids i32[N] or probabilities f32[N,10]"


def test_mean_cross_entropy_of_a_symbolic_batch():
    b = Builder(Graph())
    logits = b.input("logits", TensorType(DType.f32, (N, 3)))
    labels = b.input("labels", TensorType(DType.i32, (N,)))
    loss = b.mean(b.softmax_cross_entropy(logits, labels))
    assert str(b.type_of(loss)) == "f32[]"
    (g,) = gradients(b, loss, [logits])
    out, grad = run(b.graph, [loss, g], {logits: LOGITS, labels: LABELS})
    expected, p = reference_xent(LOGITS.astype(np.float64), LABELS)
    assert out == pytest.approx(expected.mean(), rel=1e-6)
    np.testing.assert_allclose(grad, (p - np.eye(3)[LABELS]) / 2, rtol=1e-6, atol=1e-7)


def test_sigmoid_cross_entropy_stable_form():
    x = np.array([-100.0, -1.0, 0.0, 2.0, 100.0], np.float32)
    z = np.array([1.0, 0.0, 0.5, 1.0, 0.0], np.float32)
    loss, dx = loss_and_grads("sigmoid_cross_entropy", x, z)
    xd = x.astype(np.float64)
    s = 1 / (1 + np.exp(-xd[1:4]))
    naive = -(z[1:4] * np.log(s) + (1 - z[1:4]) * np.log(1 - s))
    np.testing.assert_allclose(loss[1:4], naive, rtol=1e-6)
    np.testing.assert_allclose(loss[[0, 4]], [100.0, 100.0])
    np.testing.assert_allclose(dx, 1 / (1 + np.exp(-xd)) - z, rtol=1e-6, atol=1e-7)


def test_mse_and_l2_loss():
    pred = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    target = np.array([1.0, 0.0], np.float32)
    loss, dpred = loss_and_grads("mse", pred, target)
    assert loss.shape == () and loss.dtype == np.float32
    assert loss == pytest.approx((0 + 4 + 4 + 16) / 4)
    np.testing.assert_allclose(dpred, 2 * (pred - target) / 4)
    l2, dx = loss_and_grads("l2_loss", pred)
    assert l2 == pytest.approx(15.0) and l2.dtype == np.float32
    np.testing.assert_array_equal(dx, pred)
