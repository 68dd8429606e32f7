"""The CPU's shifted-row convolution kernels (runtime/shifted_gemm.py) against the im2col ones.

The property cases in cases_conv.py reach the shifted kernels with 8 channels; these tests
check them on the shapes they were made for (16-32 channels, 28x28 and 14x14 images),
in float32 and float64, with SAME, VALID and dilated windows, and that the choice of kernel
follows ``usable``.
"""
from __future__ import annotations

import numpy as np
import pytest

from netlang.ops import conv
from netlang.runtime import cpu_kernels, shifted_gemm


def geometry(x_shape, w_shape, padding, dilation=(1, 1), stride=(1, 1)):
    return conv.window_geometry("conv2d", x_shape[1:3], w_shape[:2], stride, dilation, padding)


def im2col_reference(x, w, g, gh, gw):
    """conv2d, input and filter gradients through the patch matrix (the other kernels)."""
    patches = conv.patch_matrix(np, x, gh, gw)
    y = (patches @ w.reshape(-1, w.shape[3])).reshape(g.shape)
    dw = (patches.T @ g.reshape(-1, g.shape[3])).reshape(w.shape)
    taps = g.reshape(-1, g.shape[3]) @ w.reshape(-1, w.shape[3]).T     # [pixels, kh*kw*cin]
    dx = np.zeros((x.shape[0], gh.padded, gw.padded, x.shape[3]), dtype=x.dtype)
    taps = taps.reshape(x.shape[0], gh.out, gw.out, w.shape[0], w.shape[1], x.shape[3])
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            dx[conv.offset_slice(gh, gw, i, j)] += taps[:, :, :, i, j, :]
    return y, conv.crop_padding(np, dx, gh, gw), dw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, padding, dilation", [
    ((4, 28, 28, 16), (3, 3, 16, 16), "SAME", (1, 1)),
    ((3, 14, 14, 12), (3, 3, 12, 32), "VALID", (1, 1)),
    ((2, 11, 9, 8), (3, 2, 8, 5), "SAME", (2, 1)),
    ((2, 10, 12, 9), (1, 3, 9, 7), "VALID", (1, 3)),
])
def test_shifted_kernels_match_im2col(x_shape, w_shape, padding, dilation, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    gh, gw = geometry(x_shape, w_shape, padding, dilation)
    assert shifted_gemm.usable(np, dtype, gh, gw, x_shape[3])
    g = rng.standard_normal((x_shape[0], gh.out, gw.out, w_shape[3])).astype(dtype)
    y_ref, dx_ref, dw_ref = im2col_reference(x, w, g, gh, gw)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    y = shifted_gemm.conv2d(x, w, gh, gw)
    dx = shifted_gemm.backprop_input(g, w, x.shape, gh, gw)
    dw = shifted_gemm.backprop_filter(x, g, *w_shape[:2], gh, gw)
    for got, want in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
        assert got.dtype == dtype and got.shape == want.shape and got.flags.c_contiguous
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_conv_kernels_choose_shifted_rows_only_where_they_pay():
    rng = np.random.default_rng(1)

    def usable(x_shape, w_shape, stride=(1, 1), dtype=np.float32):
        gh, gw = geometry(x_shape, w_shape, "SAME", stride=stride)
        return shifted_gemm.usable(np, dtype, gh, gw, x_shape[3])

    assert usable((8, 28, 28, 16), (3, 3, 16, 16)) and usable((8, 14, 14, 8), (3, 3, 8, 4))
    assert not usable((8, 14, 14, 32), (3, 3, 32, 32))      # im2col is as fast here
    assert not usable((8, 28, 28, 4), (3, 3, 4, 16))        # too few channels
    assert not usable((8, 12, 12, 32), (5, 5, 32, 64))                  # 25 taps
    assert not usable((8, 28, 28, 16), (3, 3, 16, 16), stride=(2, 2))
    assert not usable((8, 28, 28, 16), (3, 3, 16, 16), dtype=np.float16)
    gh, gw = geometry((8, 28, 28, 16), (3, 3, 16, 16), "SAME")
    assert not shifted_gemm.usable(object(), np.float32, gh, gw, 16)    # CuPy keeps im2col

    # the CPU backend's factories route through it: no patch matrix is kept for the filter
    # gradient
    x = rng.standard_normal((2, 8, 8, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 4)).astype(np.float32)
    state = cpu_kernels.KernelState()
    attrs = {"stride": (1, 1), "padding": "SAME", "dilation": (1, 1)}
    f32 = [np.dtype(np.float32)] * 3
    y = cpu_kernels.conv2d([x.shape, w.shape], f32, attrs, state)(x, w)
    assert state.patches.entries == {}
    g = np.ones_like(y)
    dx = cpu_kernels.conv2d_backprop_input([g.shape, w.shape, x.shape], f32, attrs, state)(
        g, w, x)
    dw = cpu_kernels.conv2d_backprop_filter([x.shape, g.shape, w.shape], f32, attrs, state)(
        x, g, w)
    gh, gw = geometry(x.shape, w.shape, "SAME")
    y_ref, dx_ref, dw_ref = im2col_reference(x, w, g, gh, gw)
    for got, want in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_add_product_accumulates_in_place():
    rng = np.random.default_rng(2)
    out = rng.standard_normal((60, 3)).astype(np.float32)
    rows = rng.standard_normal((60, 4)).astype(np.float32)[5:55]
    small = rng.standard_normal((4, 3)).astype(np.float32)
    want = out.copy()
    want[10:] += rows @ small
    shifted_gemm.add_product(out[10:], rows, small, np.empty((50, 3), np.float32))
    np.testing.assert_allclose(out, want, rtol=1e-5)
