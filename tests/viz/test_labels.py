"""The words in boxes and on edges: shapes, attributes, what a layer is."""
from __future__ import annotations

from netlang.ir.types import DType, Sym, TensorType, sym
from netlang.viz.labels import layer_text, op_text, shape_text
from netlang.viz.units import group_units
from tests.viz.nets import mnist_like_graph


def test_shapes_read_with_times_signs_and_dtype_only_when_not_f32():
    assert shape_text(TensorType(DType.f32, (sym("N"), 24, 24, 32))) == "N×24×24×32"
    assert shape_text(TensorType(DType.f32, ())) == "scalar"
    assert shape_text(TensorType(DType.i64, (sym("N"),))) == "N (i64)"
    assert shape_text(TensorType(DType.f32, (Sym(("N",), 2), 3))) == "2·N×3"


def test_layers_are_described_by_their_main_op_and_attributes():
    g = mnist_like_graph()
    units = group_units(g).units
    text = {key: layer_text(g, u.nodes) for key, u in units.items() if u.scope}
    assert text == {
        "conv1": "conv2d 5×5, 32 filters, valid",
        "pool1": "maxpool 2×2",
        "conv2": "conv2d 5×5, 64 filters, valid",
        "pool2": "maxpool 2×2",
        "dense1": "dense, 1024 units",
        "dropout1": "dropout 0.5",
        "dense2": "dense, 10 units",
    }


def test_op_words_name_ir_ops_and_drop_default_attributes():
    g = mnist_like_graph()
    by_op = {n.op: n for n in g}
    assert op_text(g, by_op["reshape"], layer_words=False) == "reshape shape (-1, 1024)"
    assert op_text(g, by_op["reshape"]) == "flatten"
    assert op_text(g, by_op["dropout_mask"], layer_words=False) == "dropout_mask rate 0.5"
    assert op_text(g, by_op["relu"]) == "relu"


def test_every_box_and_edge_kind_has_a_style():
    from netlang.viz.diagram import BOX_KINDS, EDGE_KINDS
    from netlang.viz.dot import EDGE_STYLES, STYLES

    assert set(STYLES) == set(BOX_KINDS)
    assert set(EDGE_STYLES) == set(EDGE_KINDS)
