"""Property cases for ops/conv.py: drawn strides, SAME/VALID, dilation, odd sizes."""
from __future__ import annotations

from hypothesis import strategies as st

from netlang.ops.conv import transpose_out_size
from tests.ops.harness import array, op_case


def conv_setup(draw, max_side: int = 6, explicit: bool = True) -> dict:
    """Geometry of one small convolution whose window fits when padding is VALID."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.sampled_from(["SAME", "VALID", "EXPLICIT"] if explicit
                                   else ["SAME", "VALID"]))
    low_h = (kh - 1) * dilation[0] + 1 if padding == "VALID" else 1
    low_w = (kw - 1) * dilation[1] + 1 if padding == "VALID" else 1
    if padding == "EXPLICIT":          # ((top, bottom), (left, right)), ONNX's pads
        padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in "hw")
        low_h = max(1, (kh - 1) * dilation[0] + 1 - sum(padding[0]))
        low_w = max(1, (kw - 1) * dilation[1] + 1 - sum(padding[1]))
    return {
        "n": draw(st.integers(1, 2)),
        "h": draw(st.integers(low_h, max(low_h, max_side))),
        "w": draw(st.integers(low_w, max(low_w, max_side))),
        # cin < 4 and cin >= 4 take different im2col/col2im layouts in ops/conv.py; stride-1
        # windows over 8 channels run on shifted rows (ops/shifted_gemm.py).
        "cin": draw(st.sampled_from([1, 2, 3, 4, 5, 8])), "cout": draw(st.integers(1, 3)),
        "kh": kh, "kw": kw,
        "attrs": {"stride": stride, "padding": padding, "dilation": dilation},
    }


def out_hw(s: dict) -> tuple[int, int]:
    """Output height and width by TensorFlow's rule (independent of netlang's code)."""
    out = []
    padding = s["attrs"]["padding"]
    for axis, (size, k, st_, d) in enumerate(zip((s["h"], s["w"]), (s["kh"], s["kw"]),
                                                 s["attrs"]["stride"], s["attrs"]["dilation"])):
        span = (k - 1) * d + 1
        if padding == "SAME":
            out.append(-(-size // st_))
        else:
            pads = 0 if padding == "VALID" else sum(padding[axis])
            out.append((size + pads - span) // st_ + 1)
    return out[0], out[1]


@op_case("conv2d")
def conv2d_geometry(draw):
    s = conv_setup(draw)
    x = array(draw, (s["n"], s["h"], s["w"], s["cin"]))
    w = array(draw, (s["kh"], s["kw"], s["cin"], s["cout"]))
    return [x, w], s["attrs"]


@op_case("conv2d_backprop_input", wrt=(0, 1))
def backprop_input_geometry(draw):
    s = conv_setup(draw)
    oh, ow = out_hw(s)
    g = array(draw, (s["n"], oh, ow, s["cout"]))
    w = array(draw, (s["kh"], s["kw"], s["cin"], s["cout"]))
    like = array(draw, (s["n"], s["h"], s["w"], s["cin"]))
    return [g, w, like], s["attrs"]


@op_case("conv2d_backprop_filter", wrt=(0, 1))
def backprop_filter_geometry(draw):
    s = conv_setup(draw)
    oh, ow = out_hw(s)
    x = array(draw, (s["n"], s["h"], s["w"], s["cin"]))
    g = array(draw, (s["n"], oh, ow, s["cout"]))
    like = array(draw, (s["kh"], s["kw"], s["cin"], s["cout"]))
    return [x, g, like], s["attrs"]


def grouped_setup(draw) -> tuple[dict, int]:
    """A convolution with groups dividing both channel counts (depthwise included)."""
    s = conv_setup(draw, max_side=5)
    groups = draw(st.sampled_from([2, 3]))
    s["cin"] = groups * draw(st.integers(1, 2))
    s["cout"] = groups * draw(st.integers(1, 2))
    s["attrs"] = {**s["attrs"], "groups": groups}
    return s, groups


@op_case("conv2d")
def grouped_conv2d(draw):
    s, groups = grouped_setup(draw)
    x = array(draw, (s["n"], s["h"], s["w"], s["cin"]))
    w = array(draw, (s["kh"], s["kw"], s["cin"] // groups, s["cout"]))
    return [x, w], s["attrs"]


@op_case("conv2d_backprop_input", wrt=(0, 1))
def grouped_backprop_input(draw):
    s, groups = grouped_setup(draw)
    oh, ow = out_hw(s)
    g = array(draw, (s["n"], oh, ow, s["cout"]))
    w = array(draw, (s["kh"], s["kw"], s["cin"] // groups, s["cout"]))
    like = array(draw, (s["n"], s["h"], s["w"], s["cin"]))
    return [g, w, like], s["attrs"]


@op_case("conv2d_backprop_filter", wrt=(0, 1))
def grouped_backprop_filter(draw):
    s, groups = grouped_setup(draw)
    oh, ow = out_hw(s)
    x = array(draw, (s["n"], s["h"], s["w"], s["cin"]))
    g = array(draw, (s["n"], oh, ow, s["cout"]))
    like = array(draw, (s["kh"], s["kw"], s["cin"] // groups, s["cout"]))
    return [x, g, like], s["attrs"]


@op_case("conv2d_transpose")
def conv2d_transpose_geometry(draw):
    s = conv_setup(draw, max_side=4, explicit=False)     # SAME or VALID only
    h, w = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    x = array(draw, (s["n"], h, w, s["cin"]))
    kernel = array(draw, (s["kh"], s["kw"], s["cout"], s["cin"]))
    for size, k, st_, d in zip((h, w), (s["kh"], s["kw"]), s["attrs"]["stride"],
                               s["attrs"]["dilation"]):
        assert transpose_out_size(size, k, st_, d, s["attrs"]["padding"]) >= 1
    return [x, kernel], s["attrs"]


@op_case("conv2d_bias", wrt=(0, 1, 2))
def conv2d_bias_geometry(draw):
    s = conv_setup(draw)
    x = array(draw, (s["n"], s["h"], s["w"], s["cin"]))
    w = array(draw, (s["kh"], s["kw"], s["cin"], s["cout"]))
    bias = array(draw, (s["cout"],))
    return [x, w, bias], {**s["attrs"], "relu": False}


@op_case("conv2d_bias", wrt=(0, 1, 2))
def conv2d_bias_relu_positive(draw):
    """With relu: positive inputs, weights and bias keep every output off relu's kink."""
    s = conv_setup(draw)
    x = array(draw, (s["n"], s["h"], s["w"], s["cin"]), 0.1, 1.0)
    w = array(draw, (s["kh"], s["kw"], s["cin"], s["cout"]), 0.1, 1.0)
    bias = array(draw, (s["cout"],), 0.1, 1.0)
    return [x, w, bias], {**s["attrs"], "relu": True}
