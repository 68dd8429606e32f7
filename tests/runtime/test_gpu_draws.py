"""Dropout masks from the GPU's Philox kernel (runtime/gpu_draws.py), its CUDA text compiled
for the host by the stand-in for CuPy (test_backend.py's ``numpy_as_gpu``): Philox-4x32-10
against Random123's known answers, the masks against a NumPy Philox bit for bit and against
the rate statistically, the keys from the host generator (same seed or a resumed generator,
same masks), and the draw captured into the step's graphs with its key filled per replay."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netlang
from netlang.cli.bench import build_train_model, synthetic_batch, train_config_of
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType
from netlang.ops.builder import Builder
from netlang.runtime import backend as backend_module
from netlang.runtime import capture, gpu_draws, gpu_kernels
from netlang.runtime.executor import Executor
from netlang.runtime.program import plan
from netlang.runtime.state import State
from netlang.train.step import LR_INPUT
from tests.runtime.fake_cudnn import FakeCudnn
from tests.runtime.test_backend import fresh_gpu_slot, numpy_as_gpu  # noqa: F401 (fixtures)

GPU_OK, GPU_WHY = backend_module.gpu_available()
EXAMPLES = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# Random123's tests/kat_vectors, the three philox4x32 lines with 10 rounds: counter (4 words),
# key (2 words), the words Philox-4x32-10 makes of them (cuRAND's PHILOX4_32_10 is the same).
KNOWN_ANSWERS = [
    ([0x00000000, 0x00000000, 0x00000000, 0x00000000], [0x00000000, 0x00000000],
     [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
    ([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff],
     [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
    ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0],
     [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]),
]

PHILOX_ROWS = gpu_kernels.RawSource("philox_rows", gpu_draws.PHILOX + """
NETLANG_KERNEL philox_rows(unsigned* __restrict__ rows, long long n) {
    NETLANG_LOOP(i, n) {
        unsigned* row = rows + 6 * i;      // counter (4 words) then key (2): the counter
        netlang_philox4x32_10(row, row[4], row[5]);   // becomes the 4 words made
    }
}""")


@pytest.fixture(params=["standin", pytest.param("gpu", marks=pytest.mark.skipif(
    not GPU_OK, reason=f"no GPU on this machine: {GPU_WHY}"))])
def gpu(request):
    """The GPU backend: over the NumPy stand-in for CuPy everywhere, and on a real GPU
    (tools/gpu_check.sh) where there is one."""
    if request.param == "standin":
        return request.getfixturevalue("numpy_as_gpu")
    return backend_module.get_backend("gpu")


def device_philox(backend, rows: np.ndarray) -> np.ndarray:
    """Philox-4x32-10 of each row (counter, key) by the CUDA device function."""
    rows = backend.asarray(np.ascontiguousarray(rows, dtype=np.uint32))
    gpu_kernels.launch(gpu_kernels.raw_kernel(backend.xp, PHILOX_ROWS), len(rows),
                       (rows, np.int64(len(rows))))
    return backend.to_numpy(rows)[:, :4]


def numpy_philox(counters: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox-4x32-10 in NumPy, written from the paper: the reference the kernel is held to."""
    c = [counters[:, j].astype(np.uint64) for j in range(4)]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    low = np.uint64(0xFFFFFFFF)
    for _ in range(10):
        p0, p1 = np.uint64(0xD2511F53) * c[0], np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & low, (p0 >> np.uint64(32)) ^ c[3] ^ k1,
             p0 & low]
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & low, (k1 + np.uint64(0xBB67AE85)) & low
    return np.stack(c, axis=1).astype(np.uint32)


