"""Zero-size dimensions where they mean something: an input may declare or be fed a dim of 0
(an empty batch, a feature axis with no entries), every op then runs on empty arrays, and
reductions over an empty axis give their identities, as NumPy and ONNX define them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netlang
from netlang.ir.types import DType, TensorType
from netlang.ops.registry import REQUIRED, all_ops

SPECS = sorted(p for p in Path("specs").glob("*.net") if p.name != "counter.net")


def run(expr: str, x, decl: str = "f32[N, 0]"):
    model = netlang.compile(f"network z {{\n  input x: {decl}\n  output y = {expr}\n}}\n")
    return model.types()["y"], np.asarray(model.session().run("y", {"x": x}))


@pytest.mark.parametrize("expr, want", [
    ("sum(x, axis=1)", [0.0, 0.0]), ("prod(x, axis=1)", [1.0, 1.0]),
    ("max(x, axis=1)", [-np.inf, -np.inf]), ("min(x, axis=1)", [np.inf, np.inf]),
    ("mean(x, axis=1)", [np.nan, np.nan]),
])
def test_reducing_an_empty_axis_gives_the_identity(expr, want):
    t, y = run(expr, np.zeros((2, 0), np.float32))
    assert str(t) == "f32[N]"
    np.testing.assert_array_equal(y, np.array(want, np.float32))


@pytest.mark.parametrize("expr, shape", [
    ("x * 2 + 1", (2, 0)), ("softmax(x)", (2, 0)), ("flatten(reshape(x, [-1, 0, 1]))", (2, 0)),
    ("concat(x, x, axis=1)", (2, 0)), ("x @ reshape(x, [0, 3])", (2, 3)),
    ("dense(x, 4)", (2, 4)), ("reshape(x, [-1, 7])", (0, 7)),
])
def test_ops_run_on_an_axis_with_no_entries(expr, shape):
    _, y = run(expr, np.zeros((2, 0), np.float32))
    assert y.shape == shape
    if y.size:                                    # a product over nothing is zero
        assert not y.any() or expr.startswith("dense")


def test_gradients_through_empty_arrays_are_empty():
    _, g = run("grad(mean(x * x), x)", np.zeros((0, 3), np.float32), decl="f32[N, 3]")
    assert g.shape == (0, 3)
    _, g = run("grad(sum(max(x, axis=1)), x)", np.zeros((2, 0), np.float32))
    assert g.shape == (2, 0)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
@pytest.mark.parametrize("kernels", ["default", "numpy"])
def test_every_shipped_network_predicts_an_empty_batch(spec, kernels):
    """A batch of 0 rows runs through every layer (the library and generated kernels leave
    empty arrays to the reference kernels) and gives outputs with 0 rows."""
    model = netlang.compile(spec)
    graph = model.graph
    feeds = {}
    for name, nid in graph.inputs.items():
        t = graph.nodes[nid].type
        feeds[name] = np.zeros([d if isinstance(d, int) else 0 for d in t.shape],
                               t.dtype.numpy)
    names = [o for o in graph.outputs if graph.nodes[graph.outputs[o]].type.rank]
    for name, value in zip(names, model.session(kernels=kernels).run(names, feeds)):
        value = np.asarray(value)
        assert value.size == 0, name
        declared = graph.nodes[graph.outputs[name]].type.shape
        assert value.shape[1:] == tuple(d if isinstance(d, int) else 0
                                        for d in declared[1:]), name


def test_argmax_over_an_empty_axis_is_an_error_at_its_line():
    with pytest.raises(netlang.NetlangError) as err:
        run("argmax(x, axis=1)", np.zeros((2, 0), np.float32))
    assert str(err.value).startswith("<string>:3:14: shape error: argmax: axis 1 of f32[N,0] "
                                     "is empty, so it has no index to return")


def test_a_minus_one_beside_a_zero_must_be_the_batch_dim():
    with pytest.raises(netlang.NetlangError) as err:
        run("reshape(x, [0, -1])", np.zeros((2, 0), np.float32))
    assert "reshape: (0, -1) has a dim of 0, so its -1 could be any size" in str(err.value)


def test_a_parameter_must_hold_elements():
    with pytest.raises(netlang.NetlangError) as err:
        netlang.compile("network z {\n  param w: f32[0, 3] = zeros()\n  output y = w\n}\n")
    text = str(err.value)
    assert text.startswith("<string>:2:16: shape error: a dim must be positive, got 0")
    assert "hint: only an input may have a dim of 0" in text



def test_every_elementwise_op_maps_empty_arrays_to_empty_arrays():
    """Each elementwise op's shape rule and reference kernel agree on [2, 0] inputs."""
    checked = 0
    for op in all_ops().values():
        if not op.elementwise or op.arity is None or REQUIRED in op.attrs.values():
            continue
        types = [TensorType(DType.f32, (2, 0))] * op.arity
        try:
            out = op.shape(*types, **op.attrs)
        except netlang.NetlangError:              # one that takes other dtypes
            types = [TensorType(DType.bool, (2, 0))] + types[1:]
            try:
                out = op.shape(*types, **op.attrs)
            except netlang.NetlangError:
                continue
        got = np.asarray(op.kernel(np, *[np.zeros((2, 0), t.dtype.numpy) for t in types],
                                   **op.attrs))
        assert got.shape == out.shape == (2, 0), op.name
        checked += 1
    assert checked >= 30
