"""Lowering: layers expand to the right parameters and ops, with exact shapes and names."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import netlang
from netlang.frontend import load_spec
from netlang.ir.types import DType

SPECS = Path(__file__).resolve().parents[2] / "specs"


def spec(path: str):
    return load_spec((SPECS / path).read_text(), f"specs/{path}")


def net(*lines: str, head: str = "input x: f32[N, 28, 28, 1]"):
    text = "network n {\n  " + head + "\n" + "".join(f"  {line}\n" for line in lines) + "}\n"
    return load_spec(text, "t.net")


def shape_str(graph, name: str) -> str:
    return str(graph.type_of(graph.resolve(name)))


def ops_of(graph) -> list[str]:
    return [node.op for node in graph]


def layer(graph, name: str):
    (record,) = [r for r in graph.spec.layers if r.name == name]
    return record


# -- the seed networks ---------------------------------------------------------------------

def test_mnist_shapes_follow_the_seed():
    graph = spec("mnist.net")
    shapes = [str(graph.type_of(r.output)) for r in graph.spec.layers
              if r.kind in ("conv2d", "maxpool", "flatten", "dense")]
    assert shapes == ["f32[N,24,24,32]", "f32[N,12,12,32]", "f32[N,8,8,64]", "f32[N,4,4,64]",
                      "f32[N,1024]", "f32[N,1024]", "f32[N,10]"]
    assert shape_str(graph, "probs") == "f32[N,10]"
    assert shape_str(graph, "pred") == "i64[N]"


def test_mnist_has_the_seeds_parameters():
    graph = spec("mnist.net")
    sizes = {name: graph.type_of(nid).shape for name, nid in graph.params.items()}
    assert sizes == {"conv1/W": (5, 5, 1, 32), "conv1/b": (32,), "conv2/W": (5, 5, 32, 64),
                     "conv2/b": (64,), "dense1/W": (1024, 1024), "dense1/b": (1024,),
                     "dense2/W": (1024, 10), "dense2/b": (10,)}
    assert sum(math.prod(s) for s in sizes.values()) == 1_111_946
    assert graph.nodes[graph.params["conv1/W"]].attrs["init"] == ("glorot_uniform",)
    assert graph.nodes[graph.params["conv1/b"]].attrs["init"] == ("zeros",)


def test_mnist_roles():
    graph = spec("mnist.net")
    assert list(graph.outputs) == ["probs", "pred", "xent", "accuracy"]
    assert graph.loss == "xent" and graph.metrics == ["accuracy"]
    assert list(graph.inputs) == ["image", "label"]
    assert {"h", "logits", "probs", "pred", "xent", "accuracy"} <= set(graph.values)


def test_mnist_train_section():
    train = spec("mnist.net").spec.train
    assert {k: v for k, v in train.items() if k != "spans"} == {
        "data": {"name": "mnist", "args": {"validation": 5000}, "span": train["data"]["span"]},
        "optimizer": {"name": "adam", "args": {"lr": 1e-4},
                      "span": train["optimizer"]["span"]},
        "batch": 64, "epochs": 20, "seed": 123}
    assert train["spans"]["optimizer.lr"].line == 22


def test_mnist_small_flattens_a_symbolic_batch():
    graph = spec("mnist_small.net")
    assert str(graph.type_of(layer(graph, "flatten1").output)) == "f32[N,392]"
    assert shape_str(graph, "logits") == "f32[N,10]"


def test_srcnn_resizes_inside_the_graph():
    graph = spec("srcnn.net")
    resizes = [n for n in graph if n.op == "resize"]
    assert [(n.attrs["size"], n.attrs["method"], str(n.type)) for n in resizes] == [
        ((7, 7), "bicubic", "f32[N,7,7,1]"), ((28, 28), "nearest", "f32[N,28,28,1]")]
    assert list(graph.outputs) == ["prediction", "low_res", "l2"]
    assert shape_str(graph, "prediction") == "f32[N,28,28,1]"


def test_calc_grad_is_typed_like_x():
    graph = spec("calc.net")
    grad = graph.nodes[graph.outputs["g"]]
    assert grad.op == "grad" and str(grad.type) == "f32[]"


def test_every_node_of_every_spec_has_a_span():
    for path in sorted(SPECS.glob("*.net")):
        graph = spec(path.name)
        assert [n.id for n in graph if n.span is None] == [], path.name


# -- spans and records ---------------------------------------------------------------------

def test_all_nodes_of_one_layer_carry_its_span():
    graph = spec("mnist.net")
    dense1 = layer(graph, "dense1")
    spans = {(graph.nodes[i].span.line, graph.nodes[i].span.col) for i in dense1.nodes}
    assert spans == {(11, 19)}
    assert [graph.nodes[i].op for i in dense1.nodes] == ["param", "param", "matmul", "add"]


def test_layers_are_named_per_kind_unless_named():
    graph = net("h = x |> conv2d(4, kernel=3) |> conv2d(4, kernel=3, name=stem)"
                " |> conv2d(4, kernel=3) |> flatten |> dense(10)")
    names = [r.name for r in graph.spec.layers]
    assert names == ["x", "conv1", "stem", "conv2", "flatten1", "dense1"]
    assert {"stem/W", "stem/b", "conv2/W"} <= set(graph.params)


# -- layers --------------------------------------------------------------------------------

def test_dense_with_activation_and_without_bias():
    graph = net("h = x |> flatten |> dense(16, activation=tanh, use_bias=false, init=he_normal)")
    assert list(graph.params) == ["dense1/W"]
    assert graph.nodes[graph.params["dense1/W"]].attrs["init"] == ("he_normal",)
    assert ops_of(graph)[-2:] == ["matmul", "tanh"]


def test_conv_attributes_use_tensorflow_names():
    graph = net("h = x |> conv2d(8, kernel=(3, 5), stride=2, padding=same, dilation=1)")
    (conv,) = [n for n in graph if n.op == "conv2d"]
    assert conv.attrs == {"stride": (2, 2), "padding": "SAME", "dilation": (1, 1),
                          "groups": None}     # one group: None keeps it out of the IR text
    assert str(conv.type) == "f32[N,14,14,8]"
    assert graph.type_of(graph.params["conv1/W"]).shape == (3, 5, 1, 8)


def test_conv2d_transpose_kernel_layout():
    graph = net("h = x |> conv2d_transpose(6, kernel=3, stride=2, padding=same)")
    assert graph.type_of(graph.params["deconv1/W"]).shape == (3, 3, 6, 1)
    assert shape_str(graph, "h") == "f32[N,56,56,6]"


def test_pools():
    graph = net("a = x |> maxpool(3, stride=2)", "b = x |> avgpool(2, padding=same)",
                "c = x |> global_avgpool")
    assert [shape_str(graph, n) for n in "abc"] == [
        "f32[N,13,13,1]", "f32[N,14,14,1]", "f32[N,1]"]
    (pool,) = [n for n in graph if n.op == "maxpool"]
    assert pool.attrs == {"window": (3, 3), "stride": (2, 2), "padding": "VALID",
                          "dilation": None}


def test_batchnorm_parameters_state_and_updates():
    graph = net("h = x |> conv2d(8, kernel=3) |> batchnorm")
    assert {"bn1/gamma", "bn1/beta"} <= set(graph.params)
    assert list(graph.state) == ["bn1/moving_mean", "bn1/moving_variance"]
    inits = [graph.nodes[graph.state[s]].attrs["init"] for s in graph.state]
    assert inits == [("zeros",), ("ones",)]
    assert set(graph.updates) == {"bn1/moving_mean", "bn1/moving_variance"}
    means = [n for n in graph if n.op == "mean"]
    assert [n.attrs["axis"] for n in means] == [(0, 1, 2)]
    (var,) = [n for n in graph if n.op == "batch_variance"]
    assert var.inputs[1] == means[0].id and var.attrs == {"axis": 3}
    assert shape_str(graph, "h") == "f32[N,26,26,8]"


def test_batchnorm_on_a_middle_axis_broadcasts_along_it():
    graph = net("h = batchnorm(x, axis=1)", head="input x: f32[N, 3, 5, 5]")
    assert graph.type_of(graph.params["bn1/gamma"]).shape == (3,)
    assert shape_str(graph, "h") == "f32[N,3,5,5]"


def test_one_mode_node_switches_every_batchnorm_and_dropout():
    graph = spec("fashion.net")
    modes = [n.id for n in graph if n.op == "mode"]
    assert len(modes) == 1
    selects = [n for n in graph if n.op == "select"]
    # Per batchnorm: the two statistics and their two moving-average updates; one dropout.
    assert len(selects) == 4 * 4 + 1
    assert all(n.inputs[0] == modes[0] for n in selects)


def test_dropout_keeps_x_in_evaluation():
    graph = net("h = x |> dropout(0.25)")
    select = graph.nodes[graph.values["h"]]
    x = graph.inputs["x"]
    assert select.op == "select" and select.inputs[2] == x
    mul = graph.nodes[select.inputs[1]]
    mask = graph.nodes[mul.inputs[1]]
    assert (mul.op, mask.op, mask.attrs) == ("mul", "dropout_mask", {"rate": 0.25})


def test_layers_given_weights_use_the_primitive_op():
    graph = net("param W: f32[3, 3, 1, 2] = normal(0.1)",
                "h = conv2d(x, flip(W, axis=(0, 1)), padding=same)")
    assert list(graph.params) == ["W"]
    assert graph.nodes[graph.params["W"]].attrs["init"] == ("normal", 0.1)
    assert [n.op for n in graph][-2:] == ["flip", "conv2d"]
    assert shape_str(graph, "h") == "f32[N,28,28,2]"


def test_seed_true_convolution_is_conv2d_with_a_flipped_kernel():
    """Seed 004's 2-D example, p=1: conv2d of X with W flipped on both spatial axes."""
    model = netlang.compile("network conv {\n  input X: f32[1, 4, 4, 1]\n"
                            "  input W: f32[3, 3, 1, 1]\n"
                            "  output Y = conv2d(X, flip(W, axis=(0, 1)), padding=same)\n}\n")
    x = np.array([[1, 3, 2, 4], [5, 6, 1, 3], [1, 2, 0, 2], [3, 4, 3, 2]], np.float32)
    w = np.array([[1, 0, 3], [1, 2, 1], [0, 1, 1]], np.float32)
    y = model.session().run("Y", {"X": x.reshape(1, 4, 4, 1), "W": w.reshape(3, 3, 1, 1)})
    assert y.reshape(4, 4).tolist() == [[11, 25, 32, 13], [19, 25, 24, 13],
                                        [13, 28, 25, 17], [11, 17, 14, 9]]


