"""netlang export: every shipped spec leaves as a checked ONNX model that onnxruntime runs to
the same outputs as netlang; what cannot be exported is a clear error and writes nothing."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import netlang
from netlang.cli import main
from netlang.errors import ExportError
from netlang.exchange import onnx_lib
from netlang.exchange.export import export_model
from netlang.exchange.import_onnx import build_session, import_model, largest_difference

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SPECS = sorted(p.name for p in Path("specs").glob("*.net") if p.name != "counter.net")


def trained_like(model, seed: int = 1):
    """A session whose variables look trained: random weights from the spec's initializers,
    and batchnorm statistics away from their initial zeros and ones."""
    session = model.session(seed=seed)
    rng = np.random.default_rng(seed)
    arrays = session.state.to_numpy()
    for name, value in arrays.items():
        if name.endswith(("moving_variance", "gamma")):
            arrays[name] = rng.uniform(0.5, 2.0, value.shape).astype(value.dtype)
        elif name.endswith(("moving_mean", "beta", "/b")):
            arrays[name] = rng.normal(0.0, 0.5, value.shape).astype(value.dtype)
    session.state.load(arrays)
    return session


def feeds_for(described, rng, sizes=None):
    feeds = {}
    for v in described.inputs:
        shape = [(sizes or {}).get(d, 3) if isinstance(d, str) else d for d in v.shape]
        feeds[v.name] = rng.standard_normal(shape).astype(v.dtype)
    return feeds


def assert_same_outputs(model, session, data: bytes, feeds) -> None:
    got = onnx_lib.run(data, feeds)
    want = session.run(list(got), feeds)
    for (name, ours_onnx), ours in zip(got.items(), want):
        ours = np.asarray(ours)
        assert ours_onnx.shape == ours.shape, name
        assert ours_onnx.dtype == ours.dtype, name
        if ours.dtype.kind == "f":
            np.testing.assert_allclose(ours_onnx, ours, rtol=1e-4, atol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(ours_onnx, ours, err_msg=name)


@pytest.mark.parametrize("spec", SPECS)
def test_every_shipped_spec_exports_checks_and_runs_the_same(spec):
    model = netlang.compile(f"specs/{spec}")
    session = trained_like(model)
    described = export_model(model, session.state.to_numpy())
    data = onnx_lib.checked_bytes(described)    # checker (full) and strict shape inference
    sizes = {"H": 9, "W": 11} if spec == "filters.net" else None
    assert_same_outputs(model, session, data, feeds_for(described, np.random.default_rng(0),
                                                        sizes))
    assert [v.name for v in described.outputs] == [
        n for n in model.graph.outputs if n != model.graph.loss
        and n not in model.graph.metrics]


def test_mnist_runs_nchw_between_one_transpose_at_each_end():
    model = netlang.compile("specs/mnist.net")
    described = export_model(model, model.session().state.to_numpy())
    ops = [n.op_type for n in described.nodes]
    assert ops == ["Transpose", "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool",
                   "Transpose", "Reshape", "Gemm", "Relu", "Gemm", "Softmax", "ArgMax"]
    assert described.initializers["conv1/W"].shape == (32, 1, 5, 5)     # [cout,cin,kh,kw]
    assert [(v.name, v.shape) for v in described.inputs] == [("image", ("N", 28, 28, 1))]
    assert [(v.name, v.shape) for v in described.outputs] == [("probs", ("N", 10)),
                                                              ("pred", ("N",))]


@pytest.mark.parametrize("fold", [True, False])
def test_batchnorm_folds_into_the_conv_before_it_or_stays(fold):
    model = netlang.compile("specs/mnist_fast.net")
    session = trained_like(model)
    described = export_model(model, session.state.to_numpy(), fold_batchnorm=fold)
    norms = sum(n.op_type == "BatchNormalization" for n in described.nodes)
    convs = sum(n.op_type == "Conv" for n in described.nodes)
    assert convs == 4
    assert norms == (1 if fold else 5)           # the dense layer's batchnorm stays
    data = onnx_lib.checked_bytes(described)
    assert_same_outputs(model, session, data, feeds_for(described, np.random.default_rng(2)))


@pytest.mark.parametrize("opset", [13, 18, onnx_lib.max_opset()])
def test_other_opsets_check_and_run(opset):
    model = netlang.compile("specs/residual.net")        # ReduceMean: axes move at 18
    session = trained_like(model)
    described = export_model(model, session.state.to_numpy(), opset=opset)
    data = onnx_lib.checked_bytes(described)
    assert_same_outputs(model, session, data, feeds_for(described, np.random.default_rng(3)))


def test_cli_writes_a_model_with_a_checkpoints_weights(tmp_path, capsys):
    model = netlang.compile("specs/mnist_small.net")
    session = trained_like(model, seed=5)
    session.save(tmp_path / "w.ckpt")
    out = tmp_path / "small.onnx"
    assert main(["export", "specs/mnist_small.net", "--checkpoint", str(tmp_path / "w.ckpt"),
                 "-o", str(out), "--batch", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out} (opset 17, ")
    assert printed.rstrip().endswith("inputs image [2,28,28,1]; outputs probs, pred")
    x = np.random.default_rng(0).standard_normal((2, 28, 28, 1)).astype(np.float32)
    got = onnx_lib.run(out, {"image": x})
    np.testing.assert_allclose(got["probs"], session.run("probs", {"image": x}), rtol=1e-4,
                               atol=1e-6)


def test_cli_without_a_checkpoint_exports_the_initial_weights(tmp_path, capsys):
    out = tmp_path / "spiral.onnx"
    assert main(["export", "specs/spiral.net", "-o", str(out), "--fetch", "probs"]) == 0
    err = capsys.readouterr().err
    assert err == "note: no --checkpoint, so the weights are the spec's initial values " \
                  "(seed 0)\n"
    graph = onnx_lib.read(out)
    assert [v.name for v in graph.outputs] == ["probs"]
    assert [v.name for v in graph.inputs] == ["x"]


def test_an_assignment_is_an_error_at_its_line_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "counter.onnx"
    out.write_bytes(b"earlier")
    assert main(["export", "specs/counter.net", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "specs/counter.net:8:9: export error: 'x' is assigned here; an ONNX model holds " \
           "no variables to store into\n" in err
    assert "hint: export the outputs that do not assign (--fetch NAME)" in err
    assert out.read_bytes() == b"earlier"


def test_an_op_without_a_mapping_is_named_with_its_line(tmp_path):
    spec = tmp_path / "loss.net"
    spec.write_text("network l {\n  input x: f32[N, 4]\n  input y: f32[N, 4]\n"
                    "  e = softmax_cross_entropy(x, y)\n  output e\n}\n")
    model = netlang.compile(spec)
    with pytest.raises(ExportError) as err:
        export_model(model, {})
    assert str(err.value).startswith(f"{spec}:4:7: export error: op 'softmax_cross_entropy' "
                                     "has no ONNX mapping")


@pytest.mark.parametrize("argv, message", [
    (["-o", "m.txt"], "usage error: -o 'm.txt': name the file .onnx\n"),
    (["-o", "m.onnx", "--opset", "12"],
     "usage error: --opset 12 is not supported\nhint: give 13 to "),
    (["-o", "m.onnx", "--batch", "0"], "usage error: --batch must be at least 1, got 0\n"),
    (["-o", "m.onnx", "--fetch", "prob"],
     "usage error: no value named 'prob' to export\nhint: did you mean 'probs'?\n"),
])
def test_bad_arguments_are_usage_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = str(Path(__file__).resolve().parents[2] / "specs" / "spiral.net")
    assert main(["export", spec, *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_without_the_onnx_extra_export_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)       # import onnx raises ImportError
    assert main(["export", "specs/spiral.net", "-o", str(tmp_path / "s.onnx")]) == 1
    assert capsys.readouterr().err == (
        "usage error: this needs the 'onnx' package, which is not installed\n"
        "hint: install the ONNX extra: pip install 'netlang[onnx]' (onnx and onnxruntime)\n")


@pytest.mark.parametrize("opset", [17, 20])
def test_rounding_erf_and_gelu_export(tmp_path, opset):
    spec = tmp_path / "act.net"
    spec.write_text("network act {\n  input x: f32[N, 6]\n"
                    "  output a = floor(x) + ceil(x) * round(x)\n"
                    "  output b = erf(x)\n"
                    "  output c = gelu(x)\n"
                    "  output d = gelu(x, approximate=true)\n"
                    "  output e = argmin(round(x), select_last_index=true)\n"
                    "  output f = argmax(round(x), axis=0)\n}\n")
    lrn = tmp_path / "lrn.net"
    lrn.write_text("network alex {\n  input x: f32[N, 5, 5, 7]\n"
                   "  output y = lrn(x, size=5, alpha=0.01, beta=0.75, bias=2.0)\n"
                   "  output z = lrn(x, size=3)\n}\n")   # onnxruntime takes odd sizes
    model_lrn = netlang.compile(lrn)
    data = onnx_lib.checked_bytes(export_model(model_lrn, {}, opset=opset))
    x_img = np.random.default_rng(1).standard_normal((2, 5, 5, 7)).astype(np.float32) * 3
    assert_same_outputs(model_lrn, model_lrn.session(), data, {"x": x_img})
    model = netlang.compile(spec)
    described = export_model(model, {}, opset=opset)
    gelus = sum(n.op_type == "Gelu" for n in described.nodes)
    assert gelus == (2 if opset >= 20 else 0)
    data = onnx_lib.checked_bytes(described)
    x = np.linspace(-3.2, 3.2, 24, dtype=np.float32).reshape(4, 6)
    assert_same_outputs(model, model.session(), data, {"x": x})


def test_grouped_and_depthwise_convolutions_export_with_their_group():
    from tests.test_grouped_conv import SPEC
    model = netlang.compile(SPEC)
    session = trained_like(model)
    described = export_model(model, session.state.to_numpy())
    groups = [n.attrs.get("group", 1) for n in described.nodes if n.op_type == "Conv"]
    assert groups == [2, 6]
    assert described.initializers["dwconv1/W"].shape == (12, 1, 3, 3)
    data = onnx_lib.checked_bytes(described)
    assert_same_outputs(model, session, data, feeds_for(described, np.random.default_rng(5)))


def test_embeddings_top_k_tile_and_expand_export():
    from tests.test_index_ops import SPEC
    model = netlang.compile(SPEC)
    session = trained_like(model)
    described = export_model(model, session.state.to_numpy())
    assert {"Gather", "TopK", "Tile", "Expand"} <= set(described.op_types())
    data = onnx_lib.checked_bytes(described)
    ids = np.random.default_rng(0).integers(-20, 20, (4, 6)).astype(np.int32)
    assert_same_outputs(model, session, data, {"ids": ids})
    imported = import_model(onnx_lib.read(data))
    _, back = build_session(imported, "bag.net")
    want = dict(zip(imported.outputs, session.run(list(imported.outputs), {"ids": ids})))
    assert largest_difference(back, imported, want, {"ids": ids}) == 0.0


def test_conv1d_exports_as_a_conv_over_a_height_of_one():
    from tests.test_conv1d import SPEC
    model = netlang.compile(SPEC)
    session = trained_like(model)
    data = onnx_lib.checked_bytes(export_model(model, session.state.to_numpy()))
    assert_same_outputs(model, session, data,
                        {"x": np.random.default_rng(1).standard_normal((3, 12, 3))
                         .astype(np.float32)})


@pytest.mark.parametrize("coordinates", ["half_pixel", "pytorch_half_pixel", "align_corners"])
def test_resize_coordinate_modes_export_to_resize(coordinates):
    spec = ("network r {\n  input x: f32[N, 5, 6, 2]\n"
            f"  output a = resize(x, size=(9, 4), method=bilinear, coordinates={coordinates})\n"
            f"  output b = resize(x, size=(10, 12), method=nearest, coordinates={coordinates}, "
            "nearest_mode=round_prefer_ceil)\n}\n")
    model = netlang.compile(spec)
    described = export_model(model, {})
    assert [n.op_type for n in described.nodes].count("Resize") == 2
    data = onnx_lib.checked_bytes(described)
    x = np.random.default_rng(2).standard_normal((2, 5, 6, 2)).astype(np.float32)
    assert_same_outputs(model, model.session(), data, {"x": x})


@pytest.mark.parametrize("padding, stride", [("valid", 2), ("same", 2), ("same", 3),
                                             ("valid", 1)])
def test_transposed_convolutions_export_to_conv_transpose(padding, stride):
    spec = ("network up {\n  input x: f32[N, 5, 4, 3]\n"
            f"  output y = x |> conv2d_transpose(4, kernel=3, stride={stride}, "
            f"padding={padding}) |> relu\n}}\n")
    model = netlang.compile(spec)
    session = trained_like(model)
    described = export_model(model, session.state.to_numpy())
    assert "ConvTranspose" in described.op_types()
    data = onnx_lib.checked_bytes(described)
    assert_same_outputs(model, session, data, feeds_for(described, np.random.default_rng(2)))
    imported = import_model(onnx_lib.read(data))            # and back, as a layer
    _, back = build_session(imported, "up.net")
    x = np.random.default_rng(3).standard_normal((2, 5, 4, 3)).astype(np.float32)
    want = dict(zip(imported.outputs, session.run(list(imported.outputs), {"x": x})))
    assert largest_difference(back, imported, want, {"x": x}) < 1e-5


def test_windows_over_symbolic_sizes_export_and_come_back():
    """Strided SAME windows over a symbolic height and width export with auto_pad=SAME_UPPER
    (their padding depends on the size) and VALID ones with zero pads; onnxruntime and the
    re-imported spec agree with netlang at sizes the model never saw."""
    spec = ("network n {\n  input image: f32[N, H, W, 3]\n"
            "  output y = image |> conv2d(8, kernel=3, stride=2, padding=same) |> relu "
            "|> maxpool(2)\n"
            "  output z = image |> conv2d(8, kernel=3) |> avgpool(3, stride=2, padding=same)\n}\n")
    model = netlang.compile(spec)
    session = trained_like(model)
    described = export_model(model, session.state.to_numpy())
    assert {n.attrs.get("auto_pad") for n in described.nodes if n.op_type == "Conv"} == {
        "SAME_UPPER", None}
    data = onnx_lib.checked_bytes(described)
    for h, w in [(13, 10), (16, 9)]:
        assert_same_outputs(model, session, data, feeds_for(described, np.random.default_rng(h),
                                                            {"H": h, "W": w}))
    imported = import_model(onnx_lib.read(data))
    assert "input image: f32[N, H, W, 3]" in imported.spec
    _, back = build_session(imported, "n.net")
    x = np.random.default_rng(1).standard_normal((2, 11, 12, 3)).astype(np.float32)
    want = dict(zip(imported.outputs, session.run(list(imported.outputs), {"image": x})))
    assert largest_difference(back, imported, want, {"image": x}) < 1e-5
