"""Explicit padding, ceil_mode and count_include_pad, written in a spec, against
onnxruntime's MaxPool, AveragePool and Conv with the same attributes (an independent
implementation of PyTorch's and ONNX's rules)."""
from __future__ import annotations

import numpy as np
import pytest

import netlang

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper

from netlang.exchange import onnx_lib


def onnx_pool(op_type: str, size: int, attrs: dict, opset: int = 17) -> bytes:
    node = helper.make_node(op_type, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "p", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 3, size, size])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model.SerializeToString()


CASES = [  # size, window, stride, pads (t, l, b, r), ceil_mode, count_include_pad
    (7, 2, 2, (0, 0, 0, 0), 1, 0), (8, 3, 2, (0, 0, 0, 0), 1, 0), (9, 3, 2, (1, 1, 1, 1), 1, 0),
    (7, 3, 2, (1, 1, 1, 1), 0, 1), (7, 3, 2, (1, 0, 1, 0), 1, 1), (6, 3, 3, (2, 1, 0, 2), 1, 0),
    (5, 2, 1, (1, 1, 0, 0), 0, 0),
]


@pytest.mark.parametrize("size, k, s, pads, ceil, include", CASES)
@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
def test_pools_with_onnx_options_equal_onnxruntime(op, size, k, s, pads, ceil, include):
    if op == "maxpool" and include:
        pytest.skip("count_include_pad is an average's")
    t, left, b, r = pads
    extra = (f", ceil_mode={'true' if ceil else 'false'}"
             + (f", count_include_pad={'true' if include else 'false'}" if op == "avgpool"
                else ""))
    spec = (f"network p {{\n  input x: f32[N, {size}, {size}, 3]\n"
            f"  output y = {op}(x, window={k}, stride={s}, padding=(({t}, {b}), ({left}, {r}))"
            f"{extra})\n}}\n")
    model = netlang.compile(spec)
    x = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype(np.float32)
    ours = model.session().run("y", {"x": x})
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": list(pads), "ceil_mode": ceil}
    if op == "avgpool":
        attrs["count_include_pad"] = include
    theirs = onnx_lib.run(onnx_pool("MaxPool" if op == "maxpool" else "AveragePool", size,
                                    attrs), {"x": x.transpose(0, 3, 1, 2)})["y"]
    np.testing.assert_allclose(ours, theirs.transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


def test_explicit_conv_padding_equals_onnxruntime():
    spec = ("network c {\n  input x: f32[N, 6, 5, 2]\n  param W: f32[3, 3, 2, 4] = "
            "glorot_uniform()\n  output y = conv2d(x, W, padding=((2, 0), (1, 2)), stride=2)\n}\n")
    model = netlang.compile(spec)
    session = model.session(seed=3)
    x = np.random.default_rng(0).standard_normal((2, 6, 5, 2)).astype(np.float32)
    w = session.state.to_numpy()["W"]
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                            pads=[2, 1, 0, 2])
    graph = helper.make_graph([node], "c", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 6, 5]),
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    theirs = onnx_lib.run(data.SerializeToString(), {"x": x.transpose(0, 3, 1, 2),
                                                     "w": w.transpose(3, 2, 0, 1)})["y"]
    np.testing.assert_allclose(session.run("y", {"x": x}), theirs.transpose(0, 2, 3, 1),
                               rtol=1e-5, atol=1e-5)


def test_a_bad_padding_says_what_it_takes():
    spec = ("network c {\n  input x: f32[N, 6, 6, 2]\n"
            "  output y = maxpool(x, padding=((1, 2, 3), (0, 0)))\n}\n")
    with pytest.raises(netlang.NetlangError) as err:
        netlang.compile(spec)
    assert ("'padding' must be valid, same, an int, or ((top, bottom), (left, right)) of "
            "non-negative ints" in str(err.value))


DILATED = [  # size, window, stride, dilation, pads (t, l, b, r), ceil_mode
    (9, 2, 1, 2, (0, 0, 0, 0), 0), (10, 3, 2, 2, (1, 2, 2, 1), 0), (7, 3, 1, 3, (2, 2, 2, 2), 0),
    (8, 2, 2, 3, (1, 1, 1, 1), 1), (11, 3, 3, 2, (0, 0, 0, 0), 1),
]


@pytest.mark.parametrize("size, k, s, d, pads, ceil", DILATED)
@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
def test_dilated_pools_equal_onnxruntime_and_export_back(op, size, k, s, d, pads, ceil):
    """ONNX's pool ``dilations`` (AveragePool's from opset 19): a spec's ``dilation=`` runs
    as onnxruntime does, and exports to the same attributes."""
    from netlang.exchange.export import export_model
    t, left, b, r = pads
    spec = (f"network p {{\n  input x: f32[N, {size}, {size}, 3]\n"
            f"  output y = {op}(x, window={k}, stride={s}, dilation={d}, "
            f"padding=(({t}, {b}), ({left}, {r})), ceil_mode={'true' if ceil else 'false'})\n"
            "}\n")
    model = netlang.compile(spec)
    x = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype(np.float32)
    ours = model.session().run("y", {"x": x})
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": list(pads), "ceil_mode": ceil,
             "dilations": [d, d]}
    data = onnx_pool("MaxPool" if op == "maxpool" else "AveragePool", size, attrs, opset=19)
    theirs = onnx_lib.run(data, {"x": x.transpose(0, 3, 1, 2)})["y"]
    np.testing.assert_allclose(ours, theirs.transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)
    exported = onnx_lib.checked_bytes(export_model(model, {}, opset=19))
    back = onnx_lib.run(exported, {"x": x})["y"]
    np.testing.assert_allclose(back, ours, rtol=1e-6, atol=1e-6)


def test_a_dilated_average_pool_needs_opset_19_to_export():
    from netlang.errors import ExportError
    from netlang.exchange.export import export_model
    spec = "network p {\n  input x: f32[N, 8, 8, 3]\n  output y = avgpool(x, 2, dilation=2)\n}\n"
    with pytest.raises(ExportError) as err:
        export_model(netlang.compile(spec), {}, opset=17)
    assert str(err.value).startswith(
        "<string>:3:14: export error: a dilated avgpool needs ONNX opset 19 or newer "
        "(AveragePool takes dilations from 19), not 17")
    assert "hint: export with --opset 19" in str(err.value)


def test_a_dilated_window_whose_taps_all_miss_the_image_is_an_error():
    spec = ("network p {\n  input x: f32[N, 1, 8, 3]\n"
            "  output y = maxpool(x, 2, stride=1, dilation=3, padding=same)\n}\n")
    with pytest.raises(netlang.NetlangError) as err:
        netlang.compile(spec)
    assert ("maxpool: with dilation 3 a window's 2 taps all fall in the padding of the 1-cell "
            "height" in str(err.value))
