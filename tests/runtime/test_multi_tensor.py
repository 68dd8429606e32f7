"""The optimizer's updates of many parameters as one multi-tensor call (runtime/multi_tensor.py):
the same bits as one loop per parameter and as the run without the buffer plan, for every
optimizer; how many tensors each call takes; which updates may join a call; the kernel over
chunks equals NumPy on random sizes; a second process loads it from the disk cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netlang
from netlang.model import Model
from netlang.runtime import generated, jit, multi_tensor
from netlang.runtime.multi_tensor import Unit, group_units, multi_tensor_updates
from netlang.train.optimizers import OPTIMIZERS, make_optimizer
from netlang.train.step import LR_INPUT, build_train_graph

SPECS = Path(__file__).resolve().parents[2] / "specs"


def trajectory(name: str, weight_decay: float, planned: bool, multi: bool,
               hold: str | None = None, steps: int = 3, history: bool = False,
               replace: str | None = None, spec: str | None = None, decay: float = 1.0):
    """``steps`` train steps of mnist_small (6 parameters) with optimizer ``name``: losses,
    state, the tensors each multi-tensor call takes, the held array, how many values the
    update loops keep in registers, per call the steps it ran on its flat kernels (in
    place, apart) and how many layouts of spares it met, and per call the steps it ran
    with no check of its arrays (``multi_tensor.Trusted``; None: it never may).  ``hold``:
    a parameter the caller holds from the first step on (its update then goes into a
    spare array); ``history``: the caller keeps a copy of the state's dict before each of
    the last two steps, as ``netlang train`` does (every update then goes into a spare);
    ``replace``: a parameter whose array the caller replaces by a copy before step 3;
    ``spec``: another network's source, fed ``x`` and ``y`` as ``BATCHNORMED``; ``decay``:
    each step's learning rate the last one's times this."""
    model = netlang.compile(spec or str(SPECS / "mnist_small.net"))
    graph = build_train_graph(model, make_optimizer(name, {"lr": 0.01}), weight_decay)
    session = Model(graph, passes=model.passes).session("cpu", 0)
    session.executor.buffer_plan, session.executor.multi_tensor = planned, multi
    rng = np.random.default_rng(3)
    feeds = {LR_INPUT: np.float32(0.01), "image": rng.standard_normal((8, 28, 28, 1), np.float32),
             "label": rng.integers(0, 10, 8).astype(np.int32)}
    if spec is not None:
        feeds = {LR_INPUT: np.float32(0.01), "x": rng.standard_normal((8, 6), np.float32),
                 "y": rng.integers(0, 3, 8).astype(np.int32)}
    losses, held, before = [], None, []
    for k in range(steps):
        if hold is not None and k == 1:
            held = session.run(hold)        # the state's own array, now held here
        if replace is not None and k == 3:
            session.state[replace] = np.array(session.state[replace])
        if history:
            before = [*before[-1:], dict(session.state.arrays)]
        feeds[LR_INPUT] = np.float32(0.01 * decay ** k)
        losses.append(session.run(model.graph.loss, feeds, training=True, updates=True))
    runs = [run for per_size in session.executor._bound.values()
            for bound in per_size.values() for _, run, _, _ in bound.calls]
    tensors = [run.tensors for run in runs if hasattr(run, "tensors")]
    kept = sum(getattr(run, "in_registers", 0) for run in runs)
    flat = [(run.flat.calls, run.flat_apart.calls, len(run.flat_apart.layouts))
            for run in runs if hasattr(run, "tensors")]
    unchecked = [run.trusted and run.trusted.runs for run in runs if hasattr(run, "tensors")]
    return losses, session.state.to_numpy(), tensors, held, kept, flat, unchecked


def assert_same_run(one, other) -> None:
    assert one[0] == other[0]
    assert one[1].keys() == other[1].keys()
    for key in other[1]:
        np.testing.assert_array_equal(one[1][key], other[1][key], err_msg=key)


# The tensors per multi-tensor call on mnist_small (weights W, biases b of 3 layers): every
# parameter's update runs in place, a bias's too (its gradient, ``sum_to_like`` of the
# cotangent, is no view of the bias it reads the shape of: ``OpDef.shape_only``).  With weight
# decay a weight's loop computes its decayed gradient too (``g + wd * W``, in registers), so
# the weights' loops differ from the biases'.
TENSORS = {("sgd", 0): [6], ("sgd", 1): [3, 3], ("momentum", 0): [6], ("momentum", 1): [3, 3],
           ("adam", 0): [6], ("adam", 1): [3, 3], ("rmsprop", 0): [6],
           ("rmsprop", 1): [3, 3], ("adagrad", 0): [6], ("adagrad", 1): [3, 3]}


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_gives_the_same_bits_with_one_call_for_all_parameters(name,
                                                                              weight_decay):
    multi = trajectory(name, weight_decay, True, True)
    per_parameter = trajectory(name, weight_decay, True, False)
    reference = trajectory(name, weight_decay, False, False)
    assert_same_run(multi, per_parameter)
    assert_same_run(multi, reference)
    assert multi[2] == TENSORS[name, int(weight_decay > 0)]
    assert per_parameter[2] == reference[2] == []
    # each weight's decayed gradient computed in its update's loop, where the fusion pass
    # left it a group of its own (read by two slots' updates, or by a slot's and the weight's)
    kept = 3 if weight_decay and name in ("adam", "rmsprop", "adagrad") else 0
    assert multi[4] == per_parameter[4] == kept and reference[4] == 0
    # every step on the flat kernel: the parameters and slots lie in the state's arena, each
    # gradient (a bias's too, ``sum_to_like`` writing out=) in the buffer plan's
    assert multi[5] == [(3, 0, 0)] * len(multi[2])


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_a_held_parameter_is_updated_into_a_spare_with_the_same_bits(name, weight_decay):
    """A fetched parameter is not overwritten: the call's loop reading each variable from its
    own array (``apart``) runs instead, with the same results."""
    multi = trajectory(name, weight_decay, True, True, hold="conv2/W")
    per_parameter = trajectory(name, weight_decay, True, False, hold="conv2/W")
    assert_same_run(multi, per_parameter)
    np.testing.assert_array_equal(multi[3], per_parameter[3])
    assert not np.array_equal(multi[3], multi[1]["conv2/W"])   # the held array kept its value
    # the weights' call ran flat on the first step only (then apart: the held array lies in
    # no block); with weight decay the biases' call is another, flat every step
    assert multi[5] == ([(1, 0, 0), (3, 0, 0)] if weight_decay else [(1, 0, 0)])


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
@pytest.mark.parametrize("name", ["adam", "momentum"])
def test_a_train_loops_copy_of_the_state_sends_every_update_to_spares_in_blocks(
        name, weight_decay):
    """With the state before each step held (``netlang train``'s history), every update goes
    into a spare, a generation of spares at a time in one block (``executor.Spares``): the
    call's flat kernel reading the variables apart runs every step, on three generations in
    turn; the same bits as one loop per parameter and as the run without the plan."""
    multi = trajectory(name, weight_decay, True, True, steps=5, history=True)
    assert_same_run(multi, trajectory(name, weight_decay, True, False, steps=5, history=True))
    assert_same_run(multi, trajectory(name, weight_decay, False, False, steps=5))
    assert multi[5] == [(0, 5, 3)] * len(multi[2])
    assert multi[6] == [0] * len(multi[2])          # none in place: each step checks


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("name", ["adam", "momentum"])
def test_steps_over_the_same_variables_run_unchecked_with_the_same_bits(name, parallel,
                                                                        monkeypatch):
    """From the third step (the first that writes over the same variables as the one
    before, ``LastState``) the call runs on the layout it checked then, with no check of
    its arrays, on the machine code Numba chose then (its ``prange`` too)."""
    if parallel:
        monkeypatch.setattr(multi_tensor, "PARALLEL_FROM", 1)
    multi = trajectory(name, 0.0, True, True, steps=6)
    assert_same_run(multi, trajectory(name, 0.0, False, False, steps=6))
    assert multi[5] == [(6, 0, 0)] and multi[6] == [4]


@pytest.mark.parametrize("name", ["adam", "momentum", "rmsprop"])
def test_an_unchecked_step_reads_the_numbers_computed_in_it(name):
    """With the learning rate fed anew each step (halved), steps over the same variables
    still run unchecked (Adam's step size, computed every step into its planned buffer, and
    the fed rate are read at each call) and give the same bits as the run without the plan
    and as one loop per parameter, and other bits than a constant rate."""
    multi = trajectory(name, 0.0, True, True, steps=6, decay=0.5)
    assert_same_run(multi, trajectory(name, 0.0, False, False, steps=6, decay=0.5))
    assert_same_run(multi, trajectory(name, 0.0, True, False, steps=6, decay=0.5))
    assert not np.array_equal(multi[0], trajectory(name, 0.0, True, True, steps=6)[0])
    assert multi[6] == [4]


@pytest.mark.parametrize("name, held", [("adam", 1), ("momentum", 0)])
def test_a_number_in_a_planned_buffer_is_read_by_the_loop(name, held):
    """Adam's step size, computed every step into its planned buffer, is passed to the flat
    loop as a 1-element view of that buffer (taken once with the constants); momentum's
    rate is fed, a new number each step, and is not."""
    model = netlang.compile(str(SPECS / "mnist_small.net"))
    graph = build_train_graph(model, make_optimizer(name, {"lr": 0.01}), 0.0)
    session = Model(graph, passes=model.passes).session("cpu", 0)
    rng = np.random.default_rng(3)
    feeds = {LR_INPUT: np.float32(0.01), "image": rng.standard_normal((8, 28, 28, 1), np.float32),
             "label": rng.integers(0, 10, 8).astype(np.int32)}
    for _ in range(3):
        session.run(model.graph.loss, feeds, training=True, updates=True)
    [bound] = [b for per in session.executor._bound.values() for b in per.values()]
    [run] = [run for _, run, _, _ in bound.calls if hasattr(run, "tensors")]
    views = [a for a in run.trusted.args if isinstance(a, np.ndarray) and a.shape == (1,)]
    assert run.trusted.runs == 1 and len(views) == held
    assert all(np.shares_memory(v, bound.arena) for v in views)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_a_variable_replaced_between_steps_is_updated_where_it_now_lies(name):
    """The caller puts a copy in place of a bias's array before step 3: the state no longer
    holds the arrays the checked layout was made of, so that step and the next check their
    arrays again (the copy lies in no block: the tuple kernel runs) and update the copy."""
    multi = trajectory(name, 0.0, True, True, steps=6, replace="conv2/b")
    assert_same_run(multi, trajectory(name, 0.0, False, False, steps=6, replace="conv2/b"))
    assert multi[5] == [(3, 0, 0)] and multi[6] == [1]


BATCHNORMED = """
network bn {
  input x: f32[N, 6]
  input y: i32[N]
  logits = x |> dense(8) |> batchnorm |> relu |> dense(3)
  loss xent = mean(softmax_cross_entropy(logits, y))
}
"""


def test_updates_of_variables_of_one_shape_that_follow_each_other_join_the_others():
    """A dense layer's bias and the batchnorm's gamma and beta after it (8 each) update one
    after another: each its own loop, so all six parameters share one call (the other call
    updates the batchnorm's moving mean and variance, in the forward pass)."""
    multi = trajectory("adam", 0.0, True, True, steps=4, spec=BATCHNORMED)
    assert_same_run(multi, trajectory("adam", 0.0, True, False, steps=4, spec=BATCHNORMED))
    assert_same_run(multi, trajectory("adam", 0.0, False, False, steps=4, spec=BATCHNORMED))
    assert multi[2] == [2, 6]
    assert multi[6][1] == 2


# -- which updates may join one call ----------------------------------------------------------

MOMENTUM = ((("mul", ("x0", "x1"), ()), ("add", ("t0", "x2"), ())),    # a = mu*a + g
            (("mul", ("x0", "x1"), ()), ("sub", ("x2", "t0"), ())))    # p = p - lr*a


def momentum_unit(at: int, size: int, ids: dict) -> Unit:
    """A variable's momentum update (slot, then parameter) as the executor's unit at calls
    ``at, at+1``; ``ids`` names the values it reads and writes (mu, a, g, lr, p, a2, p2)."""
    first = generated.generated_kernel(MOMENTUM[0], [(), (size,), (size,)], [np.float32] * 3)
    second = generated.generated_kernel(MOMENTUM[1], [(), (size,), (size,)], [np.float32] * 3)
    members = [(first, (ids["mu"], ids["a"], ids["g"]), 1),
               (second, (ids["lr"], ids["a2"], ids["p"]), 2)]
    loop = generated.update_loop(members, [ids["a2"], ids["p2"]])
    return Unit(range(at, at + 2), loop, (("update", ids["a"]), ("update", ids["p"])))


def ids_of(k: int, shared: bool = True) -> dict:
    names = ["mu", "a", "g", "lr", "p", "a2", "p2"]
    ids = {name: 100 * (k + 1) + i for i, name in enumerate(names)}
    if shared:
        ids["mu"], ids["lr"] = 1, 2
    return ids


def test_updates_join_where_their_inputs_are_ready_and_no_dependency_moves():
    """Calls: 0-1 update u0; 2 a gradient g'; 3-4 u1 reading g' (made after u0's place: it
    starts a call of its own); 5-6 u2, ready before 0, moves up past 2-4 to join u0; 7 a call
    reading u3's parameter; 8-9 u3, which would write that parameter before call 7 reads it
    if it joined u0 or u1: it stays alone."""
    ids = [ids_of(k) for k in range(4)]
    ids[1]["g"] = 50
    units = [momentum_unit(at, 8, i) for at, i in zip((0, 3, 5, 8), ids)]
    reads, writes = [], []

    def call(read: set, written: set) -> None:
        reads.append(frozenset(read))
        writes.append(frozenset(written))
    for k, unit in enumerate(units):
        i = ids[k]
        if k == 1:
            call({7}, {50})                                         # 2: g'
        if k == 3:
            call({i["p"]}, {60})                                    # 7: reads u3's parameter
        call({i["mu"], i["a"], i["g"]}, {i["a2"], i["a"]})
        call({i["lr"], i["a2"], i["p"]}, {i["p2"], i["p"]})
    groups = group_units(units, reads, writes)
    assert [[u.indices[0] for u in g] for g in groups] == [[0, 5], [3], [8]]


def test_updates_that_differ_in_arithmetic_or_dtype_do_not_join():
    units = [momentum_unit(0, 8, ids_of(0)), momentum_unit(2, 5, ids_of(1))]
    sgd = generated.generated_kernel(MOMENTUM[1], [(), (4,), (4,)], [np.float32] * 3)
    units.append(Unit(range(4, 5), generated.update_loop([(sgd, (2, 10, 11), 2)], [12]),
                      (("update", 11),)))
    double = generated.generated_kernel(MOMENTUM[1], [(), (4,), (4,)], [np.float64] * 3)
    units.append(Unit(range(5, 6), generated.update_loop([(double, (2, 20, 21), 2)], [22]),
                      (("update", 21),)))
    reads = [frozenset({i}) for i in range(6)]
    writes = [frozenset({100 + i}) for i in range(6)]
    assert [[u.indices[0] for u in g] for g in group_units(units, reads, writes)] == [
        [0, 2], [4], [5]]


# -- the kernel -------------------------------------------------------------------------------

def momentum_reference(mu, a, g, lr, p):
    a2 = mu * a + g
    return a2, p - lr * a2


def in_blocks(rng, sizes: list[int], count: int) -> list[list[np.ndarray]]:
    """``count`` roles of float32 arrays of these sizes, each role's arrays slices of one
    array in a shuffled order with gaps between them (as a state's arena and a step's
    buffer plan lay them out)."""
    roles = []
    for _ in range(count):
        order = rng.permutation(len(sizes))
        starts, at = {}, 0
        for t in order:
            at += int(rng.integers(0, 3))
            starts[t] = at
            at += sizes[t]
        block = np.zeros(at, np.float32)
        roles.append([block[starts[t]:starts[t] + n] for t, n in enumerate(sizes)])
    return roles


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=2, max_size=4), parallel=st.booleans(),
       shared=st.booleans(), in_place=st.booleans(), blocks=st.booleans(),
       seed=st.integers(0, 2**16))
