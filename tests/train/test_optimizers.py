"""Optimizers and schedules against updates computed by hand (TensorFlow 1.x formulas)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from netlang.errors import ArgumentError
from netlang.model import Model
from netlang.train.optimizers import make_optimizer
from netlang.train.schedules import make_schedule
from netlang.train.step import LR_INPUT, build_train_graph
from tests.train.nets import quadratic

X = np.array([[1.0, 2.0, 0.5], [0.5, -1.0, 1.0]], np.float32)
K = np.array([1.0, 2.0, 3.0])
SQ = (X.astype(np.float64) ** 2).sum(0)


def grads(w, v):
    return K * w * SQ, v


def reference(name, hyper, lr, steps, w, v, wd=0.0):
    """The same optimizer in float64 NumPy, written from the TF docs."""
    slots = {}
    out = []
    for t in range(1, steps + 1):
        gw, gv = grads(w, v)
        gv = gv + wd * v   # weight decay: matrices only
        new = []
        for key, p, g in (("w", w, gw), ("v", v, gv)):
            s = slots.setdefault(key, {})
            if name == "sgd":
                p = p - lr * g
            elif name == "momentum":
                a = hyper["momentum"] * s.get("a", 0) + g
                s["a"] = a
                step = g + hyper["momentum"] * a if hyper["nesterov"] else a
                p = p - lr * step
            elif name == "rmsprop":
                ms = s.get("ms", np.ones_like(p))
                ms = ms + (g * g - ms) * (1 - hyper["decay"])
                s["ms"] = ms
                p = p - lr * g / np.sqrt(ms + hyper["epsilon"])
            elif name == "adam":
                b1, b2, eps = hyper["beta1"], hyper["beta2"], hyper["epsilon"]
                m = s.get("m", 0) + (g - s.get("m", 0)) * (1 - b1)
                vv = s.get("v", 0) + (g * g - s.get("v", 0)) * (1 - b2)
                s["m"], s["v"] = m, vv
                lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p = p - lr_t * m / (np.sqrt(vv) + eps)
            elif name == "adagrad":
                acc = s.get("acc", 0.1) + g * g
                s["acc"] = acc
                p = p - lr * g / np.sqrt(acc)
            new.append(p)
        w, v = new
        out.append((w.copy(), v.copy()))
    return out


CASES = [("sgd", {}), ("momentum", {"momentum": 0.9, "nesterov": False}),
         ("momentum", {"momentum": 0.5, "nesterov": True}),
         ("rmsprop", {"decay": 0.9, "epsilon": 1e-10}),
         ("adam", {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}),
         ("adagrad", {})]


@pytest.mark.parametrize("name, hyper", CASES)
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_three_steps_match_the_hand_computed_updates(name, hyper, wd):
    model, w0 = quadratic()
    opt = make_optimizer(name, {"lr": 0.05, **hyper})
    session = Model(build_train_graph(model, opt, wd)).session()
    session.state["w"] = w0
    v0 = np.ones((2, 3), np.float32)
    expected = reference(name, opt.hyper, 0.05, 3, w0.astype(np.float64), v0.astype(np.float64),
                         wd)
    for want_w, want_v in expected:
        session.run("loss", {"x": X, LR_INPUT: 0.05}, training=True, updates=True)
        np.testing.assert_allclose(session.state["w"], want_w, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(session.state["v"], want_v, rtol=2e-5, atol=1e-6)


def test_slots_are_state_named_after_the_optimizer_and_parameter():
    model, _ = quadratic()
    graph = build_train_graph(model, make_optimizer("adam"))
    assert sorted(graph.state) == ["adam/beta1_power", "adam/beta2_power", "adam/v/m",
                                   "adam/v/v", "adam/w/m", "adam/w/v"]
    assert set(graph.updates) == {*graph.state, "v", "w"}
    assert graph.nodes[graph.updates["w"]].tags >= {"optimizer"}


def test_one_run_does_forward_backward_and_update():
    model, _ = quadratic()
    session = Model(build_train_graph(model, make_optimizer("sgd"))).session()
    before = session.executor.kernel_calls
    session.run("loss", {"x": X, LR_INPUT: 0.1}, training=True, updates=True)
    assert session.executor.kernel_calls > before
    np.testing.assert_allclose(session.state["v"], 0.9 * np.ones((2, 3)), rtol=1e-6)


def test_optimizer_arguments_are_checked():
    with pytest.raises(ArgumentError) as err:
        make_optimizer("adma")
    assert (err.value.message, err.value.hint) == ("unknown optimizer 'adma'",
                                                   "did you mean 'adam'?")
    with pytest.raises(ArgumentError) as err:
        make_optimizer("adam", {"beta": 0.5})
    assert err.value.message == "optimizer adam has no argument 'beta'"
    with pytest.raises(ArgumentError, match="lr must be a positive number, got -1"):
        make_optimizer("sgd", {"lr": -1})
    assert make_optimizer("adam").describe() == "adam(lr=0.001, beta1=0.9, beta2=0.999, " \
                                                "epsilon=1e-08)"


def test_schedules_by_epoch():
    step = make_schedule("step", {"every": 2, "factor": 0.5})
    assert [step.rate(1.0, s, 10, 100) for s in (0, 19, 20, 45)] == [1.0, 1.0, 0.5, 0.25]
    expo = make_schedule("exponential", {"factor": 0.5})
    assert expo.rate(2.0, 5, 10, 100) == pytest.approx(2.0 * 0.5 ** 0.5)
    cos = make_schedule("cosine", {})
    assert [cos.rate(1.0, s, 10, 100) for s in (0, 50, 100)] == pytest.approx([1.0, 0.5, 0.0])
    warm = make_schedule("cosine", {"warmup": 1, "min": 0.1})
    assert warm.rate(1.0, 4, 10, 100) == pytest.approx(0.5)
    assert warm.rate(1.0, 100, 10, 100) == pytest.approx(0.1)
    assert make_schedule(None).rate(0.3, 99, 10, 100) == 0.3
    with pytest.raises(ArgumentError, match="schedule cosine has no argument 'alpha'"):
        make_schedule("cosine", {"alpha": 0.1})
