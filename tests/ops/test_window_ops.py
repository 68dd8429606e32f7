"""Conv, pool, resize and dropout behaviour users see: error text, TF semantics, adjoints."""
from __future__ import annotations

import numpy as np
import pytest

from netlang.errors import ArgumentError, ShapeError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, Sym, TensorType, sym
from netlang.ops.builder import Builder
from netlang.ops.registry import get_op

F32 = DType.f32


def kernel(op, *arrays, **attrs):
    opdef = get_op(op)
    return opdef.kernel(np, *arrays, **{**opdef.attrs, **attrs})


def typed(op, *types, **attrs):
    b = Builder(Graph())
    ins = [b.input(f"x{i}", t) for i, t in enumerate(types)]
    return b.type_of(b.op(op, *ins, **attrs))


def t(*shape, dtype=F32):
    return TensorType(dtype, tuple(shape))


# -- shape errors --------------------------------------------------------------------------

def test_conv2d_on_flat_images_says_how_to_reshape():
    with pytest.raises(ShapeError) as err:
        typed("conv2d", t(sym("N"), 784), t(5, 5, 1, 32))
    assert err.value.message == ("conv2d expects 4-D input [N,H,W,C], got f32[N,784]; "
                                 "add reshape or flatten?")
    assert "reshape(x, shape=(-1, 28, 28, 1))" in err.value.hint


def test_conv2d_channel_mismatch_names_both_counts():
    with pytest.raises(ShapeError) as err:
        typed("conv2d", t(sym("N"), 28, 28, 3), t(5, 5, 1, 32))
    assert err.value.message == ("conv2d: input has 3 channels but the filter expects 1 "
                                 "(filter f32[5,5,1,32])")


def test_valid_window_larger_than_input():
    with pytest.raises(ShapeError) as err:
        typed("conv2d", t(2, 4, 4, 1), t(5, 5, 1, 1), padding="VALID")
    assert err.value.message == ("conv2d: the 5x5 window is larger than the 4x4 input with "
                                 "padding=VALID")
    with pytest.raises(ShapeError, match="dilated to 5x5"):
        typed("conv2d", t(2, 4, 4, 1), t(3, 3, 1, 1), dilation=2)
    with pytest.raises(ShapeError, match="maxpool: the 3x3 window is larger than the 2x2"):
        typed("maxpool", t(1, 2, 2, 1), window=3)


def test_bad_padding_and_stride_are_argument_errors():
    with pytest.raises(ArgumentError, match=r"padding must be SAME, VALID or \(\(top, bottom\), "
                                            r"\(left, right\)\), got 'full'"):
        typed("conv2d", t(1, 4, 4, 1), t(3, 3, 1, 1), padding="full")
    with pytest.raises(ArgumentError, match=r"of non-negative ints, got \(\(1, -1\), \(0, 0\)\)"):
        typed("conv2d", t(1, 4, 4, 1), t(3, 3, 1, 1), padding=((1, -1), (0, 0)))


def test_explicit_padding_pads_each_side_as_given():
    assert str(typed("conv2d", t(sym("N"), 28, 28, 1), t(3, 3, 1, 4),
                     padding=((1, 1), (2, 0)))) == "f32[N,28,28,4]"
    assert str(typed("maxpool", t(2, 7, 7, 8), window=3, stride=2,
                     padding=((1, 1), (1, 1)))) == "f32[2,4,4,8]"
    assert str(typed("conv2d", t(2, 5, 5, 1), t(3, 3, 1, 1), padding=2)) == "f32[2,7,7,1]"
    assert str(typed("conv2d", t(sym("N"), sym("H"), sym("W"), 1), t(3, 3, 1, 1),
                     padding=((2, 0), (0, 2)))) == "f32[N,H,W,1]"
    with pytest.raises(ArgumentError, match="stride must be positive integers"):
        typed("maxpool", t(1, 4, 4, 1), stride=(0, 1))


def test_padding_is_case_insensitive_and_same_keeps_ceil_size():
    assert str(typed("conv2d", t(sym("N"), 28, 28, 1), t(5, 5, 1, 32), padding="same",
                     stride=2)) == "f32[N,14,14,32]"
    assert str(typed("maxpool", t(sym("N"), 7, 7, 8), padding="SAME")) == "f32[N,4,4,8]"


