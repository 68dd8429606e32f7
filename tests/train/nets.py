"""Small hand-built networks for the training tests (built with the Builder, no spec text)."""
from __future__ import annotations

import numpy as np

from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType, sym
from netlang.model import Model
from netlang.ops.builder import Builder

N = sym("N")


def quadratic(w0=(0.5, -1.0, 2.0), k=(1.0, 2.0, 3.0)) -> tuple[Model, np.ndarray]:
    """loss = 0.5 * sum(k * w^2 * x^2) over a batch of x: gradient k * w * sum(x^2)."""
    b = Builder(Graph(name="quadratic"))
    x = b.input("x", TensorType(DType.f32, (N, 3)))
    w = b.param("w", TensorType(DType.f32, (3,)), init=("zeros",))
    v = b.param("v", TensorType(DType.f32, (2, 3)), init=("ones",))
    kc = b.const(np.asarray(k, np.float32))
    wx = b.mul(x, w)
    loss = b.mul(b.const(0.5), b.sum(b.mul(kc, b.square(wx))))
    loss = b.add(loss, b.mul(b.const(0.5), b.sum(b.square(v))))
    b.graph.outputs["loss"] = loss
    b.graph.loss = "loss"
    return Model(b.graph), np.asarray(w0, np.float32)


def mlp(hidden=16, classes=4) -> Model:
    """x f32[N,2] -> dense(hidden) -> relu -> dense(classes); mean cross-entropy, accuracy:
    the seed's spiral MLP in miniature (tests/cli/test_train.py adds dropout via a spec)."""
    b = Builder(Graph(name="mlp"))
    x = b.input("x", TensorType(DType.f32, (N, 2)))
    y = b.input("y", TensorType(DType.i32, (N,)))
    with b.scope("fc1"):
        w1 = b.param("W", TensorType(DType.f32, (2, hidden)), init=("he_normal",))
        b1 = b.param("b", TensorType(DType.f32, (hidden,)), init=("zeros",))
    h = b.relu(b.add(b.matmul(x, w1), b1))
    with b.scope("fc2"):
        w2 = b.param("W", TensorType(DType.f32, (hidden, classes)), init=("glorot_normal",))
        b2 = b.param("b", TensorType(DType.f32, (classes,)), init=("zeros",))
    logits = b.add(b.matmul(h, w2), b2)
    loss = b.mean(b.softmax_cross_entropy(logits, y))
    pred = b.argmax(logits, axis=1)
    acc = b.mean(b.cast(b.equal(pred, y), dtype="f32"))
    g = b.graph
    g.outputs.update(xent=loss, pred=pred, accuracy=acc, logits=logits)
    g.values.update(logits=logits)
    g.loss, g.metrics = "xent", ["accuracy"]
    return Model(g)