# -- blocks and sharing --------------------------------------------------------------------

RESIDUAL = """\
block res(x, c) {
  a = x |> conv2d(c, kernel=3, padding=same)
  return a + x
}
"""


def with_block(*lines: str):
    text = RESIDUAL + "network n {\n  input x: f32[N, 8, 8, 4]\n" + "".join(
        f"  {line}\n" for line in lines) + "}\n"
    return load_spec(text, "t.net")


def test_each_block_use_gets_its_own_scope_and_parameters():
    graph = with_block("h = res(x, 4)", "k = h |> res(4)")
    assert list(graph.params) == ["res1/conv1/W", "res1/conv1/b", "res2/conv1/W",
                                  "res2/conv1/b"]
    assert {"res1/a", "res2/a", "h", "k"} <= set(graph.values)


def test_repeat_chains_a_block():
    graph = with_block("h = repeat(res, 3, x, 4)")
    assert [p for p in graph.params if p.endswith("/W")] == [
        "res1/conv1/W", "res2/conv1/W", "res3/conv1/W"]
    add3 = layer(graph, "res3/add1")
    assert add3.output == graph.values["h"]


def test_repeat_chains_a_layer():
    graph = net("h = repeat(dense, 3, flatten(x), 16)")
    assert [p for p in graph.params if p.endswith("/W")] == ["dense1/W", "dense2/W", "dense3/W"]
    assert shape_str(graph, "h") == "f32[N,16]"


