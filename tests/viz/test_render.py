"""Pictures as users get them: SVG written by Graphviz, read back as XML."""
from __future__ import annotations

from netlang.viz import build_training_graph, render_graph
from tests.viz.nets import mlp_graph, mnist_like_graph
from tests.viz.svg import read_svg


def svg_of(graph, tmp_path, detail="layer"):
    path = render_graph(graph, tmp_path / f"{graph.name}_{detail}.svg", detail)
    return read_svg(path.read_bytes())


def test_layer_svg_names_every_layer_and_labels_edges_with_shapes(tmp_path):
    pic = svg_of(mnist_like_graph(), tmp_path)
    for layer in ("conv1", "pool1", "conv2", "pool2", "dense1", "dropout1", "dense2"):
        assert "layer" in pic.nodes[layer].classes
        assert pic.nodes[layer].texts[0] == layer
    assert pic.edge_labels("input image", "conv1") == ["N×28×28×1"]
    assert pic.edge_labels("pool1", "conv2") == ["N×12×12×32"]
    assert pic.edge_labels("pool2", next(dst for src, dst in pic.edges if src == "pool2")) == [
        "N×4×4×64"]
    assert pic.edge_labels("dropout1", "dense2") == ["h: N×1024"]
    assert pic.nodes["conv1"].texts == ["conv1", "conv2d 5×5, 32 filters, valid", "832 params"]
    assert pic.of_class("input") == ["input image", "input label"]
    assert pic.of_class("loss") == ["output xent"]
    assert pic.of_class("output") == ["output probs"]


def test_gradient_view_has_gradient_boxes_and_forward_view_has_none(tmp_path):
    forward = svg_of(mlp_graph(), tmp_path)
    assert forward.of_class("grad") == []
    train = build_training_graph(mlp_graph())
    train.name = "mlp_train"
    for detail in ("layer", "op"):
        pic = svg_of(train, tmp_path, detail)
        assert len(pic.of_class("grad")) >= 4, detail
        assert any("grad" in d.classes for edges in pic.edges.values() for d in edges)
    pic = svg_of(train, tmp_path, "layer")
    assert pic.nodes["∇dense1"].texts[0] == "∇ dense1"


def test_op_svg_draws_params_as_their_own_kind(tmp_path):
    g = mnist_like_graph()
    pic = svg_of(g, tmp_path, "op")
    w = f"op{g.params['conv1/W']}"
    assert "param" in pic.nodes[w].classes and pic.nodes[w].texts == ["W", "5×5×1×32"]
    conv = next(n.id for n in g if n.op == "conv2d")
    assert pic.edge_labels(f"op{conv}", f"op{conv + 1}") == ["N×24×24×32"]
