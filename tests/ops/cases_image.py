"""Property cases for ops/image.py: up- and down-sizing with every method."""
from __future__ import annotations

from hypothesis import strategies as st

from tests.ops.harness import array, op_case


def image_setup(draw) -> tuple[tuple, dict]:
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 5)),
             draw(st.integers(1, 2)))
    size = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    method = draw(st.sampled_from(["nearest", "bilinear", "bicubic"]))
    attrs = {"size": size, "method": method}
    if method != "bicubic":
        attrs["coordinates"] = draw(st.sampled_from([None, "half_pixel", "pytorch_half_pixel",
                                                     "align_corners"]))
    if method == "nearest":
        attrs["nearest_mode"] = draw(st.sampled_from([None, "ceil", "round_prefer_floor",
                                                      "round_prefer_ceil"]))
    return shape, attrs


@op_case("resize")
def resize_sizes(draw):
    shape, attrs = image_setup(draw)
    return [array(draw, shape)], attrs


@op_case("resize_grad", wrt=(0,))
def resize_grad_sizes(draw):
    shape, attrs = image_setup(draw)
    g = array(draw, (shape[0], *attrs["size"], shape[3]))
    return [g, array(draw, shape)], attrs
