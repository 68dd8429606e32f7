"""Shape ops: seed 002's transpose and concat shapes, symbolic reshape/concat, values, errors."""
from __future__ import annotations

import numpy as np
import pytest

from netlang.errors import ShapeError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, Sym, TensorType, sym
from netlang.ops.builder import Builder
from netlang.passes.autodiff import gradients
from tests.ops.harness import run

N = sym("N")


def evaluate(op: str, *arrays, **attrs) -> np.ndarray:
    arrays = [np.asarray(a) for a in arrays]
    b = Builder(Graph(name=op))
    ins = [b.input(f"x{i}", TensorType(DType.of(a.dtype), a.shape)) for i, a in enumerate(arrays)]
    (out,) = run(b.graph, [b.op(op, *ins, **attrs)], dict(zip(ins, arrays)))
    return out


def typed(*types: TensorType):
    b = Builder(Graph())
    return b, [b.input(f"x{i}", t) for i, t in enumerate(types)]


def f32(*shape) -> TensorType:
    return TensorType(DType.f32, tuple(shape))


# -- seed 002 --------------------------------------------------------------------------------

@pytest.mark.parametrize("perm, expected", [
    ((0, 2, 1), (2, 4, 3)), ((2, 0, 1), (4, 2, 3)), ((1, 2, 0), (3, 4, 2))])
def test_seed002_transpose_shapes(perm, expected):
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    out = evaluate("transpose", x, perm=perm)
    assert out.shape == expected
    np.testing.assert_array_equal(out, np.transpose(x, perm))


def test_transpose_without_perm_reverses_the_axes():
    assert evaluate("transpose", np.zeros((2, 3, 4), np.float32)).shape == (4, 3, 2)


@pytest.mark.parametrize("axis, expected", [(0, (4, 3)), (1, (2, 6))])
def test_seed002_concat_shapes(axis, expected):
    t1 = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = evaluate("concat", t1, t1 + 10, axis=axis)
    assert out.shape == expected
    np.testing.assert_array_equal(out, np.concatenate([t1, t1 + 10], axis=axis))


def test_seed002_reshape():
    assert evaluate("reshape", np.zeros((4, 5, 2), np.float32), shape=(4, 10)).shape == (4, 10)


# -- symbolic dims ---------------------------------------------------------------------------

def test_reshape_infers_the_batch_dim():
    b, (x,) = typed(f32(N, 784))
    assert str(b.type_of(b.reshape(x, shape=(-1, 28, 28, 1)))) == "f32[N,28,28,1]"
    b, (x,) = typed(f32(N, 7, 7, 8))
    assert str(b.type_of(b.reshape(x, shape=(-1, 392)))) == "f32[N,392]"


def test_reshape_and_its_gradient_run_at_any_batch_size():
    b, (x,) = typed(f32(N, 12))
    y = b.reshape(x, shape=(-1, 2, 3, 2))
    (g,) = gradients(b, b.mul(y, y), [x])
    for n in (1, 3):
        data = np.arange(12 * n, dtype=np.float32).reshape(n, 12)
        out, grad = run(b.graph, [y, g], {x: data})
        assert out.shape == (n, 2, 3, 2)
        np.testing.assert_array_equal(grad, 2 * data)


def test_concat_adds_like_symbolic_terms_and_splits_its_gradient_at_run_time():
    b, (x, z) = typed(f32(N, 2), f32(N, 2))
    c = b.concat(x, z, x, axis=0)
    assert str(b.type_of(c)) == "f32[3*N,2]"
    weights = b.input("w", f32(1, 1))
    gx, gz = gradients(b, b.mul(c, weights), [x, z])
    out, dx, dz = run(b.graph, [c, gx, gz], {x: np.ones((4, 2), np.float32),
                                             z: np.zeros((4, 2), np.float32),
                                             weights: np.full((1, 1), 3, np.float32)})
    assert out.shape == (12, 2)
    np.testing.assert_array_equal(dx, np.full((4, 2), 6))
    np.testing.assert_array_equal(dz, np.full((4, 2), 3))