def numpy_mask(shape: tuple, dtype: np.dtype, rate: float, key: int) -> np.ndarray:
    """The mask the kernel should write: group g of elements takes the words of counter
    (g, 0, 0, 0); the keep test is the reference kernel's ``u >= rate`` with NumPy's uniforms
    (24 bits for float32 and half, drawn as float32; 53 bits for double)."""
    n, per = int(np.prod(shape, dtype=np.int64)), gpu_draws.PER_COUNTER[dtype]
    groups = np.arange(-(-n // per), dtype=np.uint64)
    counters = np.zeros((len(groups), 4), np.uint32)
    counters[:, 0], counters[:, 1] = groups & np.uint64(0xFFFFFFFF), groups >> np.uint64(32)
    words = numpy_philox(counters, (key & 0xFFFFFFFF, key >> 32)).astype(np.uint64)
    if dtype == np.float64:
        pairs = words.reshape(-1, 2, 2)
        u = ((pairs[..., 0] >> np.uint64(5)) * 67108864.0 + (pairs[..., 1] >> np.uint64(6))
             ) / 9007199254740992.0
        keep = u.reshape(-1)[:n] >= rate
    else:
        u = ((words >> np.uint64(8)).astype(np.float32) * np.float32(2.0**-24)).reshape(-1)
        keep = u[:n] >= np.float32(rate)
    return (keep.astype(dtype) * dtype.type(1.0 / (1.0 - rate))).reshape(shape)


def gpu_mask(backend, shape, dtype, rate, key: int) -> np.ndarray:
    keys = backend.xp.zeros(1, dtype=np.uint64)
    keys.fill(np.uint64(key))
    return backend.to_numpy(gpu_draws.dropout_mask_gpu(backend.xp, np.empty(shape, dtype), rate,
                                                       key=keys))


# -- Philox ------------------------------------------------------------------------------------

def test_philox_gives_random123s_known_answers(gpu):
    rows = np.array([c + k + [0, 0] for c, k, _ in KNOWN_ANSWERS], np.uint32)[:, :6]
    want = np.array([w for _, _, w in KNOWN_ANSWERS], np.uint32)
    np.testing.assert_array_equal(device_philox(gpu, rows), want)
    for counter, key, words in KNOWN_ANSWERS:      # and the NumPy reference the masks use
        assert numpy_philox(np.array([counter], np.uint32), key)[0].tolist() == words


@EXAMPLES
@given(seed=st.integers(0, 2**32))
def test_the_device_philox_equals_the_numpy_one(gpu, seed):
    rows = np.random.default_rng(seed).integers(0, 2**32, (37, 6), dtype=np.uint32)
    key = (int(rows[0, 4]), int(rows[0, 5]))
    rows[:, 4:] = key
    np.testing.assert_array_equal(device_philox(gpu, rows.copy()),
                                  numpy_philox(rows[:, :4], key))


# -- masks -------------------------------------------------------------------------------------

@EXAMPLES
@given(shape=st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple),
       dtype=st.sampled_from([np.float16, np.float32, np.float64]),
       rate=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1 / 3, 0.9, 0.999]),
       key=st.integers(0, 2**63 - 2))
def test_the_mask_is_the_numpy_philox_mask_bit_for_bit(gpu, shape, dtype, rate, key):
    """Every size (not only multiples of a group), every float dtype, the reference's scale."""
    dtype = np.dtype(dtype)
    got = gpu_mask(gpu, shape, dtype, rate, key)
    assert got.shape == shape and got.dtype == dtype
    np.testing.assert_array_equal(got.view(f"u{dtype.itemsize}"),
                                  numpy_mask(shape, dtype, rate, key).view(f"u{dtype.itemsize}"))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_the_kept_fraction_is_one_minus_the_rate(gpu, dtype, rate):
    """Over 2**18 elements the kept fraction is within 5 standard errors of 1 - rate, for two
    keys, and the two keys' masks agree no more than independent masks would."""
    n = 2**18
    masks = [gpu_mask(gpu, (n,), np.dtype(dtype), rate, key) for key in (1, 2**40)]
    sigma = (rate * (1 - rate) / n) ** 0.5
    scale = np.dtype(dtype).type(1 / (1 - rate))
    for mask in masks:
        assert set(np.unique(mask).tolist()) == {0.0, float(scale)}
        assert abs(float(np.mean(mask > 0)) - (1 - rate)) < 5 * sigma
    agree = float(np.mean((masks[0] > 0) == (masks[1] > 0)))
    expected = rate**2 + (1 - rate) ** 2
    assert abs(agree - expected) < 5 * (expected * (1 - expected) / n) ** 0.5


def test_rate_zero_keeps_everything_and_a_rate_near_one_drops_everything(gpu):
    assert np.all(gpu_mask(gpu, (1000,), np.dtype(np.float32), 0.0, 9) == 1.0)
    # float32(0.99999999) is 1.0: the reference's u >= 1 never holds, nor does the kernel's
    assert np.all(gpu_mask(gpu, (1000,), np.dtype(np.float32), 0.99999999, 9) == 0.0)


# -- keys from the host generator --------------------------------------------------------------

def dropout_program():
    b = Builder(Graph(name="drop"))
    x = b.input("x", TensorType(DType.f32, (33, 7)))
    y = b.op("dropout_mask", x, rate=0.25)
    return x, plan(b.graph, [y], {x})


def masks(backend, host, count: int, graphs: bool = True) -> list[np.ndarray]:
    """``count`` runs of a program that fetches a dropout mask, keyed by ``host``."""
    x, program = dropout_program()
    executor = Executor(backend, host)
    executor.graphs = graphs
    ones = backend.asarray(np.ones((33, 7), np.float32))
    drawn = [backend.to_numpy(executor.run(program, {x: ones}, State(backend))[0]) for _ in range(count)]
    if graphs:          # drawn in a replayed step, from its key array
        assert [len(s.keys) for s in graphed_of(executor).segments] == [1]
    return drawn


@pytest.mark.parametrize("graphs", [True, False])
def test_each_draw_is_keyed_by_one_number_of_the_host_generator(gpu, graphs):
    """As ``KeyedDraws`` took it: one ``integers(2**63 - 1)`` per draw; the same seed gives the
    same masks, and a generator put back to a saved state (a resumed run, a gradient check's
    reset) draws again what it drew from there."""
    host = np.random.default_rng(11)
    drawn = masks(gpu, host, 3, graphs)
    keys = np.random.default_rng(11).integers(2**63 - 1, size=3)
    for mask, key in zip(drawn, keys):
        np.testing.assert_array_equal(mask, numpy_mask((33, 7), np.dtype(np.float32), 0.25,
                                                       int(key)))
    assert not np.array_equal(drawn[0], drawn[1])
    assert host.integers(2**63 - 1) == np.random.default_rng(11).integers(2**63 - 1, size=4)[3]
    for a, b in zip(masks(gpu, np.random.default_rng(11), 3, graphs), drawn):
        np.testing.assert_array_equal(a, b)
    resumed = np.random.default_rng(11)
    resumed.integers(2**63 - 1)                       # the state after the first draw
    for a, b in zip(masks(gpu, resumed, 2, graphs), drawn[1:]):
        np.testing.assert_array_equal(a, b)


