"""The updates of all parameters as one launch (runtime/cuda_updates.py), compared bit for bit
with the per-group ElementwiseKernels it replaces (``Executor.multi_tensor`` off).

``standin`` runs the GPU backend's code with the NumPy stand-in for CuPy (test_backend.py):
the merged kernel's CUDA text is compiled for the host and run over every (block, thread) of
its launch (host_cuda.py).  ``gpu`` (on a machine with one, tools/gpu_check.sh) runs the
same comparisons through CuPy and NVRTC, with real CUDA graphs in the replay test: what the
stand-in cannot show (nvcc's contractions, the table filled inside a captured graph)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import netlang
from netlang.cli.bench import build_train_model, synthetic_batch, train_config_of
from netlang.runtime import cuda_updates
from netlang.runtime.backend import get_backend
from netlang.train.step import LR_INPUT
from tests.runtime.host_cuda import HostRawKernel
from tests.runtime.test_backend import (  # noqa: F401 (fixtures)
    GPU_OK,
    GPU_WHY,
    HostElementwiseKernel,
    fresh_gpu_slot,
    numpy_as_gpu,
)
from tests.runtime.test_capture import step_feeds

STANDIN = pytest.mark.usefixtures("numpy_as_gpu")


@pytest.fixture(params=["standin", pytest.param("gpu", marks=pytest.mark.skipif(
    not GPU_OK, reason=f"no GPU on this machine: {GPU_WHY}"))])
def device(request) -> str:
    """Where ``--device gpu`` runs: the stand-in, or the machine's GPU."""
    if request.param == "standin":
        request.getfixturevalue("numpy_as_gpu")
    return request.param

OPTIMIZERS = [("sgd", {}), ("momentum", {}), ("momentum", {"nesterov": True}),
              ("rmsprop", {}), ("rmsprop", {"momentum": 0.9}), ("adam", {}), ("adagrad", {})]


@pytest.fixture
def elementwise_launches(monkeypatch) -> list:
    """Every ElementwiseKernel launch (the per-group kernels), counted as it runs."""
    launches = []
    run = HostElementwiseKernel.__call__

    def counted(self, *arrays):
        launches.append(self)
        return run(self, *arrays)
    monkeypatch.setattr(HostElementwiseKernel, "__call__", counted)
    return launches


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
    session.executor.multi_tensor = merged
    losses = []
    for step in range(count):
        feeds = step_feeds(model, batch, opt.lr, step)
        losses.append(float(session.run(model.graph.loss, feeds, training=True,
                                        updates=True)))
    return losses, session.state.to_numpy(), session


def launches(prefix: str) -> int:
    return sum(name.startswith(prefix) for name, _, _ in HostRawKernel.launches)


def merged_launches(session) -> list[cuda_updates.MultiTensorUpdate]:
    return [run.merged for per in session.executor._bound.values() for bound in per.values()
            for _, run, _, _ in bound.calls if hasattr(run, "merged")]


def assert_same_state(state: dict, reference: dict) -> None:
    assert state.keys() == reference.keys()
    for name, value in reference.items():
        np.testing.assert_array_equal(state[name], value, err_msg=name)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("optimizer, args", OPTIMIZERS,
                         ids=["sgd", "momentum", "nesterov", "rmsprop", "rmsprop-momentum",
                              "adam", "adagrad"])
def test_one_launch_updates_every_parameter_and_slot_bit_for_bit(optimizer, args,
                                                                  weight_decay, device):
    """spiral's six parameters (kernels decayed, biases not: two variants of the switch) and
    every optimizer slot: the same bits as one ElementwiseKernel per fused group, from one
    update launch per step."""
    steps = 3
    merged, state, session = train_steps("spiral.net", optimizer, args, weight_decay, True,
                                         count=steps)
    (update,) = merged_launches(session)
    assert update.launches == steps
    assert len(update.rows) == 6 + 2 * (optimizer == "adam")   # + Adam's beta powers
    assert len({variant for variant, _ in update.rows}) == (
        1 + (weight_decay > 0) + (optimizer == "adam"))
    calls = session.executor.kernel_calls

    plain, reference, session = train_steps("spiral.net", optimizer, args, weight_decay,
                                            False, count=steps)
    assert merged == plain
    assert_same_state(state, reference)
    assert not merged_launches(session)
    assert session.executor.kernel_calls == calls          # the same calls, handing on


