"""Stride-1 convolutions on the CPU as kh*kw GEMMs over shifted rows, accumulated in place.

Flatten the padded NHWC image to rows ``[N*Hp*Wp, C]``.  Output pixel ``(n, r, c)`` sits at
row ``q = n*Hp*Wp + r*Wp + c`` of the same grid, and kernel tap ``(i, j)`` reads input row
``q + i*dh*Wp + j*dw``.  So each tap is ONE GEMM whose operand is a contiguous slice of the
image's rows: no im2col copy (kh*kw times the image) is made.  Grid rows that are not output
pixels (the padding columns and rows) are computed too and dropped: 15% more GEMM work at
28x28 with a SAME 3x3 window, 30% at 14x14.

Each tap's product goes into one reused scratch block and is added to the output in place.

Measured (medians on a 2-core CPU, batch 256, float32, ms, im2col -> shifted rows; the
filter gradient's im2col time is with the forward's patch matrix at hand / without):

  ===========================  =============  ==============  ====================
  layer                        conv2d         input gradient  filter gradient
  ===========================  =============  ==============  ====================
  28x28, 16 -> 16, 3x3 SAME    36.1 -> 23.1   51.7 -> 23.9    15.7 / 40.3 -> 22.4
  28x28, 8 -> 8, 3x3 SAME      16.1 -> 12.0   21.3 -> 12.1     5.3 / 19.6 -> 11.8
  14x14, 32 -> 32, 3x3 SAME    18.2 -> 14.7   23.5 -> 14.6     7.2 / 17.8 -> 22.1
  14x14, 4 -> 8, 3x3 SAME       1.4 -> 2.8     1.9 -> 2.1      0.8 / 2.0 -> 1.9
  28x28, 1 -> 16, 3x3 SAME      1.7 -> 49.3    2.6 -> 5.0      1.4 / 1.9 -> 7.4
  12x12, 32 -> 64, 5x5 VALID   15.0 -> 36.5   23.8 -> 28.3     7.3 / 14.4 -> 43.0
  ===========================  =============  ==============  ====================

so a layer runs on shifted rows when its window has at most 9 taps over 8 to 16 input channels
(at 32 channels the faster conv2d and input gradient are paid back by the filter gradient,
which then has no patch matrix to reuse).  Strided convolutions, other dtypes and CuPy keep
the im2col kernels of ops/conv.py.
"""
from __future__ import annotations

import numpy as np

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
MIN_CHANNELS, MAX_CHANNELS, MAX_TAPS = 8, 16, 9


def usable(xp, dtype, gh, gw, cin: int) -> bool:
    """Whether the shifted-row kernels run this convolution (see the table above)."""
    return (xp is np and np.dtype(dtype) in DTYPES and gh.stride == gw.stride == 1
            and gh.k * gw.k <= MAX_TAPS and MIN_CHANNELS <= cin <= MAX_CHANNELS)


def add_product(out_rows, rows, small, scratch=None) -> None:
    """``out_rows += rows @ small``: ``out_rows`` [M, K] and ``rows`` [M, C] are row blocks,
    ``small`` is [C, K]; the product goes through ``scratch`` ([M, K]) when one is given."""
    tmp = np.matmul(rows, small, out=scratch)
    np.add(out_rows, tmp, out=out_rows)


def _grid(gh, gw) -> tuple[int, int, list[int]]:
    """(rows of one padded image, rows the taps can all read, each tap's row offset)."""
    per_image = gh.padded * gw.padded
    offsets = [i * gh.dilation * gw.padded + j * gw.dilation
               for i in range(gh.k) for j in range(gw.k)]
    return per_image, offsets[-1], offsets


def padded_rows(x, gh, gw):
    """The zero-padded image as rows ``[N*Hp*Wp, C]``."""
    n, h, w, c = x.shape
    if gh.padded == h and gw.padded == w:
        return np.ascontiguousarray(x).reshape(-1, c)
    out = np.zeros((n, gh.padded, gw.padded, c), dtype=x.dtype)
    out[:, gh.before:gh.before + h, gw.before:gw.before + w, :] = x
    return out.reshape(-1, c)


def output_rows(g, gh, gw):
    """An output-shaped ``g`` [N, OH, OW, K] placed on the padded grid (zeros elsewhere)."""
    n, _, _, k = g.shape
    if (gh.out, gw.out) == (gh.padded, gw.padded):
        return np.ascontiguousarray(g).reshape(-1, k)
    out = np.zeros((n, gh.padded, gw.padded, k), dtype=g.dtype)
    out[:, :gh.out, :gw.out, :] = g
    return out.reshape(-1, k)


def conv2d(x, w, gh, gw):
    """conv2d of NHWC ``x`` with filter [kh, kw, cin, cout], stride 1."""
    n = x.shape[0]
    rows = padded_rows(x, gh, gw)
    per_image, span, offsets = _grid(gh, gw)
    m = n * per_image - span
    out = np.zeros((n * per_image, w.shape[3]), dtype=x.dtype)
    taps = w.reshape(-1, w.shape[2], w.shape[3])
    scratch = np.empty((m, w.shape[3]), dtype=x.dtype)
    for t, off in enumerate(offsets):
        add_product(out[:m], rows[off:off + m], taps[t], scratch)
    return np.ascontiguousarray(
        out.reshape(n, gh.padded, gw.padded, -1)[:, :gh.out, :gw.out, :])


def backprop_input(g, w, in_shape: tuple, gh, gw):
    """The input gradient of a stride-1 conv2d: each tap scatters ``g @ W_t^T`` back to the
    rows it read, again one in-place GEMM per tap."""
    n, h, wd, cin = in_shape
    per_image, span, offsets = _grid(gh, gw)
    m = n * per_image - span
    grows = output_rows(g, gh, gw)[:m]
    dx = np.zeros((n * per_image, cin), dtype=g.dtype)
    taps = w.reshape(-1, cin, w.shape[3])
    scratch = np.empty((m, cin), dtype=g.dtype)
    for t, off in enumerate(offsets):
        add_product(dx[off:off + m], grows, taps[t].T, scratch)
    dx = dx.reshape(n, gh.padded, gw.padded, cin)
    return np.ascontiguousarray(dx[:, gh.before:gh.before + h, gw.before:gw.before + wd, :])


def backprop_filter(x, g, kh: int, kw: int, gh, gw):
    """The filter gradient of a stride-1 conv2d: tap t gets ``rows_t^T @ g``."""
    n, cin = x.shape[0], x.shape[3]
    cout = g.shape[3]
    rows = padded_rows(x, gh, gw)
    per_image, span, offsets = _grid(gh, gw)
    m = n * per_image - span
    grows = output_rows(g, gh, gw)[:m]
    dw = np.empty((kh * kw, cin, cout), dtype=x.dtype)
    for t, off in enumerate(offsets):
        np.matmul(rows[off:off + m].T, grows, out=dw[t])
    return dw.reshape(kh, kw, cin, cout)