# -- captured steps ----------------------------------------------------------------------------

def train_steps(spec: str, graphs: bool, count: int = 3, batch: int = 5):
    """Losses, final state and session of ``count`` train steps on the GPU backend."""
    model = netlang.compile(f"specs/{spec}")
    train, optimizer = build_train_model(model, train_config_of(model))
    session = train.session("gpu", seed=9)
    session.executor.graphs = graphs
    losses = []
    for step in range(count):
        feeds = {**synthetic_batch(model.graph, batch, seed=step),
                 LR_INPUT: np.float32(optimizer.lr)}
        losses.append(float(session.run(model.graph.loss, feeds, training=True,
                                        updates=True)))
    return losses, session.state.to_numpy(), session


def graphed_of(executor) -> capture.GraphedProgram:
    (graphed,) = [g for per in executor._graphed.values() for g in per.values()]
    assert isinstance(graphed, capture.GraphedProgram)
    return graphed


def test_a_captured_mnist_step_with_dropout_equals_the_uncaptured_one(gpu):
    """mnist.net's dropout is drawn inside a graph: each replay fills its key from the host
    generator first, so every step's mask is new and the one an uncaptured step draws.  (On
    a GPU, cuBLAS and cuDNN may pick other algorithms run to run: equal to float32's
    rounding there, bit for bit on the stand-in.)"""
    replayed, state, session = train_steps("mnist.net", True)
    launched, plain, _ = train_steps("mnist.net", False)
    rtol = 0 if gpu.xp.ndarray is np.ndarray else 1e-5          # the stand-in: bit for bit
    np.testing.assert_allclose(replayed, launched, rtol=rtol)
    assert len(set(replayed)) == 3
    for name, value in plain.items():
        np.testing.assert_allclose(state[name], value, rtol=rtol, atol=rtol, err_msg=name)
    graphed = graphed_of(session.executor)
    ((key,),) = [s.keys for s in graphed.segments if s.keys]
    assert key.dtype == np.uint64 and key.shape == (1,)


# mnist.net's train step (60 kernel calls): (segments, launches per step, what they are)
# with every draw eager as before, then with dropout's draw captured.  cuBLAS's matmuls (no
# cuDNN frontend) are 6 eager calls; dropout's eager draw cut one more graph in two.  With
# cuDNN's capturable matmul the step was a graph, the draw, a graph: now one graph and the
# fill of its key.
SEGMENTS = {
    "cuBLAS": [(13, 13, {"graphs": 6, "eager calls": 7, "key fills": 0}),
               (11, 12, {"graphs": 5, "eager calls": 6, "key fills": 1})],
    "cuDNN": [(3, 3, {"graphs": 2, "eager calls": 1, "key fills": 0}),
              (1, 2, {"graphs": 1, "eager calls": 0, "key fills": 1})],
}


@pytest.mark.usefixtures("numpy_as_gpu")
@pytest.mark.parametrize("matmul", ["cuBLAS", "cuDNN"])
def test_dropout_no_longer_cuts_the_step(monkeypatch, matmul):
    if matmul == "cuDNN":
        monkeypatch.setitem(sys.modules, "cudnn", FakeCudnn())
        monkeypatch.setattr(backend_module, "_GPU", [])      # made again, with cuDNN
    now = graphed_of(train_steps("mnist.net", True, count=1)[2].executor)
    with monkeypatch.context() as patch:        # the step as it was cut before: draws eager
        patch.setattr(capture, "keyed", lambda kernel: False)
        before = graphed_of(train_steps("mnist.net", True, count=1)[2].executor)
    assert len(before.program.calls) == len(now.program.calls) == 60
    counts = [(len(g.segments), g.launches_per_step(), g.launches()) for g in (before, now)]
    assert counts == SEGMENTS[matmul]


@pytest.mark.usefixtures("numpy_as_gpu")
def test_the_gpu_bench_says_what_a_step_launches(capsys):
    from netlang.cli import main

    assert main(["bench", "--device", "gpu", "--workloads", "mnist", "--batch", "4", "--steps",
                 "1", "--warmup", "0", "--no-torch", "--compile-runs", "0"]) == 0
    out = capsys.readouterr().out
    assert ("  mnist batch 4: a step launches 12 instead of its 60 kernel calls (5 CUDA graphs, "
            "6 eager calls, 1 key fill)\n") in out
    header, row = out.split("training throughput on gpu")[1].splitlines()[1:3]
    assert header.split()[-2:] == ["launches", "note"] and row.split()[-2:] == ["60", "12"]
