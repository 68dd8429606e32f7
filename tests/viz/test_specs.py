"""Every shipped spec renders; mnist and residual are checked layer by layer."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import netlang
from netlang.viz import render
from tests.viz.svg import overlapping_texts, read_svg

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.net"))
LABEL = re.compile(r"^(?:(?P<name>[\w/]+): )?(?P<shape>scalar|[\w·]+(?:×[\w·]+)*)"
                   r"(?: \((?P<dtype>i32|i64|bool|f64)\))?$")


def compiled(spec: Path):
    return netlang.compile(spec)


def svg(model, tmp_path, name="net.svg", **options):
    return read_svg(render(model, tmp_path / name, **options).read_bytes())


def test_the_specs_are_there():
    assert {"mnist.net", "residual.net"} <= {p.name for p in SPECS}


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_spec_renders_with_each_layer_named_and_shapes_on_edges(spec, tmp_path):
    model = compiled(spec)
    pic = svg(model, tmp_path)
    titles = {d.texts[0] for d in pic.nodes.values() if d.texts}
    for record in model.graph.spec.layers:
        if record.kind not in ("input", "param", "grad"):   # grad() becomes ∇ boxes
            assert record.name.rpartition("/")[2] in titles, record.name
    shapes: dict[str, set[str]] = {}
    for name, t in model.types().items():
        text = "×".join(str(d) for d in t.shape) if t.shape else "scalar"
        shapes.setdefault(name.rpartition("/")[2], set()).add(text)
    for (src, dst), drawn in pic.edges.items():
        for d in drawn:
            if "data" not in d.classes:
                continue
            match = LABEL.match(" ".join(d.texts))
            assert match, (src, dst, d.texts)
            if match["name"]:
                assert match["shape"] in shapes[match["name"]], (src, dst, d.texts)
    op = svg(model, tmp_path, "ops.svg", detail="op")
    assert len(op.nodes) >= len(model.graph.params)
    if model.graph.loss is not None:
        train = svg(model, tmp_path, "train.svg", train=True)
        assert train.of_class("grad")


def test_mnist_layers_and_shapes(tmp_path):
    model = compiled(next(p for p in SPECS if p.name == "mnist.net"))
    pic = svg(model, tmp_path)
    expected = [("input image", "conv1", "N×28×28×1"), ("conv1", "relu1", "N×24×24×32"),
                ("relu1", "maxpool1", "N×24×24×32"), ("maxpool1", "conv2", "N×12×12×32"),
                ("conv2", "relu2", "N×8×8×64"), ("maxpool2", "flatten1", "N×4×4×64"),
                ("flatten1", "dense1", "N×1024"), ("dropout1", "dense2", "h: N×1024"),
                ("dense2", "softmax1", "logits: N×10"), ("input label", "equal1", "N (i32)"),
                ("argmax1", "output pred", "N (i64)"), ("mean1", "output xent", "scalar")]
    for src, dst, label in expected:
        assert pic.edge_labels(src, dst) == [label], (src, dst)
    assert pic.nodes["conv1"].texts == ["conv1", "conv2d 5×5, 32 filters, valid", "832 params"]
    assert pic.nodes["dense1"].texts == ["dense1", "dense, 1024 units", "1,049,600 params"]
    assert pic.nodes["dropout1"].texts == ["dropout1", "dropout 0.5"]
    assert pic.of_class("grad") == []
    assert set(pic.of_class("loss")) == {"output xent"}
    assert set(pic.of_class("metric")) == {"output accuracy"}
    assert set(pic.of_class("output")) == {"output probs", "output pred"}


def test_mnist_training_view_mirrors_every_layer_with_its_gradient(tmp_path):
    model = compiled(next(p for p in SPECS if p.name == "mnist.net"))
    pic = svg(model, tmp_path, train=True)
    for layer in ("conv1", "relu1", "maxpool1", "conv2", "flatten1", "dense1", "dense2"):
        assert "grad" in pic.nodes[f"∇{layer}"].classes
        assert pic.nodes[f"∇{layer}"].texts[0] == f"∇ {layer}"
    assert "→ ∇b, ∇W" in pic.nodes["∇conv1"].texts
    assert pic.edge_labels("∇maxpool1", "∇relu1") == ["N×24×24×32"]
    assert pic.edge_labels("∇dense1", "∇flatten1") == ["N×1024"]


def test_mnist_optimized_for_inference_drops_dropout(tmp_path):
    model = compiled(next(p for p in SPECS if p.name == "mnist.net"))
    pic = svg(model, tmp_path, optimized=True)
    assert "dropout1" not in pic.nodes
    assert "dropout1: 3 (dropout_mask, mul, select)" in pic.texts   # listed as gone
    assert "optimized for inference" in pic.texts


def test_residual_blocks_are_clusters_with_their_layers(tmp_path):
    model = compiled(next(p for p in SPECS if p.name == "residual.net"))
    path = render(model, tmp_path / "res.dot")
    source = path.read_text()
    for block in ("residual1", "residual2", "residual3"):
        assert f"subgraph cluster_{block} {{" in source
    pic = svg(model, tmp_path)
    assert pic.nodes["residual1/conv1"].texts == [
        "conv1", "conv2d 3×3, 16 filters, same", "2,320 params"]
    assert pic.nodes["residual1/bn1"].texts == ["bn1", "batchnorm", "32 params, 32 state"]
    assert pic.edge_labels("residual1/conv2", "residual1/add1") == ["r: N×28×28×16"]
    assert pic.edge_labels("conv1", "residual1/add1") == ["h: N×28×28×16"]
    assert pic.edge_labels("maxpool1", "conv2") == ["h1: N×14×14×16"]
    assert pic.edge_labels("global_avgpool1", "dense1") == ["N×32"]


@pytest.mark.parametrize("ext, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_mnist_renders_to_png_and_pdf(tmp_path, ext, magic):
    model = compiled(next(p for p in SPECS if p.name == "mnist.net"))
    assert render(model, tmp_path / f"m{ext}").read_bytes().startswith(magic)


def test_mnist_and_residual_read_top_to_bottom_without_overlapping_text(tmp_path):
    for name, chain in [("mnist.net", ["input image", "conv1", "relu1", "maxpool1", "conv2",
                                       "maxpool2", "flatten1", "dense1", "dropout1", "dense2",
                                       "softmax1", "output probs"]),
                        ("residual.net", ["conv1", "residual1/bn1", "residual1/conv2",
                                          "residual1/add1", "residual2/add1", "maxpool1",
                                          "residual3/add1", "global_avgpool1", "dense1"])]:
        model = compiled(next(p for p in SPECS if p.name == name))
        for options in ({}, {"train": True}):
            data = render(model, tmp_path / "flow.svg", **options).read_bytes()
            assert overlapping_texts(data) == [], (name, options)
            pic = read_svg(data)
            ys = [pic.nodes[key].y for key in chain]
            assert ys == sorted(ys), (name, options)


def test_the_overlap_check_can_fail():
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg"><text x="10" y="20" font-size="10">'
           b'N\xc3\x9724</text><text x="14" y="22" font-size="10">h: N\xc3\x9710</text></svg>')
    assert overlapping_texts(svg) == [("N×24", "h: N×10")]
