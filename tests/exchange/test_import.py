"""netlang import: ONNX models come in as readable specs whose outputs equal onnxruntime's;
every shipped spec survives export then import; what does not map is listed, node by node."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netlang
from netlang.cli import main
from netlang.errors import UsageError
from netlang.exchange import onnx_lib
from netlang.exchange.export import export_model
from netlang.exchange.import_onnx import (
    build_session,
    import_model,
    largest_difference,
    random_feeds,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

from tests.exchange.test_export import SPECS, trained_like


@pytest.mark.parametrize("spec", SPECS)
def test_export_then_import_gives_the_same_outputs(spec):
    model = netlang.compile(f"specs/{spec}")
    session = trained_like(model)
    data = onnx_lib.checked_bytes(export_model(model, session.state.to_numpy()))
    imported = import_model(onnx_lib.read(data))
    _, back_session = build_session(imported, "back.net")
    feeds = random_feeds(onnx_lib.read(data), seed=4, size=3)
    names = list(imported.outputs)
    want = dict(zip(names, session.run(names, feeds)))
    assert largest_difference(back_session, imported, want, feeds) < 1e-4
    # netlang's own layout comes back without a transpose
    assert "transpose(" not in imported.spec or spec == "srcnn.net"


def _nchw_classifier(path: Path, rng) -> bytes:
    """What PyTorch exports for a small NCHW CNN: Conv(pads 1) -> Relu -> MaxPool ->
    BatchNormalization -> Flatten -> Gemm(transB) -> Softmax."""
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(a.astype(np.float32), name) for name, a in [
        ("conv.weight", w), ("conv.bias", rng.standard_normal(4)),
        ("bn.weight", rng.uniform(0.5, 2, 4)), ("bn.bias", rng.standard_normal(4)),
        ("bn.running_mean", rng.standard_normal(4)), ("bn.running_var", rng.uniform(0.5, 2, 4)),
        ("fc.weight", rng.standard_normal((5, 4 * 4 * 4))), ("fc.bias", rng.standard_normal(5))]]
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"],
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="/conv/Conv"),
        helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["p", "bn.weight", "bn.bias", "bn.running_mean",
                                                "bn.running_var"], ["b"], epsilon=1e-5),
        helper.make_node("Flatten", ["b"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "torch_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path.write_bytes(model.SerializeToString())
    return model.SerializeToString()


def test_an_nchw_model_gets_one_transpose_after_its_input_and_layers(tmp_path, capsys):
    _nchw_classifier(tmp_path / "cnn.onnx", np.random.default_rng(0))
    out = tmp_path / "cnn.net"
    assert main(["import", str(tmp_path / "cnn.onnx"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out} (7 ONNX nodes) ")
    assert f"and {tmp_path / 'cnn.ckpt'} (8 arrays); outputs equal onnxruntime's" in printed
    spec = out.read_text()
    assert spec == (
        "network torch_cnn {\n"
        "  input input_2: f32[N, 3, 8, 8]\n"
        "\n"
        "  output probs = input_2\n"
        "    |> transpose(perm=(0, 2, 3, 1))\n"
        "    |> conv2d(4, kernel=3, padding=same)\n"
        "    |> relu\n"
        "    |> maxpool(window=2)\n"
        "    |> batchnorm(epsilon=1e-05)\n"
        "    |> transpose(perm=(0, 3, 1, 2))\n"
        "    |> flatten\n"
        "    |> dense(5)\n"
        "    |> softmax\n"
        "}\n")
    model = netlang.compile(out)
    assert sorted(model.graph.params) == ["bn1/beta", "bn1/gamma", "conv1/W", "conv1/b",
                                          "dense1/W", "dense1/b"]


def test_predict_runs_an_imported_model(tmp_path, capsys):
    _nchw_classifier(tmp_path / "cnn.onnx", np.random.default_rng(1))
    assert main(["import", str(tmp_path / "cnn.onnx"), "-o", str(tmp_path / "cnn.net"),
                 "--checkpoint", str(tmp_path / "w.ckpt")]) == 0
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(tmp_path / "cnn.net"), "--checkpoint", str(tmp_path / "w.ckpt"),
                 "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "p.npy")]) == 0
    want = onnx_lib.run(tmp_path / "cnn.onnx", {"input": x})["probs"]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), want, rtol=1e-5, atol=1e-6)


def test_every_node_that_does_not_map_is_listed_and_nothing_is_written(tmp_path, capsys):
    nodes = [helper.make_node("Acos", ["x"], ["a"], name="acos1"),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Asinh", ["b"], ["c"], name="asinh1"),
             helper.make_node("Pad", ["c", "pads"], ["y"], mode="reflect", name="pad1")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        [numpy_helper.from_array(np.array([0, 1, 0, 1], np.int64), "pads")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    assert main(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.net")]) == 1
    assert capsys.readouterr().err == (
        "usage error: 3 of the model's 4 nodes do not map to netlang:\n"
        "  'acos1' (Acos): netlang has no such op\n"
        "  'asinh1' (Asinh): netlang has no such op\n"
        "  'pad1' (Pad): mode=reflect (netlang pads with a constant)\n"
        "hint: netlang import maps what netlang computes the same way; not yet: Acos, Asinh, "
        "Pad\n")
    assert not (tmp_path / "m.net").exists() and not (tmp_path / "m.ckpt").exists()


def test_a_file_that_is_not_onnx_is_named(tmp_path, capsys):
    (tmp_path / "bad.onnx").write_bytes(b"\x07not a model at all")
    assert main(["import", str(tmp_path / "bad.onnx"), "-o", str(tmp_path / "m.net")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"usage error: '{tmp_path / 'bad.onnx'}' is not an ONNX model (")
    assert main(["import", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "m.net")]) == 1
    assert capsys.readouterr().err == (
        f"usage error: cannot read '{tmp_path / 'none.onnx'}': No such file or directory\n")


def test_symbolic_image_sizes_import_with_same_padding():
    model = netlang.compile("specs/filters.net")
    data = onnx_lib.checked_bytes(export_model(model, model.session().state.to_numpy()))
    imported = import_model(onnx_lib.read(data))
    assert "input image: f32[N, H, W, 1]" in imported.spec
    _, session = build_session(imported, "filters.net")
    x = np.random.default_rng(0).standard_normal((1, 5, 7, 1)).astype(np.float32)
    ref = onnx_lib.run(data, {"image": x})
    assert largest_difference(session, imported, ref, {"image": x}) < 1e-6


def test_weights_that_do_not_fit_are_an_importer_bug_not_a_traceback():
    model = netlang.compile("specs/spiral.net")
    data = onnx_lib.checked_bytes(export_model(model, model.session().state.to_numpy()))
    imported = import_model(onnx_lib.read(data))
    imported.arrays["dense1/W"] = np.zeros((3, 3), np.float32)
    with pytest.raises(UsageError, match="do not fit the spec written for them .* dense1/W"):
        build_session(imported, "spiral.net")


@pytest.mark.parametrize("attrs", [
    {"strides": [2, 2]},
    {"strides": [2, 2], "pads": [1, 0, 1, 1], "output_padding": [1, 1]},
    {"strides": [3, 2], "dilations": [2, 1], "pads": [2, 1, 0, 0]},
])
def test_a_transposed_convolution_with_weights_becomes_a_layer(attrs):
    """ConvTranspose with constant weights and bias: netlang's conv2d_transpose layer
    (VALID), then output_padding and pads, equal to onnxruntime."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4, 3, 2)).astype(np.float32)       # [cin, cout, kh, kw]
    b = rng.standard_normal(4).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], kernel_shape=[3, 2],
                            **attrs)
    graph = helper.make_graph(
        [node], "deconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    og = onnx_lib.read(data.SerializeToString())
    imported = import_model(og)
    assert "conv2d_transpose(" in imported.spec and "deconv1/W" in imported.arrays
    _, session = build_session(imported, "deconv.net")
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    ref = onnx_lib.run(data.SerializeToString(), {"x": x})
    assert largest_difference(session, imported, ref, {"x": x}) < 1e-5


def test_a_split_of_channels_held_channels_last_is_unpads_of_them():
    """Split over the channels of a convolution's output (held NHWC inside the spec): each
    part an unpad along the held channel axis, equal to onnxruntime."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Split", ["c", "sizes"], ["a", "b"], axis=1)]
    graph = helper.make_graph(
        nodes, "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 6, 5])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b")],
        [numpy_helper.from_array(w, "w"),
         numpy_helper.from_array(np.array([2, 4], np.int64), "sizes")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    imported = import_model(onnx_lib.read(data.SerializeToString()))
    assert imported.spec.count("unpad(") == 2
    _, session = build_session(imported, "split.net")
    x = rng.standard_normal((2, 2, 6, 5)).astype(np.float32)
    ref = onnx_lib.run(data.SerializeToString(), {"x": x})
    assert largest_difference(session, imported, ref, {"x": x}) < 1e-5


def test_relu6_clip_with_constant_bounds_becomes_numbers():
    """PyTorch exports ReLU6 as Clip with constant min and max inputs."""
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])]
    graph = helper.make_graph(
        nodes, "relu6", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
         numpy_helper.from_array(np.array(6.0, np.float32), "hi")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    imported = import_model(onnx_lib.read(data.SerializeToString()))
    assert "  output y = minimum(maximum(x, 0.0), 6.0)\n" in imported.spec
    _, session = build_session(imported, "relu6.net")
    x = np.linspace(-4, 10, 10, dtype=np.float32).reshape(2, 5)
    ref = onnx_lib.run(data.SerializeToString(), {"x": x})
    assert largest_difference(session, imported, ref, {"x": x}) == 0.0


@pytest.mark.parametrize("op_type", ["ReduceL1", "ReduceL2", "ReduceSumSquare",
                                     "ReduceLogSum"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_norm_like_reductions_with_constant_axes(op_type, keepdims):
    node = helper.make_node(op_type, ["x", "axes"], ["y"], keepdims=keepdims)
    graph = helper.make_graph(
        [node], "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1, -1], np.int64), "axes")])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    imported = import_model(onnx_lib.read(data.SerializeToString()))
    _, session = build_session(imported, "r.net")
    x = np.random.default_rng(0).uniform(0.5, 2.0, (2, 3, 4)).astype(np.float32)
    ref = onnx_lib.run(data.SerializeToString(), {"x": x})
    assert largest_difference(session, imported, ref, {"x": x}) < 1e-5
