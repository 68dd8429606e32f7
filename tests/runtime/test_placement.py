"""Device placement: ``on cpu { }`` / ``on gpu { }`` blocks, the placement pass's transfers,
and runs split over two backends (the GPU one a NumPy stand-in for CuPy, as in
test_backend.py) that equal the single-device run."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.cli import main
from netlang.errors import DeviceError, SpecError
from netlang.ir.graph import device_of
from netlang.model import Model
from netlang.passes.placement import place_on
from netlang.runtime.backend import get_backend
from netlang.train.optimizers import make_optimizer
from netlang.train.step import LR_INPUT, build_train_graph
from tests.runtime.test_backend import fresh_gpu_slot, numpy_as_gpu  # noqa: F401 (fixtures)

SPLIT = """network split {
  input x: f32[N, 6]
  input label: i32[N]
  on cpu {
    param a: f32[6, 8] = glorot_uniform()
    h = relu(x @ a)
  }
  on gpu {
    y = h |> dense(8) |> relu |> dense(3)
  }
  output probs = softmax(y)
  loss xent = mean(softmax_cross_entropy(y, label))
}
"""
# The same network with no placement: what every split run must equal.
WHOLE = SPLIT.replace("  on cpu {\n", "").replace("  on gpu {\n", "").replace("  }\n  output",
                                                                               "  output")
WHOLE = WHOLE.replace("    h = relu(x @ a)\n  }\n", "    h = relu(x @ a)\n")
FEEDS = {"x": np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32),
         "label": np.array([0, 1, 2, 1, 0], np.int32)}


def test_the_blocks_place_their_statements_and_nothing_else():
    assert "on " not in WHOLE
    graph = netlang.compile(SPLIT).graph
    devices = {graph.name_of(n.id) or n.op: device_of(n) for n in graph}
    assert devices["a"] == devices["h"] == "cpu"
    assert devices["y"] == devices["dense1/W"] == "gpu"
    assert devices["x"] is None and devices["probs"] is None
    text = netlang.compile(SPLIT).ir()
    assert "# on gpu <string>:9:" in text
    # where the ops run is not part of the network: checkpoints fit either way
    from netlang.runtime.checkpoint import network_hash
    assert network_hash(graph) == network_hash(netlang.compile(WHOLE).graph)


def test_nested_blocks_the_innermost_wins_and_block_uses_inherit():
    spec = """block twice(x) {
  on cpu {
    y = x * 2
  }
  return y + 1
}
network n {
  input x: f32[N, 2]
  on gpu {
    on cpu {
      a = x + 1
    }
    b = twice(a)
  }
  output b
}
"""
    graph = netlang.compile(spec).graph
    ops = {n.op: device_of(n) for n in graph if not n.is_source()}
    assert ops == {"add": "gpu", "mul": "cpu"}        # a's add is overwritten by b's: cpu
    first_add = next(n for n in graph if n.op == "add")
    assert device_of(first_add) == "cpu"


@pytest.mark.parametrize("body, message, hint", [
    ("on tpu {\n    y = x + 1\n  }", "<string>:3:6: error: unknown device 'tpu'",
     "write on cpu { ... } or on gpu { ... }"),
    ("on gpu {\n    input z: f32[N]\n  }",
     ("<string>:4:5: error: input 'z' is fed on the session's device, so it cannot be "
      "declared inside 'on gpu'"), "declare the input before the block; its ops can be inside"),
])
def test_placement_errors_name_the_line(body, message, hint):
    spec = f"network n {{\n  input x: f32[N, 2]\n  {body}\n  output x\n}}\n"
    with pytest.raises(SpecError) as err:
        netlang.compile(spec)
    assert str(err.value).splitlines()[0] == message
    assert err.value.hint == hint


def test_a_return_inside_on_is_an_error():
    spec = "block f(x) {\n  on gpu {\n    return x + 1\n  }\n}\nnetwork n {\n" \
           "  input x: f32[N]\n  output y = f(x)\n}\n"
    with pytest.raises(SpecError) as err:
        netlang.compile(spec)
    assert str(err.value).splitlines()[0] == (
        "<string>:3:5: error: 'return' cannot be inside 'on gpu'")


def transfers(graph):
    return [(n.attrs["source"], n.attrs["device"], graph.nodes[n.inputs[0]].op)
            for n in graph if n.op == "transfer"]


def test_the_pass_copies_each_crossing_value_once_and_fetches_come_home():
    model = netlang.compile(SPLIT)
    steps = model.trace(device="cpu")
    assert [s.name for s in steps][-1] == "placement"
    graph = steps[-1].graph
    # h to the gpu, y back for softmax (the loss is not fetched by an eval of probs... it is
    # an output here, so its cross-entropy on the cpu reads the same copy of y)
    assert sorted(transfers(graph)) == [("cpu", "gpu", "relu"), ("gpu", "cpu", "add")]
    assert all(device_of(graph.nodes[o], "cpu") == "cpu" for o in graph.outputs.values())
    # on a gpu session the unplaced nodes (and the feeds) are on the gpu: x comes to the
    # cpu for h, and h goes back
    on_gpu = model.trace(device="gpu")[-1].graph
    assert sorted(transfers(on_gpu)) == [("cpu", "gpu", "relu"), ("gpu", "cpu", "input")]
    # a graph without blocks: no step, nothing changes
    plain = netlang.compile(WHOLE).trace()
    assert plain[-1].name == "fusion"
    assert place_on("cpu")(plain[-1].graph)[0] is plain[-1].graph


def test_cse_and_fusion_do_not_merge_across_devices():
    spec = """network n {
  input x: f32[N, 4]
  a = relu(x * 2)
  on gpu {
    b = relu(x * 2)
  }
  output c = a + b
}
"""
    graph = netlang.compile(spec).trace(device="cpu")[-1].graph
    relus = [n for n in graph if n.op in ("relu", "fused")]
    assert sorted(device_of(n, "cpu") for n in relus) == ["cpu", "gpu"]
    assert sorted(transfers(graph)) == [("cpu", "gpu", "input"), ("gpu", "cpu", "fused")]


def test_explain_lists_every_transfer_with_its_size(tmp_path, capsys):
    path = tmp_path / "split.net"
    path.write_text(SPLIT)
    assert main(["explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert "placement       18      +2  2 transfers between devices (unplaced nodes on the cpu)" \
        in out
    assert "= relu @" in out and "cpu -> gpu, 32 B per example" in out
    assert "gpu -> cpu, 12 B per example" in out
    assert "transfers between devices: 44 B per step at batch 1 (2 copies)" in out
    assert main(["explain", str(path), "--batch", "64"]) == 0
    assert "transfers between devices: 2,816 B (2.75 KiB) per step at batch 64" in (
        capsys.readouterr().out)
    assert main(["explain", str(path), "--device", "gpu"]) == 0
    assert "2 transfers between devices (unplaced nodes on the gpu)" in capsys.readouterr().out


@pytest.mark.usefixtures("fresh_gpu_slot")
def test_a_missing_gpu_is_one_error_at_the_block(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(DeviceError) as err:
        netlang.compile(SPLIT).session("cpu")
    first = str(err.value).splitlines()[0]
    assert first.startswith("<string>:9:") and (
        "device error: 'on gpu' places this op on a device this machine cannot use: --device "
        "gpu needs CuPy, which is not installed") in first


@pytest.mark.usefixtures("numpy_as_gpu")
def test_a_split_run_equals_the_single_device_run():
    standin = get_backend("gpu")
    split = netlang.compile(SPLIT).session("cpu", seed=4)
    whole = netlang.compile(WHOLE).session("cpu", seed=4)
    assert split.state.placed == {"dense1/W": standin, "dense1/b": standin,
                                  "dense2/W": standin, "dense2/b": standin}
    for name in whole.state.arrays:       # the same initial values wherever they live
        np.testing.assert_array_equal(split.state.to_numpy()[name],
                                      whole.state.to_numpy()[name])
    got, want = split.run(["probs", "xent"], FEEDS), whole.run(["probs", "xent"], FEEDS)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    assert type(got[0]) is np.ndarray


@pytest.mark.usefixtures("numpy_as_gpu")
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_training_split_over_two_devices_follows_the_single_device_run(device, tmp_path):
    """Gradients cross back over the transfers; each variable's update lands on its own
    device; the checkpoint holds NumPy arrays and loads into an unsplit session."""
    runs = {}
    for name, text in (("split", SPLIT), ("whole", WHOLE)):
        model = netlang.compile(text)
        train = build_train_graph(model, make_optimizer("sgd", {"lr": 0.1}))
        session = Model(train).session(device if name == "split" else "cpu", seed=2)
        feeds = {**FEEDS, LR_INPUT: np.float32(0.1)}
        losses = [float(session.run("xent", feeds, training=True, updates=True))
                  for _ in range(4)]
        runs[name] = (losses, session.state.to_numpy(), session)
    assert runs["split"][0][-1] < runs["split"][0][0]
    np.testing.assert_allclose(runs["split"][0], runs["whole"][0], rtol=1e-5)
    for name, value in runs["whole"][1].items():
        np.testing.assert_allclose(runs["split"][1][name], value, rtol=1e-5, atol=1e-7,
                                   err_msg=name)
    session = runs["split"][2]
    path = session.save(tmp_path / "split.ckpt")
    plain = netlang.compile(WHOLE).session("cpu")
    plain.restore(path)
    for name, value in runs["split"][1].items():
        np.testing.assert_array_equal(plain.state.arrays[name], value)


@pytest.mark.parametrize("detail, cpu, gpu", [("layer", 2, 3), ("op", 2, 5)])
def test_render_outlines_each_placed_box_in_its_devices_colour(detail, cpu, gpu):
    from netlang.viz import diagram_of, to_dot
    from netlang.viz.dot import DEVICE_COLORS

    dot = to_dot(diagram_of(netlang.compile(SPLIT).graph, detail))
    assert dot.count('class="op on-cpu"' if detail == "op" else 'class="layer on-cpu"') == cpu
    assert dot.count('class="op on-gpu"' if detail == "op" else 'class="layer on-gpu"') == gpu
    assert f'color="{DEVICE_COLORS["gpu"]}" border="3"><font point-size="9">on gpu' in dot


def test_a_placed_parameters_update_and_optimizer_slots_live_on_its_device():
    model = netlang.compile(SPLIT)
    graph = build_train_graph(model, make_optimizer("adam", {"lr": 0.1}))
    slots = {name: device_of(graph.nodes[nid]) for name, nid in graph.state.items()}
    assert slots["adam/dense1/W/m"] == slots["adam/dense1/W/v"] == "gpu"
    assert slots["adam/a/m"] == "cpu" and slots["adam/beta1_power"] is None
    updates = {name: device_of(graph.nodes[nid]) for name, nid in graph.updates.items()}
    assert updates["dense2/b"] == "gpu" and updates["a"] == "cpu"
    # a cpu session's step copies h and y there, their gradients back, and the step size
    # (a scalar): nothing per parameter
    step = Model(graph).trace(training=True, fetches=(graph.outputs["xent"],),
                              device="cpu")[-1].graph
    assert sorted(transfers(step)) == [
        ("cpu", "gpu", "fused"), ("cpu", "gpu", "relu"),
        ("cpu", "gpu", "softmax_cross_entropy_grad"), ("gpu", "cpu", "add"),
        ("gpu", "cpu", "matmul")]
