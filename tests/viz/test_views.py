"""The layer and op views of hand-built graphs: which boxes, edges and clusters they hold."""
from __future__ import annotations

from netlang.ir.graph import Graph
from netlang.viz import build_training_graph, diagram_of
from tests.viz.nets import N, f32, mlp_graph, mnist_like_graph, raw, raw_param


def edges_by_pair(diagram) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for e in diagram.edges:
        out.setdefault((e.src, e.dst), []).append(e.label)
    return out


def test_layer_view_has_one_box_per_layer_with_params_and_shapes_on_edges():
    d = diagram_of(mnist_like_graph(), "layer")
    boxes = d.boxes
    assert {k for k, b in boxes.items() if b.kind == "layer" and b.title.startswith(
        ("conv", "pool", "dense", "dropout"))} == {
        "conv1", "pool1", "conv2", "pool2", "dense1", "dropout1", "dense2"}
    assert boxes["conv1"].lines == ["conv2d 5×5, 32 filters, valid", "832 params"]
    assert boxes["dense1"].lines == ["dense, 1024 units", "1,048,576 params"]
    assert boxes["input image"].kind == "input" and boxes["input label"].kind == "input"
    assert boxes["output probs"].kind == "output" and boxes["output xent"].kind == "loss"
    edges = edges_by_pair(d)
    assert edges[("input image", "conv1")] == ["N×28×28×1"]
    relu1 = next(dst for (src, dst) in edges if src == "conv1")
    assert edges[("conv1", relu1)] == ["N×24×24×32"]
    assert edges[("dropout1", "dense2")] == ["h: N×1024"]
    assert edges[("input label", next(k for k, b in boxes.items()
                                      if b.title == "softmax_cross_entropy"))] == ["N (i32)"]
    assert not any(b.kind in ("param", "grad") for b in boxes.values())


def test_op_view_draws_every_node_in_a_cluster_per_scope():
    g = mnist_like_graph()
    d = diagram_of(g, "op")
    drawn = {k for k, b in d.boxes.items() if not b.small}
    expected = {f"op{n.id}" for n in g if n.op not in ("input", "mode")}
    assert expected <= drawn
    assert {"conv1", "pool1", "conv2", "pool2", "dense1", "dropout1", "dense2"} == set(d.clusters)
    w = d.boxes[f"op{g.params['conv1/W']}"]
    assert (w.kind, w.title, w.lines, w.cluster) == ("param", "W", ["5×5×1×32"], "conv1")
    conv = next(n for n in g if n.op == "conv2d")
    assert d.boxes[f"op{conv.id}"].cluster == "conv1"
    # The mode flag is drawn small beside its reader, not as a hub.
    assert [b.title for b in d.boxes.values() if b.small] == ["mode"]


def test_forward_view_has_no_gradient_boxes_and_training_view_has_one_per_layer():
    g = mlp_graph()
    assert "grad" not in diagram_of(g, "layer").kinds()
    assert "grad" not in diagram_of(g, "op").kinds()
    train = build_training_graph(g)
    d = diagram_of(train, "layer")
    grads = {k: b for k, b in d.boxes.items() if b.kind == "grad"}
    assert {b.title for b in grads.values()} == {"∇ dense1", "∇ dense2", "∇ norm1", "∇ h",
                                                 "∇ l2"}
    assert grads["∇dense1"].rank_with == "dense1"
    assert grads["∇dense2"].lines == ["4 gradient ops", "→ ∇b, ∇W"]
    # Parameter gradients are not drawn as outputs of their own.
    assert not any(k.startswith("output grad/") for k in d.boxes)
    op = diagram_of(train, "op")
    assert any(b.kind == "grad" for b in op.boxes.values())
    assert "∇ dense1" in op.clusters


def test_state_update_and_variables_stay_inside_their_layer():
    d = diagram_of(mlp_graph(), "layer")
    assert d.boxes["norm1"].lines == ["batchnorm", "4 state"]
    assert "norm1#2" not in d.boxes
    op = diagram_of(mlp_graph(), "op")
    assert [(e.label, e.constraint) for e in op.edges if e.kind == "update"] == [
        ("update", False)]


def test_a_scope_used_at_two_unconnected_places_gives_two_boxes_and_shared_params_show():
    g = Graph(name="twice")
    x = g.inputs["x"] = g.add("input", (), {}, f32(N, 4), name="x")
    w = raw_param(g, "fc1", "W", 4)
    a = raw(g, "mul", (x, w), f32(N, 4), "fc1")
    b = raw(g, "relu", (a,), f32(N, 4))
    c = raw(g, "mul", (b, w), f32(N, 4), "fc1")
    w2 = raw_param(g, "fc2", "W", 4)
    g.outputs["y"] = raw(g, "mul", (c, w2), f32(N, 4), "fc2")
    g.outputs["z"] = raw(g, "mul", (b, w), f32(N, 4), "fc3")   # shares fc1's W
    d = diagram_of(g, "layer")
    assert d.boxes["fc1"].title == "fc1" and d.boxes["fc1#2"].title == "fc1 (2)"
    assert d.boxes["fc1"].lines == ["mul", "4 params"]
    shared = [e for e in d.edges if e.dst == "fc3" and e.kind == "param"]
    assert [(e.src, e.label) for e in shared] == [("fc1", "fc1/W")]


def test_nested_scopes_make_nested_clusters():
    g = Graph(name="blocks")
    x = g.inputs["x"] = g.add("input", (), {}, f32(N, 4), name="x")
    h = raw(g, "relu", (x,), f32(N, 4), "residual1/bn1")
    h = raw(g, "neg", (h,), f32(N, 4), "residual1/conv1")
    g.outputs["y"] = raw(g, "add", (h, x), f32(N, 4), "residual1")
    d = diagram_of(g, "layer")
    assert set(d.clusters) == {"residual1"}
    assert d.boxes["residual1/bn1"].cluster == "residual1"
    assert d.boxes["residual1/bn1"].title == "bn1"
    op = diagram_of(g, "op")
    assert set(op.clusters) == {"residual1", "residual1/bn1", "residual1/conv1"}


def test_an_assignment_is_a_dashed_edge_back_to_its_variable():
    import netlang

    graph = netlang.compile("specs/counter.net").graph
    op = diagram_of(graph, "op")
    edges = [(e.src, e.dst, e.label, e.kind, e.constraint) for e in op.edges
             if e.label == "assign"]
    assert len(edges) == 1 and edges[0][2:] == ("assign", "update", False)
    assert op.boxes[edges[0][0]].lines == ["dec"] and op.boxes[edges[0][1]].kind == "state"
