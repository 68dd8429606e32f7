"""The seeds' worked numbers for convolution and pooling, reproduced exactly (float32)."""
from __future__ import annotations

import numpy as np

from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType, sym
from netlang.ops.builder import Builder
from tests.ops.harness import run


def run_graph(build, **arrays) -> np.ndarray:
    """Build ``build(b, **inputs)`` over float32 inputs and run it on NumPy."""
    b = Builder(Graph(name="seed"))
    ins = {k: b.input(k, TensorType(DType.f32, np.shape(v))) for k, v in arrays.items()}
    y = build(b, **ins)
    feeds = {ins[k]: np.asarray(v, np.float32) for k, v in arrays.items()}
    (out,) = run(b.graph, [y], feeds)
    return out


def test_seed004_conv1d_same_padding():
    """``conv1d(x, w, p=2)`` of seed 004 is true convolution: conv2d with the kernel flipped.

    In the DSL: ``conv2d(x, flip(w, axis=1), padding=same)`` on x as f32[1,1,8,1] and w as
    f32[1,5,1,1]; p=2 is SAME for a 5-tap kernel.
    """
    x = np.array([1, 3, 2, 4, 5, 6, 1, 3], np.float32).reshape(1, 1, 8, 1)
    w = np.array([1, 0, 3, 1, 2], np.float32).reshape(1, 5, 1, 1)
    out = run_graph(lambda b, x, w: b.conv2d(x, b.flip(w, axis=1), padding="SAME"), x=x, w=w)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.reshape(-1), [5, 14, 16, 26, 24, 34, 19, 22])


def test_seed004_conv2d_true_convolution():
    """Seed 004's 2-D example, p=1 (SAME for 3x3), kernel flipped on both spatial axes.

    In the DSL: ``conv2d(X, flip(W, axis=(0, 1)), padding=same)`` with X f32[1,4,4,1] and
    W f32[3,3,1,1].
    """
    x = np.array([[1, 3, 2, 4], [5, 6, 1, 3], [1, 2, 0, 2], [3, 4, 3, 2]], np.float32)
    w = np.array([[1, 0, 3], [1, 2, 1], [0, 1, 1]], np.float32)
    out = run_graph(lambda b, x, w: b.conv2d(x, b.flip(w, axis=(0, 1)), padding="SAME"),
                    x=x.reshape(1, 4, 4, 1), w=w.reshape(3, 3, 1, 1))
    np.testing.assert_array_equal(out[0, :, :, 0], [[11, 25, 32, 13], [19, 25, 24, 13],
                                                    [13, 28, 25, 17], [11, 17, 14, 9]])


def test_seed000_maxpool_2x2_stride2_same():
    x = np.array([[7, 2, -4, 2], [6, -7, 9, 3], [3, -3, -4, 2], [-5, 5, 6, 10]], np.float32)
    out = run_graph(lambda b, x: b.maxpool(x, window=(2, 2), stride=(2, 2), padding="SAME"),
                    x=x.reshape(1, 4, 4, 1))
    np.testing.assert_array_equal(out[0, :, :, 0], [[7, 9], [5, 10]])


def test_mnist_shapes_maxpool_same_and_conv_valid():
    b = Builder(Graph(name="mnist"))
    image = b.input("image", TensorType(DType.f32, (sym("N"), 28, 28, 1)))
    w = b.input("w", TensorType(DType.f32, (5, 5, 1, 32)))
    pooled = b.maxpool(image, window=2, padding="SAME")
    conv = b.conv2d(image, w, padding="VALID")
    assert str(b.type_of(pooled)) == "f32[N,14,14,1]"
    assert str(b.type_of(conv)) == "f32[N,24,24,32]"
    feeds = {image: np.random.default_rng(0).random((3, 28, 28, 1), np.float32),
             w: np.ones((5, 5, 1, 32), np.float32)}
    p, c = run(b.graph, [pooled, conv], feeds)
    assert p.shape == (3, 14, 14, 1) and c.shape == (3, 24, 24, 32)
    assert p.dtype == c.dtype == np.float32