def test_conv2d_flops_count_multiply_adds_twice():
    x, w = t(sym("N"), 28, 28, 1), t(5, 5, 1, 32)
    out = typed("conv2d", x, w)
    assert get_op("conv2d").flops(out, x, w) == Sym(("N",), 2 * 24 * 24 * 25 * 32)


# -- convolution ---------------------------------------------------------------------------

def test_conv2d_transpose_sizes_follow_tf_layers():
    x, w = t(sym("N"), 7, 7, 8), t(3, 3, 4, 8)
    assert str(typed("conv2d_transpose", x, w, stride=2, padding="SAME")) == "f32[N,14,14,4]"
    assert str(typed("conv2d_transpose", x, w, stride=2, padding="VALID")) == "f32[N,15,15,4]"


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("cin", [1, 6])
def test_conv2d_transpose_is_the_adjoint_of_conv2d(padding, cin):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 5, 3))
    w = rng.standard_normal((3, 2, cin, 3))
    attrs = {"stride": (2, 3), "padding": padding, "dilation": (1, 1)}
    up = kernel("conv2d_transpose", x, w, **attrs)
    probe = rng.standard_normal(up.shape)
    lhs = np.sum(up * probe)
    rhs = np.sum(x * kernel("conv2d", probe, w, **attrs))
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_float32_stays_float32():
    x = np.ones((1, 6, 6, 2), np.float32)
    w = np.ones((3, 3, 2, 5), np.float32)
    y = kernel("conv2d", x, w)
    assert y.dtype == np.float32
    assert kernel("conv2d_backprop_input", y, w, x).dtype == np.float32
    assert kernel("conv2d_backprop_filter", x, y, w).dtype == np.float32
    assert kernel("maxpool_grad", x, kernel("maxpool", x), kernel("maxpool", x)).dtype == (
        np.float32)


# -- pooling -------------------------------------------------------------------------------

def test_avgpool_same_averages_only_cells_inside_the_image():
    x = np.array([[1, 2], [3, 4]], np.float32).reshape(1, 2, 2, 1)
    out = kernel("avgpool", x, window=2, stride=1, padding="SAME")
    np.testing.assert_array_equal(out[0, :, :, 0], [[2.5, 3], [3.5, 4]])


def test_maxpool_grad_gives_a_tie_to_the_first_maximum():
    x = np.zeros((1, 2, 4, 1), np.float32)          # relu'd zeros: every window ties
    x[0, 1, 3, 0] = 1.0
    y = kernel("maxpool", x)
    dx = kernel("maxpool_grad", x, y, np.array([[[[5.0], [7.0]]]], np.float32))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[5, 0, 0, 0], [0, 0, 0, 7]])


def test_overlapping_maxpool_sums_gradients_of_a_shared_maximum():
    x = np.array([[1, 9, 2]], np.float32).reshape(1, 1, 3, 1)
    y = kernel("maxpool", x, window=(1, 2), stride=1)
    dx = kernel("maxpool_grad", x, y, np.ones_like(y), window=(1, 2), stride=1)
    np.testing.assert_array_equal(dx.reshape(-1), [0, 2, 0])


# -- resize --------------------------------------------------------------------------------

GRID = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)


def test_resize_bicubic_matches_tf1_resize_bicubic():
    # tf.image.resize_bicubic([[0,1,2],[3,4,5],[6,7,8]], [6, 6]) in TensorFlow 1.x.
    expected = [[0.0, 0.40625, 1.0, 1.59375, 2.0, 2.09375],
                [1.21875, 1.625, 2.21875, 2.8125, 3.21875, 3.3125],
                [3.0, 3.40625, 4.0, 4.59375, 5.0, 5.09375],
                [4.78125, 5.1875, 5.78125, 6.375, 6.78125, 6.875],
                [6.0, 6.40625, 7.0, 7.59375, 8.0, 8.09375],
                [6.28125, 6.6875, 7.28125, 7.875, 8.28125, 8.375]]
    out = kernel("resize", GRID, size=(6, 6), method="bicubic")
    np.testing.assert_allclose(out[0, :, :, 0], expected, atol=1e-6)