@STANDIN
@pytest.mark.parametrize("optimizer, weight_decay", [("sgd", 0.0), ("adam", 0.01)])
def test_the_update_is_one_raw_launch_instead_of_one_kernel_per_group(
        optimizer, weight_decay, elementwise_launches):
    steps = 3
    train_steps("spiral.net", optimizer, {}, weight_decay, True, count=steps)
    merged = len(elementwise_launches)
    assert launches("netlang_updates_") == steps
    assert launches("netlang_fill_table") <= steps     # only for addresses not seen before
    elementwise_launches.clear()
    train_steps("spiral.net", optimizer, {}, weight_decay, False, count=steps)
    assert launches("netlang_updates_") == steps       # none more
    groups = (len(elementwise_launches) - merged) / steps
    assert groups == 6 * {"sgd": 1, "adam": 3}[optimizer] + 3 * (weight_decay > 0)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_residual_with_batchnorm_and_convolutions_updates_bit_for_bit(optimizer, device):
    merged, state, session = train_steps("residual.net", optimizer, {}, 0.01, True, count=2,
                                         batch=4)
    plain, reference, _ = train_steps("residual.net", optimizer, {}, 0.01, False, count=2,
                                      batch=4)
    assert merged == plain
    assert_same_state(state, reference)
    (update,) = merged_launches(session)
    program = next(iter(session.executor._bound))
    params = [n for n in program.updates if n in program.graph.params]
    moving = [n for n in program.updates if n not in params and not n.startswith(optimizer)]
    assert moving                  # batchnorm's moving averages are updated in it too
    assert len(update.rows) == len(params) + len(moving) + 2 * (optimizer == "adam")
    assert update.launches == 2


def test_replayed_steps_with_the_merged_update_equal_the_launched_per_group_ones(device):
    """capture.py's replay runs the merged launch over the recorded arrays, step after step
    (the stand-in, which cannot capture, runs every call again into the recorded buffers;
    a GPU replays the graph, the table's fill inside it)."""
    replayed, state, session = train_steps("spiral.net", "adam", {}, 0.01, True, graphs=True,
                                           count=4)
    assert session.executor._graphed and merged_launches(session)
    launched, reference, _ = train_steps("spiral.net", "adam", {}, 0.01, False, count=4)
    assert replayed == launched
    assert_same_state(state, reference)
    if device == "gpu":
        (update,) = merged_launches(session)
        assert update.captured          # filled while capturing, kept for the graph


@STANDIN
def test_a_run_over_addresses_seen_before_finds_its_table():
    """A run whose arrays sit where an earlier run's did launches once and fills nothing;
    its outputs go into an earlier run's arrays that nobody holds any more."""
    _, _, session = train_steps("spiral.net", "momentum", {}, 0.0, True, count=1)
    (update,) = merged_launches(session)
    xp = session.backend.xp
    rng = np.random.default_rng(0)
    arrays = []
    program = next(iter(session.executor._bound))
    for arg in update.args:
        node = program.graph.nodes[arg]
        shape = tuple(d if isinstance(d, int) else 6 for d in node.type.shape)
        arrays.append(xp.asarray(rng.standard_normal(shape).astype(node.type.dtype.numpy)))
    HostRawKernel.launches.clear()
    first = {out: np.array(a) for out, a in update.run(*arrays).items()}
    kept = update.kept[0]
    second = update.run(*arrays)
    assert update.kept[0] is kept and all(a is b for a, b in zip(second.values(), kept))
    assert {out: np.array(a) for out, a in second.items()}.keys() == first.keys()
    for out, value in first.items():
        np.testing.assert_array_equal(second[out], value)
    assert launches("netlang_updates_") == 2 and launches("netlang_fill_table") == 1
    held = dict(second)
    third = update.run(*arrays)            # the second's arrays are held: new ones, filled
    assert all(third[out] is not held[out] for out in held)
    assert launches("netlang_fill_table") == 2


@STANDIN
def test_netlang_multi_tensor_updates_0_launches_one_kernel_per_group(monkeypatch,
                                                                     elementwise_launches):
    monkeypatch.setenv("NETLANG_MULTI_TENSOR_UPDATES", "0")
    model = netlang.compile("specs/spiral.net")
    train, optimizer = build_train_model(model, train_config_of(model))
    session = train.session("gpu", seed=5)
    feeds = {**synthetic_batch(model.graph, 6), LR_INPUT: np.float32(optimizer.lr)}
    session.run(model.graph.loss, feeds, training=True, updates=True)
    assert not session.executor.multi_tensor and not merged_launches(session)
    assert launches("netlang_updates_") == 0
    assert len(elementwise_launches) >= 3 * len(model.graph.params)   # Adam's m, v, param


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mixed_precision_updates_skipped_on_overflow_merge_bit_for_bit(optimizer, device):
    """f16 matmuls with f32 master weights: each update is ``select(finite, new, old)``
    (a step whose gradients overflowed changes nothing), the loss scale's too."""
    from netlang.ir.types import DType
    from netlang.model import Model
    from netlang.train.optimizers import make_optimizer
    from netlang.train.step import build_train_graph

    model = netlang.compile("specs/spiral.net")
    train = Model(build_train_graph(model, make_optimizer(optimizer, {"lr": 0.01}), 0.01,
                                    DType.f16))
    rng = np.random.default_rng(0)
    feeds = {**synthetic_batch(model.graph, 8), LR_INPUT: np.float32(0.01)}
    feeds = {k: (v + rng.standard_normal(v.shape).astype(v.dtype)
                 if v.dtype.kind == "f" and v.ndim else v) for k, v in feeds.items()}
    runs = {}
    for merged in (True, False):
        session = train.session("gpu", seed=1)
        session.executor.multi_tensor = merged
        session.executor.graphs = False
        losses = [float(session.run(model.graph.loss, feeds, training=True, updates=True))
                  for _ in range(3)]
        runs[merged] = (losses, session.state.to_numpy(), merged_launches(session))
    assert runs[True][0] == runs[False][0]
    assert_same_state(runs[True][1], runs[False][1])
    (update,) = runs[True][2]
    # every parameter, the loss scale and its count of clean steps (and Adam's powers)
    assert len(update.rows) == len(model.graph.params) + 2 + 2 * (optimizer == "adam")
    assert update.launches == 3