def test_share_reuses_a_layers_parameters():
    graph = net("a = x |> flatten |> dense(10, name=fc1)",
                "b = x |> flatten |> dense(10, share=fc1)")
    assert list(graph.params) == ["fc1/W", "fc1/b"]
    matmuls = [n for n in graph if n.op == "matmul"]
    assert matmuls[0].inputs[1] == matmuls[1].inputs[1] == graph.params["fc1/W"]


def test_share_reuses_a_blocks_parameters():
    graph = with_block("h = res(x, 4)", "k = res(h, 4, share=res1)")
    assert list(graph.params) == ["res1/conv1/W", "res1/conv1/b"]
    assert len([n for n in graph if n.op == "conv2d"]) == 2


def test_shared_batchnorm_updates_its_statistics_once():
    graph = net("a = x |> batchnorm", "b = x |> batchnorm(share=bn1)")
    assert list(graph.state) == ["bn1/moving_mean", "bn1/moving_variance"]
    assert len(graph.updates) == 2


# -- expressions ---------------------------------------------------------------------------

def test_numbers_become_constants_of_the_right_dtype():
    graph = net("a = 5.0", "b = x * 2", "c = label + 1", "d = 7 * 7 * 8",
                head="input x: f32[N]\n  input label: i32[N]")
    a = graph.nodes[graph.values["a"]]
    assert (a.op, str(a.type), float(a.attrs["value"])) == ("const", "f32[]", 5.0)
    assert shape_str(graph, "b") == "f32[N]" and shape_str(graph, "c") == "i32[N]"
    two = graph.nodes[graph.nodes[graph.values["b"]].inputs[1]]
    assert two.type.dtype is DType.f32
    d = graph.nodes[graph.values["d"]]
    assert (d.op, int(d.attrs["value"])) == ("const", 392)