def test_concat_part_slices_symbolic_units():
    b, (g,) = typed(f32(Sym(("N",), 3), 2))
    part = b.concat_part(g, axis=0, start=1, stop=3, parts=3)
    assert str(b.type_of(part)) == "f32[2*N,2]"
    data = np.arange(12, dtype=np.float32).reshape(6, 2)
    (out,) = run(b.graph, [part], {g: data})
    np.testing.assert_array_equal(out, data[2:])


# -- values ----------------------------------------------------------------------------------

def test_pad_and_its_gradient():
    x = np.array([[1, 2], [3, 4]], np.float32)
    out = evaluate("pad", x, paddings=((1, 0), (0, 2)), value=-1.0)
    np.testing.assert_array_equal(out, [[-1, -1, -1, -1], [1, 2, -1, -1], [3, 4, -1, -1]])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(evaluate("unpad", out, paddings=((1, 0), (0, 2))), x)


def test_flip_reverses_the_given_axes():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(evaluate("flip", x, axis=1), [[2, 1, 0], [5, 4, 3]])
    np.testing.assert_array_equal(evaluate("flip", x, axis=(0, 1)), [[5, 4, 3], [2, 1, 0]])


def test_one_hot_matches_tf_one_hot():
    out = evaluate("one_hot", np.array([0, 2, 1, 5, -1], np.int32), depth=3)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0]])
    assert evaluate("one_hot", np.array([1]), depth=2, dtype="i32").dtype == np.int32


# -- errors ----------------------------------------------------------------------------------

def error(build, *types) -> ShapeError:
    b, ins = typed(*types)
    with pytest.raises(ShapeError) as info:
        build(b, *ins)
    return info.value


def test_impossible_reshapes_say_why():
    err = error(lambda b, x: b.reshape(x, shape=(2, 392)), f32(N, 784))
    assert err.message == ("reshape: cannot reshape f32[N,784] (784*N elements) into "
                           "(2, 392) (784 elements)")
    assert err.hint == "keep the batch dim with -1, e.g. shape=(-1, 392)"
    err = error(lambda b, x: b.reshape(x, shape=(5, 5)), f32(4, 6))
    assert err.message == ("reshape: cannot reshape f32[4,6] (24 elements) into (5, 5) "
                           "(25 elements)")
    err = error(lambda b, x: b.reshape(x, shape=(-1, 3)), f32(N, 10))
    assert err.message == ("reshape: cannot reshape f32[N,10] (10*N elements) into (-1, 3): "
                           "10*N is not a multiple of 3")
    err = error(lambda b, x: b.reshape(x, shape=(-1, -1)), f32(N, 10))
    assert err.message == "reshape: only one dim may be -1, got (-1, -1)"


def test_transpose_and_concat_errors_name_the_types():
    err = error(lambda b, x: b.transpose(x, perm=(0, 2)), f32(2, 3, 4))
    assert err.message == "transpose: perm (0, 2) is not a permutation of the 3 axes of f32[2,3,4]"
    err = error(lambda b, x, z: b.concat(x, z, axis=0), f32(N, 3), f32(N, 4))
    assert err.message == "concat: f32[N,3] and f32[N,4] differ in axis 1 (3 != 4)"
    err = error(lambda b, x, z: b.concat(x, z, axis=0), f32(N, 3), f32(5, 3))
    assert err.message == ("concat: cannot add the dims N and 5 along axis 0 "
                           "(inputs f32[N,3], f32[5,3])")
    err = error(lambda b, x: b.concat(x, axis=2), f32(N, 3))
    assert err.message == "concat: axis 2 is out of range for f32[N,3]"


def test_pad_and_one_hot_errors():
    err = error(lambda b, x: b.pad(x, paddings=((1, 1), (0, 0))), f32(N, 3))
    assert err.message == "pad: cannot pad the symbolic dim N (axis 0) of f32[N,3]"
    err = error(lambda b, x: b.pad(x, paddings=((1, 1),)), f32(N, 3))
    assert err.message.startswith("pad: paddings must give one (before, after) pair")
    err = error(lambda b, x: b.one_hot(x, depth=10), f32(N))
    assert err.message == "one_hot needs integer class ids, got f32[N]"
