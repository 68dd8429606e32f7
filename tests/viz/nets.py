"""Small graphs built by hand with the Builder, so the views are tested without a spec.

Each statement gets a source span, as the frontend gives, so gradient nodes of unscoped
expressions can be matched with the expression they differentiate.
"""
from __future__ import annotations

from netlang.errors import SourceFile, Span
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType, sym
from netlang.ops.builder import Builder

N = sym("N")
SOURCE = SourceFile("mlp.net", "\n" * 20)


def f32(*shape) -> TensorType:
    return TensorType(DType.f32, tuple(shape))


def line(b: Builder, number: int):
    return b.at(Span(SOURCE, number, 3))


def dense_like(b: Builder, x: int, width: int, scope: str) -> int:
    """A per-feature scale and shift: enough to stand for a layer with parameters."""
    with b.scope(scope):
        w = b.param("W", f32(width))
        bias = b.param("b", f32(width), init=("zeros",))
        return b.add(b.mul(x, w), bias)


def mlp_graph() -> Graph:
    """x -> dense1 -> relu -> norm1 (state, mode switch) -> dense2 -> loss, metric, output."""
    b = Builder(Graph(name="mlp"))
    g = b.graph
    with line(b, 2):
        x = b.input("x", f32(N, 4))
    with line(b, 3):
        target = b.input("target", f32(N, 4))
    with line(b, 4):
        h = dense_like(b, x, 4, "dense1")
    with line(b, 5):
        h = g.values["h"] = b.relu(h)
    with line(b, 6), b.scope("norm1"):
        moving = b.state("moving", f32(4))
        mode = b._add("mode", (), {}, TensorType(DType.bool, ()))
        centred = b.sub(h, moving)
        batch = b.sum_to_like(h, moving)
        b.update(moving, b.add(b.mul(moving, b.const(0.9)), b.mul(batch, b.const(0.1))))
        h = b.select(mode, centred, h)
    with line(b, 7):
        y = g.values["y"] = g.outputs["y"] = dense_like(b, h, 4, "dense2")
    with line(b, 8):
        err = b.square(b.sub(y, target))
        g.outputs["l2"] = b.sum_to_like(err, b.const(0.0))
        g.loss = "l2"
    with line(b, 9):
        hits = b.cast(b.equal(y, target), dtype=DType.f32)
        g.outputs["hits"] = b.sum_to_like(hits, b.const(0.0))
        g.metrics.append("hits")
    return g


def calc_graph() -> Graph:
    """Seed 002's y = x*x + sin(x) with no scopes at all."""
    b = Builder(Graph(name="calc"))
    x = b.input("x", f32())
    y = b.add(b.mul(x, x), b.sin(x))
    b.graph.values["y"] = y
    b.graph.outputs["y"] = y
    return b.graph


def raw(g: Graph, op: str, inputs, type: TensorType, scope: str = "", **attrs) -> int:
    """Append a node with its type given, for ops whose shape rules are not under test."""
    return g.add(op, inputs, attrs, type, scope=scope)


def raw_param(g: Graph, scope: str, name: str, *shape) -> int:
    full = f"{scope}/{name}"
    nid = g.add("param", (), {"init": ("zeros",)}, f32(*shape), scope=scope, name=full)
    g.params[full] = nid
    return nid


def conv_layer(g: Graph, x: int, scope: str, cin: int, cout: int, out_hw: int) -> int:
    w = raw_param(g, scope, "W", 5, 5, cin, cout)
    bias = raw_param(g, scope, "b", cout)
    y = raw(g, "conv2d", (x, w), f32(N, out_hw, out_hw, cout), scope, stride=(1, 1),
            padding="VALID", dilation=(1, 1))
    return raw(g, "add", (y, bias), f32(N, out_hw, out_hw, cout), scope)


def mnist_like_graph() -> Graph:
    """The shape of seed 004's CNN as the frontend lowers it, typed by hand."""
    g = Graph(name="mnist")
    image = g.inputs["image"] = g.add("input", (), {}, f32(N, 28, 28, 1), name="image")
    label = g.inputs["label"] = g.add("input", (), {}, TensorType(DType.i32, (N,)),
                                      name="label")
    h = conv_layer(g, image, "conv1", 1, 32, 24)
    h = raw(g, "relu", (h,), f32(N, 24, 24, 32))
    h = raw(g, "maxpool", (h,), f32(N, 12, 12, 32), "pool1", window=(2, 2), stride=None,
            padding="VALID")
    h = conv_layer(g, h, "conv2", 32, 64, 8)
    h = raw(g, "relu", (h,), f32(N, 8, 8, 64))
    h = raw(g, "maxpool", (h,), f32(N, 4, 4, 64), "pool2", window=(2, 2), stride=None,
            padding="VALID")
    h = raw(g, "reshape", (h,), f32(N, 1024), shape=(-1, 1024))
    w = raw_param(g, "dense1", "W", 1024, 1024)
    h = raw(g, "matmul", (h, w), f32(N, 1024), "dense1")
    h = raw(g, "relu", (h,), f32(N, 1024))
    mode = g.add("mode", (), {}, TensorType(DType.bool, ()))
    mask = raw(g, "dropout_mask", (h,), f32(N, 1024), "dropout1", rate=0.5)
    dropped = raw(g, "mul", (h, mask), f32(N, 1024), "dropout1")
    h = g.values["h"] = raw(g, "select", (mode, dropped, h), f32(N, 1024), "dropout1")
    w = raw_param(g, "dense2", "W", 1024, 10)
    logits = g.values["logits"] = raw(g, "matmul", (h, w), f32(N, 10), "dense2")
    g.outputs["probs"] = raw(g, "softmax", (logits,), f32(N, 10), axis=-1)
    xent = raw(g, "softmax_cross_entropy", (logits, label), f32(N))
    g.outputs["xent"] = raw(g, "mean", (xent,), f32(), axis=None, keepdims=False)
    g.loss = "xent"
    return g