def test_operators_lower_to_ops():
    graph = net("y = -(a @ b) ** 2 / 4 - a @ b", head="input a: f32[N, 3]\n  input b: f32[3, 3]")
    assert [n.op for n in graph if n.op not in ("input", "const")] == [
        "matmul", "square", "neg", "div", "matmul", "sub"]


def test_primitive_ops_take_attributes_by_position_or_name():
    graph = net("a = reshape(x, (-1, 7 * 7 * 16))", "b = one_hot(label, 10)",
                "c = cast(label, f32)", "d = sum(x, axis=(1, 2), keepdims=true)",
                "e = resize(x, (7, 7), method=bicubic)",
                head="input x: f32[N, 28, 28, 1]\n  input label: i32[N]")
    assert [shape_str(graph, n) for n in "abcde"] == [
        "f32[N,784]", "f32[N,10]", "f32[N]", "f32[N,1,1,1]", "f32[N,7,7,1]"]
    assert graph.nodes[graph.values["e"]].attrs == {"size": (7, 7), "method": "bicubic",
                                                    "coordinates": None, "nearest_mode": None}


def test_symbolic_dims_other_than_the_batch():
    graph = net("y = x |> relu |> mean(axis=1)", head="input x: f32[N, T, 16]")
    assert shape_str(graph, "y") == "f32[N,16]"


def test_explicit_parameters_are_named_values():
    graph = net("param W: f32[784, 10] = zeros", "param b: f32[10] = 0.1",
                "y = flatten(x) @ W + b")
    assert graph.nodes[graph.params["W"]].attrs["init"] == ("zeros",)
    assert graph.nodes[graph.params["b"]].attrs["init"] == ("constant", 0.1)
    assert shape_str(graph, "y") == "f32[N,10]"


def test_loss_without_a_name_is_called_loss():
    graph = net("loss = mean(x)")
    assert graph.loss == "loss" and graph.outputs["loss"] == graph.values["loss"]
