"""The reductions of a data-parallel step in one process: MPI's singleton start makes a world
of one rank, enough to check the wiring of the bucketed ``allreduce_start`` /
``allreduce_wait`` graph on the CPU (MPI) and on a GPU (NCCL, train/nccl.py; a one-GPU
machine holds only one rank, as NCCL takes one GPU per rank).  The GPU cases need CuPy with
NCCL: tools/gpu_check.sh runs them on the lent GPU machine; elsewhere they skip."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.ops import collective
from netlang.runtime.backend import gpu_available, import_cupy

pytest.importorskip("mpi4py")
GPU = pytest.param("gpu", marks=pytest.mark.skipif(not gpu_available()[0],
                                                   reason="no GPU (CuPy) here"))


@pytest.fixture
def join():
    from netlang.train import mpi
    before = list(collective._reduce), list(collective._split)
    yield mpi.join
    collective._reduce[:], collective._split[:] = before      # as the other tests had it


def to_numpy(x):
    return x.get() if hasattr(x, "get") else np.asarray(x)


@pytest.mark.parametrize("device", ["cpu", GPU])
def test_a_reduction_over_one_rank_is_its_weighted_share(join, device):
    world = join(device)
    xp = np if device == "cpu" else import_cupy()
    x = xp.arange(1000, dtype=xp.float32) / 7
    world.weight = 0.5
    start, finish = collective._split[0]
    np.testing.assert_allclose(to_numpy(finish(start(x))), to_numpy(x) * 0.5, rtol=1e-7)
    halves = finish(start(x, "f16"))
    np.testing.assert_allclose(to_numpy(halves), to_numpy(x) * 0.5, rtol=1e-3)
    assert world.calls == 2 and world.bytes_sent == 2000      # 2 kB of halves, 0 of floats


@pytest.mark.parametrize("device", ["cpu", GPU])
def test_the_bucketed_step_over_one_rank_equals_the_plain_step(join, device):
    from netlang.model import Model
    from netlang.train.optimizers import make_optimizer
    from netlang.train.step import LR_INPUT, build_train_graph
    model = netlang.compile("specs/mnist_small.net")
    world = join(device)
    world.weight = 1.0
    rng = np.random.default_rng(0)
    feeds = {"image": rng.random((32, 28, 28, 1), np.float32),
             "label": rng.integers(0, 10, 32).astype(np.int32), LR_INPUT: np.float32(1e-3)}
    results = []
    for ranks in (1, 2):
        graph = build_train_graph(model, make_optimizer("adam", {}), ranks=ranks)
        if ranks == 2:
            assert [n.op for n in graph.nodes.values()].count("allreduce_start") >= 1
        session = Model(graph).session(device, seed=0)
        for _ in range(3):
            session.run("update_ops", feeds, training=True)
        results.append(session.state.to_numpy())
    assert world.calls >= 3
    for name, value in results[0].items():
        np.testing.assert_allclose(results[1][name], value, rtol=1e-5, atol=1e-7,
                                   err_msg=name)


def test_the_schedule_starts_each_bucket_as_soon_as_its_gradients_exist():
    """mnist.net on 2 ranks: the dense layers' buckets start before the convolutions'
    backward runs, and every wait comes after the last gradient (overlap, not a barrier)."""
    from netlang.model import Model
    from netlang.train.optimizers import make_optimizer
    from netlang.train.step import build_train_graph
    graph = build_train_graph(netlang.compile("specs/mnist.net"), make_optimizer("adam", {}),
                              ranks=2)
    loss = graph.outputs["xent"]
    compiled = Model(graph).program((loss,), frozenset(graph.inputs.values()), True, True)
    ops = [n.op for n in compiled.program.steps if not n.is_source()]
    starts = [i for i, op in enumerate(ops) if op == "allreduce_start"]
    backward = [i for i, op in enumerate(ops) if op.startswith("conv2d_backprop")]
    waits = [i for i, op in enumerate(ops) if op == "allreduce_wait"]
    assert len(starts) == len(waits) == 3
    assert starts[0] < starts[1] < min(backward) < max(backward) < starts[2] < min(waits)