@STANDIN
def test_an_update_read_before_the_launch_keeps_its_own_kernel():
    """The launch runs at the last member's place: an update that another call reads before
    that (here a sum computed between the updates) is computed by its own kernel first."""
    from netlang.ir.graph import Graph
    from netlang.ir.types import DType, TensorType
    from netlang.ops.builder import Builder
    from netlang.runtime.executor import Executor
    from netlang.runtime.program import plan

    gpu = get_backend("gpu")          # the stand-in
    b = Builder(Graph(name="order"))
    t = TensorType(DType.f32, (5,))
    g = b.input("g", t)
    s = [b.state(f"s{i}", t, init=("constant", float(i))) for i in range(3)]
    new0 = b.op("sub", s[0], g)
    total = b.op("sum", new0)
    for i, new in enumerate([new0, b.op("mul", s[1], g), b.op("add", s[2], g)]):
        b.update(s[i], new)
    program = plan(b.graph, [total], {g}, b.graph.updates)
    feeds = {g: gpu.asarray(np.arange(5, dtype=np.float32))}
    results = {}
    for merged in (True, False):
        executor = Executor(gpu)
        executor.multi_tensor = merged
        store = {f"s{i}": gpu.asarray(np.full(5, i, np.float32)) for i in range(3)}
        (fetched,) = executor.run(program, feeds, store)
        results[merged] = (float(fetched), {k: np.array(v) for k, v in store.items()})
        (bound,) = executor._bound[program].values()
        taken = [run.merged for _, run, _, _ in bound.calls if hasattr(run, "merged")]
        assert [len(u.rows) for u in taken] == ([2] if merged else [])
    assert results[True][0] == results[False][0] == -10.0
    assert_same_state(results[True][1], results[False][1])
    np.testing.assert_array_equal(results[True][1]["s2"], np.arange(5) + 2)


@STANDIN
def test_every_element_of_tensors_of_any_size_finds_its_tensor():
    """The binary search over the offsets, past the grid (256 x 256 threads, so a thread
    takes several indices), over tensors of one element up: ``p - lr * g`` in each."""
    from netlang.ir.types import DType

    xp = get_backend("gpu").xp        # the stand-in
    sgd = (("mul", ("x0", "x1"), ()), ("sub", ("x2", "t0"), ()))
    sizes = [(1,), (70_000,), (3,), (1000, 7), (), (2, 2, 2)]
    rng = np.random.default_rng(1)
    members, values = [], {0: np.float32(0.125) * np.ones((), np.float32)}
    for t, shape in enumerate(sizes):
        grad, param = 10 + 2 * t, 11 + 2 * t
        values[grad] = rng.standard_normal(shape).astype(np.float32)
        values[param] = rng.standard_normal(shape).astype(np.float32)
        members.append(cuda_updates.Member(t, 100 + t, sgd, (0, grad, param),
                                           ((), shape, shape), (DType.f32,) * 3, shape,
                                           DType.f32))
    update = cuda_updates.MultiTensorUpdate(xp, cuda_updates.tensors_of(
        members, {m.out for m in members}))
    # one variant, and one for the tensors of one element (every input a single number)
    assert [variant for variant, _ in update.rows] == [0, 1, 1, 1, 0, 1]
    out = update.run(*[values[a] for a in update.args])
    for t in range(len(sizes)):
        want = values[11 + 2 * t] - values[0] * values[10 + 2 * t]
        np.testing.assert_array_equal(out[100 + t], want)
    ((_, grid, block),) = [launch for launch in HostRawKernel.launches
                           if launch[0].startswith("netlang_updates_")]
    assert grid[0] * block[0] < update.total == sum(int(np.prod(s)) for s in sizes)
