"""The session API: partial runs, feeds anywhere, update_ops, checkpoints, ir and explain."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.errors import CheckpointError, ExecutionError, FeedError, UsageError
from netlang.model import UPDATE_OPS
from netlang.runtime.backend import gpu_available

GPU_OK, GPU_WHY = gpu_available()
DEVICES = ["cpu", pytest.param("gpu", marks=pytest.mark.skipif(
    not GPU_OK, reason=f"no GPU on this machine: {GPU_WHY}"))]

SEED = """network seed {
  a = 5.0
  b = 6.0
  output c = a * b
}"""

# Reductions and softmaxes, which elementwise fusion leaves alone: one node, one kernel call.
FLOW = """network flow {
  input x: f32[4]
  d = softmax(x)
  e = log_softmax(d)
  f = max(x)
  output out = sum(e) + f
}"""

BN = """network bn {
  input x: f32[3, 1]
  output y = batchnorm(x, axis=1, momentum=0.9)
}"""

BN_DROPOUT = """network bd {
  input x: f32[N, 4]
  input t: f32[N, 4]
  output y = x |> batchnorm |> dropout(0.5)
  loss l = mse(y, t)
}"""

LINEAR = """network lin {
  input x: f32[N, 3]
  input t: f32[N, 1]
  y = dense(x, 1)
  loss l = mse(y, t)
}"""

X4 = np.array([0.1, 0.2, 0.3, 0.4], np.float32)


def calls(session, fetches, feeds=None, **options):
    """(result, number of kernels the run called)."""
    before = session.executor.kernel_calls
    out = session.run(fetches, feeds, **options)
    return out, session.executor.kernel_calls - before


# -- partial execution (seed 002's sess.run examples) ------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_seed_feeds_override_any_value(device):
    s = netlang.compile(SEED).session(device)
    assert calls(s, "c") == (30.0, 0)                      # folded at compile time
    assert calls(s, "c", {"b": 3.0}) == (15.0, 1)
    assert calls(s, "c", {"a": 1.0, "b": 2.0}) == (2.0, 1)
    assert calls(s, "c", {"c": 100.0}) == (100.0, 0)       # c's producers never run


def test_fetching_without_feeding_the_placeholder_names_it():
    s = netlang.compile(SEED.replace("a = 5.0", "input a: f32[]")).session()
    for feeds in ({}, {"b": 3.0}):
        with pytest.raises(FeedError) as info:
            s.run("c", feeds)
        assert info.value.message == "fetching 'c' needs the input 'a', which was not fed"
        assert info.value.hint == "feed 'a' (f32[]), or feed a value computed from it"
    assert s.run("c", {"a": 2.0}) == 12.0


@pytest.mark.parametrize("device", DEVICES)
def test_only_what_the_fetches_need_runs(device):
    s = netlang.compile(FLOW).session(device)
    out, n = calls(s, "f", {"x": X4})
    assert out == np.float32(0.4) and n == 1                # d and e are not needed for f
    assert calls(s, "e", {"x": X4})[1] == 2
    assert calls(s, "out", {"x": X4})[1] == 5
    e, n = calls(s, "e", {"d": X4})                         # x is not needed once d is fed
    np.testing.assert_allclose(e, X4 - np.log(np.exp(X4).sum()), rtol=1e-6)
    assert n == 1


def test_programs_are_cached_per_fetches_feeds_and_mode():
    model = netlang.compile(FLOW)
    s = model.session()
    s.run("out", {"x": X4})
    s.run("out", {"x": X4 + 1})
    s.run(["out"], {"x": X4})
    assert len(model._programs) == 1
    s.run("out", {"x": X4}, training=True)
    s.run("out", {"d": X4, "x": X4})
    s.run("f", {"x": X4})
    assert len(model._programs) == 4


def test_lists_of_fetches_and_unknown_names():
    s = netlang.compile(FLOW).session()
    e, f = s.run(["e", "f"], {"x": X4})
    assert f == np.float32(0.4) and e.shape == (4,)
    with pytest.raises(UsageError, match="no value named 'ff'") as info:
        s.run("ff", {"x": X4})
    assert info.value.hint == "did you mean 'f'?"
    with pytest.raises(UsageError, match=r"a fetch is a value's name, got \['e'\]"):
        s.run([["e"], "f"], {"x": X4})
    with pytest.raises(UsageError, match=r"got \('e', \['f'\]\)"):
        s.run([("e", ["f"])], {"x": X4})


def test_feeds_are_checked_against_the_declared_type():
    s = netlang.compile(FLOW).session()
    with pytest.raises(FeedError, match=r"feed 'x' has shape \[3\] but the spec declares "
                                        r"f32\[4\]"):
        s.run("f", {"x": X4[:3]})


# -- state updates (seed 002's tf.layers.batch_normalization example) --------------------

@pytest.mark.parametrize("device", DEVICES)
def test_seed_batch_normalization_example(device):
    s = netlang.compile(BN).session(device)
    x = np.arange(3).reshape(3, 1).astype(np.float32)
    evals = []
    for i in range(10):
        y, nothing = s.run(["y", UPDATE_OPS], {"x": x}, training=True)
        assert nothing is None
        if i == 0:
            np.testing.assert_allclose(y.ravel(), [-1.2238274, 0, 1.2238274], atol=1e-6)
        evals.append(s.run("y", {"x": x}).ravel())
    np.testing.assert_allclose(evals[0], [-0.10165697, 0.91491264, 1.9314823], atol=1e-6)
    np.testing.assert_allclose(evals[-1], [-0.7356431, 0.39381915, 1.5232813], atol=1e-6)


def test_updates_run_only_when_asked():
    s = netlang.compile(BN).session()
    x = np.arange(3).reshape(3, 1).astype(np.float32)
    s.run("y", {"x": x}, training=True)
    assert s.state["bn1/moving_mean"][0] == 0.0
    s.run("y", {"x": x}, training=True, updates=True)
    np.testing.assert_allclose(s.state["bn1/moving_mean"], [0.1], rtol=1e-6)
    assert s.run([UPDATE_OPS], {"x": x}, training=True) == [None]
    np.testing.assert_allclose(s.state["bn1/moving_mean"], [0.19], rtol=1e-6)


def test_the_eval_program_has_no_batch_statistics_updates_or_dropout():
    model = netlang.compile(BN_DROPOUT)
    y = model.graph.outputs["y"]
    x = model.graph.inputs["x"]
    evaluating = model.program((y,), frozenset({x}), training=False, updates=False).program
    ops = {n.op for n in evaluating.steps}
    assert not ops & {"mean", "dropout_mask", "select", "mode"}
    assert evaluating.updates == {}
    training = model.program((y,), frozenset({x}), training=True, updates=True).program
    ops = {n.op for n in training.steps}
    assert {"mean", "dropout_mask"} <= ops or "fused" in ops
    assert sorted(training.updates) == ["bn1/moving_mean", "bn1/moving_variance"]


# -- gradients -------------------------------------------------------------------------------

def test_gradients_of_the_training_graph_can_be_fetched():
    s = netlang.compile(LINEAR).session(seed=3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    t = rng.normal(size=(5, 1)).astype(np.float32)
    loss, gw, gb = s.run(["l", "grad/dense1/W", "grad/dense1/b"], {"x": x, "t": t},
                         training=True)
    w, b = s.state["dense1/W"], s.state["dense1/b"]
    residual = x @ w + b - t
    np.testing.assert_allclose(loss, np.mean(residual ** 2), rtol=1e-5)
    np.testing.assert_allclose(gw, 2 * x.T @ residual / 5, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gb, [2 * residual.mean()], rtol=1e-5)


def test_a_network_without_a_loss_has_no_training_graph():
    with pytest.raises(UsageError, match="network 'flow' has no loss to differentiate"):
        netlang.compile(FLOW).training_graph()


# -- checkpoints -----------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_save_and_restore_round_trip(tmp_path, device):
    model = netlang.compile(BN)
    s = model.session(device, seed=1)
    x = np.arange(3).reshape(3, 1).astype(np.float32)
    s.run(["y", UPDATE_OPS], {"x": x}, training=True)
    path = s.save(tmp_path / "bn.ckpt", metadata={"epoch": 4})
    saved = s.run("y", {"x": x})
    s.run(["y", UPDATE_OPS], {"x": x}, training=True)
    assert not np.allclose(s.run("y", {"x": x}), saved)
    other = model.session(device, seed=2)
    assert other.restore(path) == {"epoch": 4}
    np.testing.assert_array_equal(other.run("y", {"x": x}), saved)
    assert s.restore(path) == {"epoch": 4}
    np.testing.assert_array_equal(s.run("y", {"x": x}), saved)


def test_restoring_another_networks_checkpoint_is_refused(tmp_path):
    path = netlang.compile(LINEAR).session().save(tmp_path / "lin.ckpt")
    s = netlang.compile(LINEAR.replace("dense(x, 1)", "dense(x, 2) |> dense(1)")).session()
    before = {k: v.copy() for k, v in s.state.items()}
    with pytest.raises(CheckpointError) as info:
        s.restore(path)
    text = str(info.value)
    assert f"{path} is a checkpoint of another network ('lin')" in text
    assert "shape: dense1/W is f32[3,2] here but f32[3,1] in the checkpoint" in text
    assert "missing: dense2/W (f32[2,1]) is not in the checkpoint" in text
    for name, value in before.items():                      # nothing was loaded
        np.testing.assert_array_equal(s.state[name], value)


def test_a_corrupt_checkpoint_names_the_file(tmp_path):
    s = netlang.compile(LINEAR).session()
    path = s.save(tmp_path / "lin.ckpt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{path} is not a readable netlang checkpoint"):
        s.restore(path)


# -- looking at the compiled graphs ------------------------------------------------------------

def test_ir_after_each_pass():
    model = netlang.compile(BN_DROPOUT)
    assert "dropout_mask" in model.ir(after="lowered")
    assert "= mode()" in model.ir()
    assert "= mode()" not in model.ir(after="bind_mode")
    after_fold = model.ir(after="fold", with_span=False)
    assert "dropout_mask" not in after_fold and "select" not in after_fold
    assert "dropout_mask" in model.ir(after="fold", training=True)
    assert "grad/bn1/gamma" in model.ir(after="gradients", training=True)
    with pytest.raises(UsageError, match="no pass named 'folding'") as info:
        model.ir(after="folding")
    assert info.value.hint == "did you mean 'fold'?"


def test_explain_lists_every_pass_and_the_memory_plan():
    model = netlang.compile(BN_DROPOUT)
    text = model.explain(batch=32)
    lines = text.splitlines()
    assert lines[0] == "explain bd (eval, batch 32)"
    names = [line.split()[0] for line in lines[2:] if line.startswith("  ") and
             not line.startswith("      ")]
    assert names[:6] == ["lowered", "autodiff", "bind_mode", "fold", "simplify", "cse"]
    assert "dce" in names
    assert lines[-1].startswith("      ") and "memory plan: peak activation memory at batch 32" \
        in text
    training = model.explain(training=True, batch=32)
    assert "  gradients " in training and "(training, batch 32)" in training


def test_a_spec_that_is_not_utf8_text_is_a_usage_error(tmp_path):
    path = tmp_path / "binary.net"
    path.write_bytes(b"network x {\n\x80\x81\n}\n")
    with pytest.raises(UsageError) as err:
        netlang.compile(str(path))
    assert str(err.value) == (f"usage error: cannot read spec '{path}': not UTF-8 text "
                              "(byte 0x80 at offset 12)\nhint: a spec is a UTF-8 text file (.net)")


def test_feeds_must_agree_on_a_shared_symbolic_dimension():
    s = netlang.compile("""network pair {
  input x: f32[N, 2]
  input y: f32[N]
  output z = sum(x, axis=1) + y
}""").session()
    with pytest.raises(FeedError) as err:
        s.run("z", {"x": np.zeros((5, 2), np.float32), "y": np.zeros(2, np.float32)})
    assert str(err.value) == ("feed error: feed 'y' has shape [2], so N = 2 in f32[N], but "
                              "feed 'x' gave N = 5\n"
                              "hint: feed the same N to every input declared with it")
    assert s.run("z", {"x": np.ones((3, 2), np.float32), "y": np.ones(3, np.float32)}).shape == (3,)


def test_feeds_are_checked_on_every_run_after_one_that_passed():
    """A session remembers the feed shapes and dtypes that passed its checks unchanged;
    another shape, a dtype to convert or a bad value is checked (and converted) as the
    first run was."""
    s = netlang.compile("""network pair {
  input x: f32[N, 2]
  input y: f32[N]
  output z = sum(x, axis=1) + y
}""").session()
    x, y = np.ones((3, 2), np.float32), np.ones(3, np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(s.run("z", {"x": x, "y": y}), [3, 3, 3])
    with pytest.raises(FeedError, match=r"feed 'y' has shape \[2\], so N = 2 in f32\[N\]"):
        s.run("z", {"x": x, "y": y[:2]})
    with pytest.raises(FeedError, match=r"feed 'x' has shape \[3, 3\] but the spec declares"):
        s.run("z", {"x": np.ones((3, 3), np.float32), "y": y})
    for _ in range(2):      # checked, then (the same shapes and dtypes) only converted
        z = s.run("z", {"x": x.astype(np.float64) / 3, "y": y.astype(np.float64)})
        assert z.dtype == np.float32                # converted to the declared dtype
        np.testing.assert_allclose(z, np.float32(2 / 3) + 1)
    with pytest.raises(FeedError, match="feed 'x' is not numeric"):
        s.run("z", {"x": np.full((3, 2), "a"), "y": y})
    np.testing.assert_array_equal(s.run("z", {"x": 2 * x, "y": y}), [5, 5, 5])


def test_a_variable_missing_from_the_state_is_named():
    s = netlang.compile(LINEAR).session()
    x, t = np.ones((2, 3), np.float32), np.ones((2, 1), np.float32)
    s.run("l", {"x": x, "t": t})
    del s.state.arrays["dense1/W"]
    with pytest.raises(ExecutionError) as err:
        s.run("l", {"x": x, "t": t})
    assert str(err.value) == ("execution error: the variable 'dense1/W' has no value in this "
                              "session's state\nhint: initialize or restore the session's state")


FED_VARIABLES = ["bn1/moving_mean", "bn1/moving_variance", "bn1/gamma", "bn1/beta", "conv1/W"]


@pytest.mark.parametrize("name", FED_VARIABLES)
@pytest.mark.parametrize("training", [False, True])
def test_a_fed_variable_is_used_for_that_run_and_left_as_stored(name, training):
    """TF1 feeds variables: feeding a parameter or a batchnorm statistic computes with the fed
    value, as if the state held it, and leaves the stored variable as it was."""
    model = netlang.compile("specs/mnist_fast.net")
    rng = np.random.default_rng(0)
    feeds = {"image": rng.random((4, 28, 28, 1), dtype=np.float32),
             "label": np.arange(4, dtype=np.int32)}
    fed, held = model.session(seed=1), model.session(seed=1)
    value = (rng.random(fed.state[name].shape) + 0.5).astype(np.float32)
    stored = fed.state[name].copy()
    held.state[name] = value
    got = fed.run("xent", {**feeds, name: value}, training=training, updates=True)
    want = held.run("xent", feeds, training=training)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_array_equal(fed.state[name], stored)


# -- notebooks and model.fit ------------------------------------------------------------------

def test_models_and_sessions_show_themselves_shortly():
    model = netlang.compile("specs/mnist.net")
    assert repr(model) == ("<netlang.Model 'mnist': inputs image f32[N,28,28,1], label i32[N]; "
                           "outputs probs, pred, xent, accuracy; loss xent; 1,111,946 trainable "
                           "parameters in 8 arrays>")
    session = model.session(kernels="numpy")
    assert repr(session) == ("<netlang.Session of 'mnist' on cpu (the reference NumPy "
                             "kernels), seed 0: 8 variables>")


def test_a_model_displays_as_its_layer_diagram_in_a_notebook():
    svg = netlang.compile("specs/mnist_small.net")._repr_svg_()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "conv1" in svg


def test_fit_trains_as_netlang_train_does_and_returns_the_history(tmp_path):
    model = netlang.compile("""network tiny {
  input x: f32[N, 2]
  input label: i32[N]
  logits = x |> dense(16, activation=relu) |> dense(4)
  output pred = argmax(logits, axis=1)
  loss xent = mean(softmax_cross_entropy(logits, label))
  metric accuracy = mean(cast(equal(pred, label), dtype=f32))
}
train tiny { data spiral(points=30, validation=20); optimizer adam(lr=1e-2); batch 16; epochs 3 }
""")
    lines = []
    result = model.fit(epochs=2, out=tmp_path / "run", say=lines.append, progress=False)
    assert sorted(result.history) == ["accuracy", "lr", "val_accuracy", "val_xent", "xent"]
    assert len(result.history["xent"]) == 2 and result.test is not None
    assert lines[0].startswith("training tiny on spiral: 100 examples (20 for validation), 2 "
                               "epochs of batch 16")
    assert (tmp_path / "run" / "last.ckpt").is_file() and result.run_folder == str(
        tmp_path / "run")
    with pytest.raises(UsageError) as info:
        model.fit(epochs=2, out=tmp_path / "run", say=lines.append)
    assert str(info.value).startswith(f"usage error: the run folder {tmp_path / 'run'} already "
                                      "holds a run")
    with pytest.raises(UsageError) as info:
        model.fit(stop_after=0)
    assert str(info.value) == "usage error: stop_after= must be at least 1, got 0"
