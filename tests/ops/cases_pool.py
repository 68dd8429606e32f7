"""Property cases for ops/pool.py: windows, strides, dilations, SAME/VALID; maxpool draws
distinct values."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from netlang.ops.pool import maxpool_kernel
from tests.ops.harness import array, distinct, op_case


def pool_setup(draw) -> tuple[tuple, dict]:
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.sampled_from([None, (1, 1), (2, 2), (1, 2), (3, 2)]))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    dilation = draw(st.sampled_from([None, None, (2, 1), (2, 3)]))
    spans = [(k - 1) * d + 1 for k, d in zip((kh, kw), dilation or (1, 1))]
    # VALID needs the (dilated) window inside the image; so does SAME once dilated, or a
    # window's taps could all skip over it into the padding
    low_h, low_w = spans if padding == "VALID" or dilation else (1, 1)
    shape = (draw(st.integers(1, 2)), draw(st.integers(low_h, max(low_h, 6))),
             draw(st.integers(low_w, max(low_w, 6))), draw(st.integers(1, 3)))
    return shape, {"window": (kh, kw), "stride": stride, "padding": padding,
                   "dilation": dilation}


@op_case("maxpool")
def maxpool_windows(draw):
    shape, attrs = pool_setup(draw)
    return [distinct(draw, shape)], attrs


@op_case("maxpool_grad", wrt=(2,))
def maxpool_grad_windows(draw):
    shape, attrs = pool_setup(draw)
    x = distinct(draw, shape)
    y = maxpool_kernel(np, x, **attrs)
    return [x, y, array(draw, y.shape)], attrs


@op_case("maxpool_grad", wrt=(2,))
def maxpool_grad_ties(draw):
    # relu before maxpool makes whole windows of zeros: the first one takes the gradient.
    shape, attrs = pool_setup(draw)
    x = np.maximum(array(draw, shape), 0)
    y = maxpool_kernel(np, x, **attrs)
    return [x, y, array(draw, y.shape)], attrs


@op_case("maxpool_grad_grad", wrt=(2,))
def maxpool_grad_grad_windows(draw):
    shape, attrs = pool_setup(draw)
    x = distinct(draw, shape)
    y = maxpool_kernel(np, x, **attrs)
    return [x, y, array(draw, shape)], attrs


@op_case("avgpool")
def avgpool_windows(draw):
    shape, attrs = pool_setup(draw)
    return [array(draw, shape)], attrs


@op_case("avgpool_grad", wrt=(0,))
def avgpool_grad_windows(draw):
    shape, attrs = pool_setup(draw)
    like = array(draw, shape)
    from netlang.ops.pool import avgpool_kernel
    y = avgpool_kernel(np, like, **attrs)
    return [array(draw, y.shape), like], attrs
