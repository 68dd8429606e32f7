"""The updates of all parameters as one launch (runtime/cuda_updates.py), on the GPU backend's
code with the NumPy stand-in for CuPy (test_backend.py): the merged kernel's CUDA text is
compiled for the host and run over every (block, thread) of its launch (host_cuda.py)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import netlang
from netlang.cli.bench import build_train_model, synthetic_batch, train_config_of
from netlang.runtime import cuda_updates
from netlang.train.step import LR_INPUT
from tests.runtime.host_cuda import HostRawKernel
from tests.runtime.test_backend import (  # noqa: F401 (fixtures)
    HostElementwiseKernel,
    fresh_gpu_slot,
    numpy_as_gpu,
)

pytestmark = pytest.mark.usefixtures("numpy_as_gpu")

OPTIMIZERS = [("sgd", {}), ("momentum", {}), ("momentum", {"nesterov": True}),
              ("rmsprop", {}), ("rmsprop", {"momentum": 0.9}), ("adam", {}), ("adagrad", {})]


def train_steps(spec: str, optimizer: str, args: dict, weight_decay: float, merged: bool,
                graphs: bool = False, count: int = 3, batch: int = 6):
    """Losses, final state and the session after ``count`` train steps on the GPU path."""
    model = netlang.compile(f"specs/{spec}")
    config = train_config_of(model)
    config = replace(config, weight_decay=weight_decay,
                     optimizer=replace(config.optimizer, name=optimizer, args=dict(args)))
    train, opt = build_train_model(model, config)
    session = train.session("gpu", seed=5)
    session.executor.graphs = graphs
    session.executor.multi_tensor_updates = merged
    losses = []
    for step in range(count):
        rng = np.random.default_rng(step)
        feeds = {**synthetic_batch(model.graph, batch), LR_INPUT: np.float32(opt.lr)}
        feeds = {k: (v + rng.standard_normal(v.shape).astype(v.dtype)
                     if getattr(v, "dtype", None) is not None and v.dtype.kind == "f"
                     and v.ndim else v) for k, v in feeds.items()}
        losses.append(float(session.run(model.graph.loss, feeds, training=True,
                                        updates=True)))
    return losses, session.state.to_numpy(), session


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("optimizer, args", OPTIMIZERS)
def test_merged_updates_equal_the_per_group_kernels_bit_for_bit(optimizer, args, weight_decay):
    merged, state, session = train_steps("spiral.net", optimizer, args, weight_decay, True)
    plain, reference, _ = train_steps("spiral.net", optimizer, args, weight_decay, False)
    assert merged == plain
    assert state.keys() == reference.keys()
    for name, value in reference.items():
        np.testing.assert_array_equal(state[name], value, err_msg=name)
    launches = [n for n, _, _ in HostRawKernel.launches if n.startswith("netlang_updates_")]
    assert len(launches) == 3