def test_the_kernel_over_chunks_equals_numpy(sizes, parallel, shared, in_place, blocks, seed):
    """Every tensor's elements, in chunks of 7 (ragged ends, several per tensor) over the
    threads or one chunk per tensor on one; step sizes shared or per tensor; written over
    the variables or into other arrays; each role's arrays in one block of memory (the flat
    kernel, over a table of offsets) or apart (tuples): bit for bit NumPy's float32
    results, twice over the same arrays."""
    rng = np.random.default_rng(seed)
    units = [momentum_unit(2 * k, n, ids_of(k, shared)) for k, n in enumerate(sizes)]
    old_chunk = multi_tensor.CHUNK
    multi_tensor.CHUNK = 7
    try:
        run, args = multi_tensor_updates(units, parallel=parallel)
    finally:
        multi_tensor.CHUNK = old_chunk
    assert run.tensors == len(sizes)
    roles = in_blocks(rng, sizes, 3) if blocks else [
        [np.empty(n, np.float32) for n in sizes] for _ in range(3)]
    for a, g, p in zip(*roles):
        for x in (a, g, p):
            x[...] = rng.standard_normal(x.size)
    arrays, targets = [], []
    for k, (a, g, p) in enumerate(zip(*roles)):
        mu, lr = np.float32(0.9), np.float32(0.01 * (1 if shared else k + 1))
        out = (a, p) if in_place else (np.empty_like(a), np.empty_like(p))
        arrays += [mu, a, g, lr, p, *out]
        targets.append(out)
    assert len(args) == len(arrays)
    for step in (1, 2):
        expected = [momentum_reference(*arrays[7 * k:7 * k + 5]) for k in range(len(sizes))]
        assert run(*arrays) is targets[0][0]
        for (a2, p2), (want_a, want_p) in zip(targets, expected):
            np.testing.assert_array_equal(a2, want_a)
            np.testing.assert_array_equal(p2, want_p)
        assert run.flat.calls == (step if blocks and in_place else 0)