def test_resize_nearest_and_bilinear_sample_at_out_times_scale():
    nearest = kernel("resize", GRID, size=(6, 6), method="nearest")[0, 0, :, 0]
    np.testing.assert_array_equal(nearest, [0, 0, 1, 1, 2, 2])
    bilinear = kernel("resize", GRID, size=(6, 6), method="bilinear")[0, 0, :, 0]
    np.testing.assert_array_equal(bilinear, [0, 0.5, 1, 1.5, 2, 2])


def test_srcnn_down_and_up_sampling():
    """Seed 000's SRCNN: resize_bicubic to 7x7, then resize_nearest_neighbor back to 28x28."""
    h = np.random.default_rng(3).random((2, 28, 28, 1), np.float32)
    low = kernel("resize", h, size=(7, 7), method="bicubic")
    np.testing.assert_array_equal(low, h[:, ::4, ::4, :])      # taps land on pixels
    up = kernel("resize", low, size=(28, 28), method="nearest")
    np.testing.assert_array_equal(up, np.repeat(np.repeat(low, 4, axis=1), 4, axis=2))


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic"])
def test_resize_grad_is_the_transpose(method):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 3, 2))
    y = kernel("resize", x, size=(4, 7), method=method)
    probe = rng.standard_normal(y.shape)
    back = kernel("resize_grad", probe, x, size=(4, 7), method=method)
    assert np.sum(y * probe) == pytest.approx(np.sum(x * back), rel=1e-10)


# -- dropout -------------------------------------------------------------------------------

def test_dropout_mask_scales_kept_units_and_repeats_with_the_seed():
    x = np.ones((200, 50), np.float32)
    mask = get_op("dropout_mask").kernel(np, x, rate=0.5, rng=np.random.default_rng(7))
    again = get_op("dropout_mask").kernel(np, x, rate=0.5, rng=np.random.default_rng(7))
    assert mask.dtype == np.float32 and mask.shape == x.shape
    assert set(np.unique(mask)) == {0.0, 2.0}
    assert abs(mask.mean() - 1.0) < 0.05
    np.testing.assert_array_equal(mask, again)
    keep_all = get_op("dropout_mask").kernel(np, x, rate=0.0, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(keep_all, x)


def test_dropout_rate_out_of_range():
    with pytest.raises(ArgumentError, match=r"dropout rate must be a number in \[0, 1\)"):
        typed("dropout_mask", t(3, 4), rate=1.0)


# -- symbolic filter sizes (issue 14, item 9) -----------------------------------------------

N = sym("N")
SYMBOLIC_KERNELS = [  # (op, input types with a symbolic kh or kw, the dims it reports)
    ("conv2d", (t(N, 8, 8, 2), t(sym("K"), 3, 2, 4)), "[K,3]"),
    ("conv2d", (t(N, 8, 8, 2), t(3, sym("K"), 2, 4)), "[3,K]"),
    ("conv2d_transpose", (t(N, 8, 8, 2), t(sym("K"), 3, 4, 2)), "[K,3]"),
    ("conv2d_transpose", (t(N, 8, 8, 2), t(3, sym("K"), 4, 2)), "[3,K]"),
    ("conv2d_backprop_input", (t(N, 6, 6, 4), t(sym("K"), 3, 2, 4), t(N, 8, 8, 2)), "[K,3]"),
    ("conv2d_backprop_filter", (t(N, 8, 8, 2), t(N, 6, 6, 4), t(3, sym("K"), 2, 4)), "[3,K]"),
]


@pytest.mark.parametrize("op, types, dims", SYMBOLIC_KERNELS,
                         ids=[f"{c[0]}-{c[2]}" for c in SYMBOLIC_KERNELS])
def test_symbolic_kernel_size_is_a_shape_error(op, types, dims):
    """6 cases: a symbolic kh/kw is a shape error naming the dims, never a TypeError."""
    with pytest.raises(ShapeError) as err:
        typed(op, *types)
    assert err.value.message == f"{op} needs a known kernel height and width, got {dims}"
    assert err.value.hint == ("give the filter's first two dims as numbers, "
                              "e.g. f32[3,3,1,32]")


def test_symbolic_filter_count_is_supported():
    """A symbolic number of filters is just a symbolic output channel dim."""
    assert typed("conv2d", t(N, 8, 8, 2), t(3, 3, 2, sym("K"))) == t(N, 6, 6, sym("K"))
    assert typed("conv2d_transpose", t(N, 8, 8, 2), t(3, 3, sym("K"), 2)) == t(
        N, 10, 10, sym("K"))
