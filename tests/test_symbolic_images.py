"""Images of any size: ``f32[N, H, W, C]`` through padding=same, stride-1 windows."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.errors import SpecError
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


@pytest.mark.parametrize("call, where", [
    ("conv2d(image, 2, kernel=3)", "padding=VALID and stride 1"),
    ("maxpool(image, 2)", "padding=VALID and stride 2"),
    ("conv2d(image, 2, kernel=3, stride=2, padding=same)", "padding=SAME and stride 2")])
def test_a_window_that_changes_a_symbolic_size_names_it(call, where):
    spec = f"network n {{\n  input image: f32[N, H, 28, 1]\n  output y = {call}\n}}"
    with pytest.raises(SpecError) as info:
        netlang.compile(spec, "n.net")
    op = call.split("(")[0]
    assert str(info.value).splitlines()[0] == (
        f"n.net:3:14: shape error: {op} over the symbolic image height H needs a known size "
        f"with {where}")
    assert str(info.value).splitlines()[-1] == (
        "hint: give H as a number (e.g. f32[N,28,28,1]); only padding=same with stride 1 keeps "
        "a symbolic height and width")