def test_the_chunk_table_covers_every_element_once():
    table = multi_tensor.chunk_table([5, 16, 1], 8)
    assert table.tolist() == [[0, 0, 5], [1, 0, 8], [1, 8, 16], [2, 0, 1]]
    assert multi_tensor.chunk_table([5, 16], None).tolist() == [[0, 0, 5], [1, 0, 16]]


SECOND_PROCESS = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_multi_tensor import ids_of, momentum_unit
from netlang.runtime import jit
from netlang.runtime.multi_tensor import multi_tensor_updates
units = [momentum_unit(2 * k, n, ids_of(k)) for k, n in enumerate((3, 9, 4))]
run, args = multi_tensor_updates(units)
s = jit.STATS
print(json.dumps({{"written": s.written, "compiled": s.compiled, "cached": s.cached}}))
"""


def test_a_second_process_compiles_nothing(tmp_path):
    """The kernels over tuples of arrays are cached on disk like every generated kernel."""
    env = {**os.environ, "NETLANG_CACHE_DIR": str(tmp_path)}
    script = SECOND_PROCESS.format(tests=str(Path(__file__).parent))

    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", script], env=env, text=True,
                              capture_output=True, check=True)
        return json.loads(done.stdout)
    # the two members' loops (one per expression, whatever the size) and the call's two
    # loops over blocks of memory (in place, and apart: into spares); its loops over tuples
    # of arrays (arrays in no block) compile on their first call
    assert run() == {"written": 6, "compiled": 4, "cached": 0}
    assert run() == {"written": 0, "compiled": 0, "cached": 4}


def test_compile_now_takes_tuples_of_arrays_and_of_numbers():
    source = ("from netlang.runtime.jit import kernel\n\n\n"
              "@kernel(parallel=False)\n"
              "def total(xs, ws, out):\n"
              "    for t in range(len(xs)):\n"
              "        out[t] = xs[t].sum() * ws[t]\n")
    fn = jit.compile_source(source, "total", "test tuples")
    jit.compile_now(fn, [(np.float32, 1, 2), (np.float32, 0, 2), (np.float32, 1)])
    out = np.empty(2, np.float32)
    fn((np.ones(3, np.float32), np.ones(5, np.float32)), (np.float32(2), np.float32(3)), out)
    assert out.tolist() == [6, 15] and jit.compiled_signatures(fn) == 1


def test_the_entry_point_is_the_machine_code_for_those_very_types():
    source = ("from netlang.runtime.jit import kernel\n\n\n"
              "@kernel(parallel=False)\n"
              "def scale(x, w, out):\n"
              "    for k in range(x.shape[0]):\n"
              "        out[k] = x[k] * w\n")
    fn = jit.compile_source(source, "scale", "test entry point")
    jit.compile_now(fn, [(np.float32, 1), (np.float32, 0), (np.float32, 1)])
    x, out = np.arange(4, dtype=np.float32), np.empty(4, np.float32)
    entry = jit.entry_point(fn, (x, np.float32(2), out))
    assert entry is not fn
    entry(x, np.float32(3), out)
    assert out.tolist() == [0, 3, 6, 9]
    # values of other types (float64 arrays): no such machine code yet, the dispatcher itself
    assert jit.entry_point(fn, (x.astype(np.float64), np.float64(2), out)) is fn
