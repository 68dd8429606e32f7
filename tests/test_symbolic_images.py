"""Images of any size: ``f32[N, H, W, C]`` through padding=same, stride-1 windows."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.model import Model
from netlang.train.optimizers import make_optimizer
from netlang.train.step import LR_INPUT, build_train_graph

ANY_SIZE = """network any {
  input image: f32[N, H, W, 1]
  input label: i32[N]
  h = image |> conv2d(4, kernel=3, padding=same) |> relu
    |> conv2d(8, kernel=5, padding=same, dilation=2) |> relu |> avgpool(3, stride=1, padding=same)
  logits = h |> global_avgpool |> dense(3)
  loss xent = mean(softmax_cross_entropy(logits, label))
}"""


def test_seed_003s_filters_apply_to_an_image_of_any_size():
    model = netlang.compile("specs/filters.net")
    assert str(model.types()["blurred"]) == "f32[N,H,W,1]"
    session = model.session()
    for shape in [(1, 5, 7, 1), (2, 32, 20, 1)]:
        ones = np.ones(shape, np.float32)
        blurred, edges = session.run(["blurred", "edges"], {"image": ones})
        assert blurred.shape == shape and edges.shape == shape
        np.testing.assert_allclose(blurred[:, 1:-1, 1:-1], 1.0)       # the kernel sums to 1
        assert blurred[0, 0, 0, 0] == 0.5625 and np.abs(edges[:, 1:-1, 1:-1]).max() == 0


def test_one_train_step_serves_every_image_size():
    model = netlang.compile(ANY_SIZE)
    assert str(model.types()["h"]) == "f32[N,H,W,8]"
    train = build_train_graph(model, make_optimizer("sgd", {"lr": 0.1}))
    session = Model(train).session(seed=0)
    rng = np.random.default_rng(0)
    for h, w in [(9, 6), (16, 16), (9, 6)]:
        feeds = {"image": rng.random((4, h, w, 1), dtype=np.float32),
                 "label": np.array([0, 1, 2, 0], np.int32), LR_INPUT: np.float32(0.1)}
        loss = session.run("xent", feeds, training=True, updates=True)
        assert np.isfinite(loss)
    assert len(session.model._programs) == 1      # one compiled step for every size


@pytest.mark.parametrize("call, height, sizes", [
    ("conv2d(image, 2, kernel=3)", "(H-2)", {9: 7, 28: 26}),
    ("maxpool(image, 2)", "(H//2)", {9: 4, 28: 14}),
    ("conv2d(image, 2, kernel=3, stride=2, padding=same)", "((H+1)//2)", {9: 5, 28: 14}),
    ("conv2d(image, 2, kernel=1, stride=2)", "((H+1)//2)", {9: 5, 28: 14}),
    ("conv2d(image, 2, kernel=3, stride=2)", "((H-1)//2)", {9: 4, 28: 13}),
    ("conv2d(image, 2, kernel=3, padding=((2, 0), (1, 1)))", "H", {9: 9, 28: 28}),
    ("avgpool(image, 3, stride=1, padding=((1, 0), (1, 1)))", "(H-1)", {9: 8, 28: 27})])
def test_a_window_over_a_symbolic_size_derives_one_named_by_its_formula(call, height, sizes):
    """VALID, strides and explicit padding over a symbolic height give a new dim named by its
    formula (SAME with a stride and a 1x1 VALID window of the same stride give the same one);
    one compiled program serves every height fed, each output the size TensorFlow's rules
    give."""
    spec = f"network n {{\n  input image: f32[N, H, 28, 1]\n  output y = {call}\n}}"
    model = netlang.compile(spec, "n.net")
    assert str(model.types()["y"]).split(",")[1] == height
    session = model.session()
    for h, out in sizes.items():
        image = np.random.default_rng(h).random((2, h, 28, 1), dtype=np.float32)
        assert session.run("y", {"image": image}).shape[1] == out
    assert len(session.model._programs) == 1


def test_derived_sizes_of_the_same_formula_are_one_dim():
    """A residual downsampling block: a 3x3 SAME stride-2 path and a 1x1 VALID stride-2 skip
    add up, since both heights are ((H+1)//2)."""
    spec = ("network n {\n  input image: f32[N, H, W, 3]\n"
            "  a = image |> conv2d(8, kernel=3, stride=2, padding=same)\n"
            "  b = image |> conv2d(8, kernel=1, stride=2)\n  output y = a + b\n}")
    model = netlang.compile(spec)
    assert str(model.types()["y"]) == "f32[N,((H+1)//2),((W+1)//2),8]"
    y = model.session().run("y", {"image": np.ones((1, 7, 10, 3), np.float32)})
    assert y.shape == (1, 4, 5, 8)


def test_a_symbolic_size_too_small_for_its_window_stops_the_run_at_the_layer():
    spec = "network n {\n  input image: f32[N, H, 28, 1]\n  output y = conv2d(image, 2, kernel=5)\n}"
    session = netlang.compile(spec, "n.net").session()
    with pytest.raises(netlang.NetlangError) as info:
        session.run("y", {"image": np.ones((1, 3, 28, 1), np.float32)})
    assert str(info.value).startswith(
        "n.net:3:14: shape error: conv2d: the 5x5 window is larger than the 3x28 input with "
        "padding=VALID")


def test_explain_of_a_window_too_large_at_its_batch_sized_symbols_still_explains():
    """explain sizes every symbol as the batch; where that is too small for a VALID window
    it says the arena is planned at run time instead of failing."""
    spec = ("network n {\n  input image: f32[N, H, W, 1]\n"
            "  output y = image |> conv2d(4, kernel=3) |> global_avgpool\n}\n")
    text = netlang.compile(spec, "n.net").explain(batch=1)
    assert ("arena: not planned at every symbolic dim = 1 (conv2d: the 3x3 window is larger "
            "than the 1x1 input with padding=VALID); a run plans it at the sizes fed") in text
