"""The loop: learning, exact resume, checkpoints of other networks, non-finite losses."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from netlang.errors import CheckpointError, GradientError, NonFiniteError, UsageError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType
from netlang.model import Model
from netlang.ops.builder import Builder
from netlang.train.config import Call, TrainConfig
from netlang.train.data import load_dataset
from netlang.train.fit import fit
from netlang.train.loop import Trainer
from netlang.train.runs import RunFolder
from tests.train.nets import N, mlp

SPIRAL = Call("spiral", {"points": 40, "validation": 32})


def config(epochs=2, lr=0.02, optimizer="adam", schedule=None, **more):
    return TrainConfig(data=SPIRAL, optimizer=Call(optimizer, {"lr": lr}), batch=16,
                       epochs=epochs, seed=7, schedule=schedule, **more)


def trainer(model=None, **kw):
    cfg = config(**kw)
    return Trainer(model or mlp(), cfg, load_dataset(cfg.data.name, cfg.data.args))


def quiet(_):
    pass


def test_training_lowers_the_loss_and_fills_the_run_folder(tmp_path):
    t = trainer(epochs=3, lr=0.05)
    result = fit(t, RunFolder(tmp_path / "run"), out=quiet, progress=False)
    losses = [e.train["xent"] for e in result.epochs]
    assert losses[-1] < losses[0]
    assert set(result.epochs[-1].validation) == {"xent", "accuracy"}
    assert result.test is not None and 0.0 <= result.test["accuracy"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text()
               .splitlines()]
    assert [r["event"] for r in records] == ["start", "epoch", "epoch", "epoch", "test"]
    assert {"train_xent", "train_accuracy", "val_accuracy", "lr", "time_s"} <= set(records[1])
    assert (tmp_path / "run" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("schedule", [None, Call("cosine", {})])
def test_resume_continues_bit_for_bit(tmp_path, schedule):
    straight = trainer(schedule=schedule)
    fit(straight, RunFolder(tmp_path / "a"), out=quiet, progress=False)
    first = trainer(schedule=schedule)
    fit(first, RunFolder(tmp_path / "b"), out=quiet, progress=False, stop_after=1)
    assert first.epoch == 1
    second = trainer(schedule=schedule)
    fit(second, RunFolder(tmp_path / "b"), resume=True, out=quiet, progress=False)
    assert (second.epoch, second.step) == (straight.epoch, straight.step)
    for name, value in straight.session.state.items():
        assert np.array_equal(second.session.state[name], value), name
    assert second.session.rng.bit_generator.state == straight.session.rng.bit_generator.state


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="--resume: no checkpoint in"):
        fit(trainer(), RunFolder(tmp_path / "none"), resume=True, out=quiet, progress=False)


def test_a_checkpoint_of_another_network_is_refused_naming_the_parameters(tmp_path):
    small = trainer(epochs=1)
    fit(small, RunFolder(tmp_path / "run"), out=quiet, progress=False)
    other = trainer(model=mlp(hidden=8), epochs=2)
    with pytest.raises(CheckpointError) as err:
        other.restore(tmp_path / "run" / "last.ckpt")
    assert err.value.message == (
        f"{tmp_path / 'run' / 'last.ckpt'} is a checkpoint of another network ('mlp'); "
        "its parameters differ:\n"
        "  shape: fc1/W is f32[2,8] here but f32[2,16] in the checkpoint\n"
        "  shape: fc1/b is f32[8] here but f32[16] in the checkpoint\n"
        "  shape: fc2/W is f32[8,4] here but f32[16,4] in the checkpoint")


def test_resuming_with_another_optimizer_is_refused(tmp_path):
    fit(trainer(epochs=1), RunFolder(tmp_path / "run"), out=quiet, progress=False)
    with pytest.raises(CheckpointError, match="was trained with adam, this run uses sgd"):
        trainer(optimizer="sgd").restore(tmp_path / "run" / "last.ckpt")


def log_net() -> Model:
    """loss = mean(log(x * w)): finite while x * w > 0, -inf or nan after that."""
    b = Builder(Graph(name="lognet"))
    x = b.input("x", TensorType(DType.f32, (N, 2)))
    b.input("y", TensorType(DType.i32, (N,)))
    w = b.param("w", TensorType(DType.f32, (2,)), init=("constant", 1.0))
    loss = b.mean(b.log(b.mul(x, w)))
    b.graph.outputs["loss"] = loss
    b.graph.loss = "loss"
    return Model(b.graph)


def test_a_non_finite_loss_stops_training_naming_the_step_and_the_op():
    t = trainer(model=log_net(), optimizer="sgd", lr=0.5)
    t.dataset.train.x[:] = np.abs(t.dataset.train.x) + 0.5
    with pytest.raises(NonFiniteError) as err:
        for _ in range(3):
            t.run_epoch()
    assert re.fullmatch(r"the loss 'loss' became nan at step 3 \(epoch 1\); the first "
                        r"non-finite value: log \(%\d+: f32\[N,2\]\), in the forward pass: "
                        r"32 nan of 32 values", err.value.message), err.value.message
    assert err.value.hint.startswith("lower the learning rate")


def test_a_network_without_a_loss_cannot_be_trained():
    b = Builder(Graph(name="noloss"))
    x = b.input("x", TensorType(DType.f32, (N, 2)))
    w = b.param("w", TensorType(DType.f32, (2,)), init=("zeros",))
    b.graph.outputs["y"] = b.mul(x, w)
    with pytest.raises(UsageError, match="no loss to differentiate"):
        trainer(model=Model(b.graph))


def test_a_parameter_the_loss_cannot_reach_is_named_with_the_blocking_op():
    b = Builder(Graph(name="blocked"))
    x = b.input("x", TensorType(DType.f32, (N, 2)))
    w = b.param("w", TensorType(DType.f32, (2,)), init=("ones",))
    v = b.param("v", TensorType(DType.f32, (2,)), init=("ones",))
    hard = b.cast(b.argmax(b.mul(x, w), axis=1), dtype="f32")
    loss = b.add(b.mean(hard), b.mean(b.mul(x, v)))
    b.graph.outputs["loss"] = loss
    b.graph.loss = "loss"
    with pytest.raises(GradientError) as err:
        trainer(model=Model(b.graph))
    assert err.value.message.startswith("'w' gets no gradient: the path to the loss is "
                                        "blocked by argmax")


def test_a_gpu_style_read_interval_finds_the_same_step_and_op():
    """On a GPU the losses are read every GPU_SYNC_EVERY steps; a NaN inside an interval
    is still reported at the step and op that produced it."""
    t = trainer(model=log_net(), optimizer="sgd", lr=0.5)
    t.sync_every = 50
    t.dataset.train.x[:] = np.abs(t.dataset.train.x) + 0.5
    with pytest.raises(NonFiniteError) as err:
        for _ in range(3):
            t.run_epoch()
    assert re.match(r"the loss 'loss' became nan at step 3 \(epoch 1\); the first "
                    r"non-finite value: log ", err.value.message), err.value.message


def test_results_are_read_once_per_interval_with_the_same_epoch_means(monkeypatch):
    from netlang.runtime.backend import Backend

    every_step, per_interval = trainer(), trainer()
    per_interval.sync_every = 4
    for t in (every_step, per_interval):
        t.dataset.validation = None
    reads = []
    original = Backend.to_numpy
    monkeypatch.setattr(Backend, "to_numpy", lambda self, v: reads.append(1) or original(self, v))
    a = every_step.run_epoch()
    assert len(reads) == every_step.steps_per_epoch
    reads.clear()
    b = per_interval.run_epoch()
    steps = per_interval.steps_per_epoch
    assert steps > 4 and len(reads) == -(-steps // 4)    # one transfer per 4 steps
    assert b.train == a.train and b.samples == a.samples
