"""The static buffer plan: planned buffers never overlap while alive, runs give the same bits
with and without the plan, variables are updated in place only when nobody else holds them,
and a training step stops allocating in the kernels that write into planned buffers."""
from __future__ import annotations

import functools
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netlang
from netlang.model import Model
from netlang.runtime import executor, memory, onednn
from netlang.runtime.backend import Backend
from netlang.runtime.cpu_kernels import cpu_factories
from netlang.runtime.executor import LastState, Spares, _last, sole_holder
from netlang.runtime.memory import StepBuffers
from netlang.runtime.onednn_kernels import onednn_kernels
from netlang.train.config import train_config
from netlang.train.optimizers import OPTIMIZERS, make_optimizer
from netlang.train.step import LR_INPUT, build_train_graph

SPECS = Path(__file__).resolve().parents[2] / "specs"
TRAINED = sorted(p.name for p in SPECS.glob("*.net") if "\ntrain " in p.read_text())


# -- the plan on random programs ---------------------------------------------------------------

SOURCES = 3   # values 0..2 are sources (inputs, variables); steps define 3, 4, ...


@st.composite
def programs(draw):
    """Random programs: each step reads 1-3 earlier values, writes into a given buffer or
    not (then it may return a view of any argument), has up to 2 scratch buffers; some
    values escape (fetched or stored as an update)."""
    count = draw(st.integers(1, 14))
    steps = []
    for index in range(count):
        out = SOURCES + index
        args = tuple(draw(st.lists(st.integers(0, out - 1), min_size=1, max_size=3)))
        steps.append(StepBuffers(out, args, draw(st.integers(0, 300)), draw(st.booleans()),
                                 tuple(draw(st.lists(st.integers(0, 200), max_size=2)))))
    values = list(range(SOURCES + count))
    escaping = draw(st.lists(st.sampled_from(values), max_size=3))
    return steps, escaping


def simulate(steps: list[StepBuffers], plan: memory.ArenaPlan, escaping) -> list[str]:
    """Run the program on a model of the arena: every planned buffer writes its own tag into
    its bytes; each step then checks the bytes of everything it reads (a value that is not
    a planned buffer reads every buffer its arguments may share), its scratch and its output.
    Escaping values must not live in the arena at all: the next run would overwrite them."""
    arena = np.full(plan.arena_bytes, -1, np.int64)
    tags: dict = {}
    seen: dict[int, set] = {}          # value -> the planned buffers it may share memory with
    problems = []

    def write(key, tag):
        if key in plan.offsets:
            start = plan.offsets[key]
            arena[start:start + plan.sizes[key]] = tag
            tags[key] = tag

    def intact(key) -> bool:
        start = plan.offsets[key]
        return bool((arena[start:start + plan.sizes[key]] == tags[key]).all())

    for index, step in enumerate(steps):
        for k in range(len(step.scratch)):
            write((index, k), 1_000_000 + 10 * index + k)
        write(step.out, step.out)
        held = set().union(*(seen.get(a, set()) for a in step.args))
        held |= {(index, k) for k in range(len(step.scratch)) if (index, k) in plan.offsets}
        if step.out in plan.offsets:
            held.add(step.out)
        problems += [f"step {index} reads {key}, overwritten" for key in held if not intact(key)]
        if step.writes_out:
            seen[step.out] = {step.out} if step.out in plan.offsets else set()
        else:
            seen[step.out] = set().union(*(seen.get(a, set()) for a in step.args))
    problems += [f"{e} escapes in the arena" for e in escaping if seen.get(e)]
    return problems


@settings(max_examples=300, deadline=None)
@given(programs())
def test_live_buffers_never_share_bytes_on_random_programs(program):
    steps, escaping = program
    ranges = memory.live_ranges(steps, escaping)
    plan = memory.plan_arena(ranges)
    assert memory.conflicts(plan, ranges) == []
    assert simulate(steps, plan, escaping) == []
    assert memory.live_peak(ranges) <= plan.arena_bytes
    placed = [r for r in ranges if r.key in plan.offsets]
    assert all(plan.offsets[r.key] % memory.ALIGNMENT == 0 for r in placed)
    assert all(plan.offsets[r.key] + r.nbytes <= plan.arena_bytes for r in placed)


@settings(max_examples=300, deadline=None)
@given(programs(), st.data())
def test_an_update_overwrites_its_variable_only_when_nobody_reads_the_old_value(program, data):
    """Sources 0..2 are variables with arrays of their own.  When ``overwritable`` allows a
    step to write over one of its arguments, a replay that does so must never show the new
    bytes to a later read of the old value, nor hand them out in place of the old value."""
    steps, escaping = program
    at = data.draw(st.integers(0, len(steps) - 1))
    sources = [j for j, a in enumerate(steps[at].args) if a < SOURCES]
    if not sources:
        return
    arg = data.draw(st.sampled_from(sources))
    if not memory.overwritable(steps, at, arg, escaping):
        return
    target = steps[at].args[arg]
    stale, shares = False, {s: {s} for s in range(SOURCES)}
    for index, step in enumerate(steps):
        reads_target = any(target in shares.get(a, set()) for a in step.args)
        assert not (stale and reads_target), f"step {index} reads overwritten variable"
        if index == at:
            assert [target in shares[a] for a in step.args].count(True) == 1
            stale = True
            shares[step.out] = {("new", target)}
        elif step.writes_out:
            shares[step.out] = {step.out}
        else:
            shares[step.out] = set().union(*(shares.get(a, set()) for a in step.args))
    new = steps[at].out
    for e in escaping:
        assert target not in shares.get(e, set()), "the old value escapes, overwritten"
        assert e == new or ("new", target) not in shares.get(e, set())
    assert escaping.count(new) <= 1


def test_a_chain_reuses_two_slots_and_a_view_keeps_its_buffer():
    """a -> b -> c -> d, 100 bytes each: two 128-byte slots.  A view of b read at the end
    keeps b's slot busy to the end, so c and d cannot take it."""
    chain = [StepBuffers(1, (0,), 100, True), StepBuffers(2, (1,), 100, True),
             StepBuffers(3, (2,), 100, True), StepBuffers(4, (3,), 100, True)]
    plan = memory.plan_arena(memory.live_ranges(chain, [4]))
    assert (plan.arena_bytes, plan.slots, plan.live_peak) == (256, 2, 200)
    assert 4 not in plan.offsets            # the fetched output is the caller's array
    viewed = [*chain[:2], StepBuffers(9, (2,), 100, False), *chain[2:],
              StepBuffers(5, (4, 9), 100, True)]
    ranges = {r.key: (r.start, r.end) for r in memory.live_ranges(viewed, [5])}
    assert ranges == {1: (0, 1), 2: (1, 5), 3: (3, 4), 4: (4, 5)}
    assert memory.plan_arena(memory.live_ranges(viewed, [5])).slots == 3


def test_a_buffer_that_an_escaping_view_may_alias_is_not_planned():
    steps = [StepBuffers(1, (0,), 64, True), StepBuffers(2, (1,), 64, False),
             StepBuffers(3, (1,), 64, True)]
    assert [r.key for r in memory.live_ranges(steps, [2, 3])] == []
    assert [r.key for r in memory.live_ranges(steps, [3])] == [1]


def test_an_output_is_no_view_of_an_input_read_for_its_shape_alone():
    """sum_to_like(g, b) reads b's shape only: its output may view g, never b, so b's buffer
    is free after its last real read and b's update may overwrite b."""
    steps = [StepBuffers(1, (0,), 64, True), StepBuffers(2, (0,), 64, True),
             StepBuffers(3, (2, 1), 64, False, (), (2,)), StepBuffers(4, (3,), 64, True)]
    owners = memory.may_alias(steps)
    assert owners[3] == {2}
    ranges = {r.key: (r.start, r.end) for r in memory.live_ranges(steps, [4])}
    assert ranges == {1: (0, 2), 2: (1, 3)}
    every = [*steps[:2], StepBuffers(3, (2, 1), 64, False), steps[3]]
    assert memory.may_alias(every)[3] == {1, 2}
    filled = [StepBuffers(1, (0,), 64, False, (), ())]      # fill_like: a fresh array
    assert memory.may_alias(filled)[1] == {1}


# -- a fused group written over one of its inputs -----------------------------------------------

ADAM_PARAM = (("sqrt", ("x2",), ()), ("add", ("t0", "x3"), ()), ("div", ("x1", "t1"), ()),
              ("mul", ("t2", "x4"), ()), ("sub", ("x0", "t3"), ()))
ADAM_SLOT = (("mul", ("x0", "x1"), ()), ("mul", ("x2", "x3"), ()), ("add", ("t0", "t1"), ()))
RELU_GRAD = (("mul", ("x0", "x1"), ()), ("relu_grad", ("t0", "x2"), ()))
SELECT = (("greater", ("x0", "x1"), ()), ("select", ("t0", "x0", "x1"), ()),
          ("mul", ("t1", "x0"), ()))
BIAS_RELU = (("add", ("x0", "x1"), ()), ("relu", ("t0",), ()), ("mul", ("t1", "x0"), ()))


@pytest.mark.parametrize("expr, shapes, overwritten", [
    (ADAM_PARAM, [(6, 5)] * 3 + [(), ()], 0), (ADAM_PARAM, [(6, 5)] * 3 + [(), ()], 1),
    (ADAM_PARAM, [(6, 5)] * 3 + [(), ()], 2), (ADAM_SLOT, [(7,), (), (7,), ()], 0),
    (ADAM_SLOT, [(7,), (), (7,), ()], 2), (RELU_GRAD, [(4, 8)] * 3, 0),
    (RELU_GRAD, [(4, 8)] * 3, 1), (RELU_GRAD, [(4, 8)] * 3, 2), (SELECT, [(9,)] * 2, 0),
    (SELECT, [(9,)] * 2, 1), (BIAS_RELU, [(2, 3, 4, 4), (4,)], 0)])
def test_a_group_may_write_over_the_input_it_is_told(expr, shapes, overwritten):
    """The variant ``overwriting(i)`` of a fused kernel gives the group's bits when its
    ``out`` is input i itself, for an input read first, in the middle, last, or twice."""
    from netlang.runtime.cpu_kernels import KernelState, fused

    rng = np.random.default_rng(3)
    inputs = [np.abs(rng.standard_normal(shape)).astype(np.float32) + 0.5 for shape in shapes]
    kernel = fused(shapes, [np.float32] * len(shapes), {"expr": expr}, KernelState())
    expected = kernel(*[a.copy() for a in inputs])
    variant = kernel.overwriting(overwritten)
    target = inputs[overwritten]
    scratch = tuple(np.empty(shape, dtype) for shape, dtype in variant.scratch)
    result = variant(*inputs, out=target, scratch=scratch)
    assert result is target
    np.testing.assert_array_equal(result, expected)
    assert kernel.overwriting(overwritten + len(shapes)) is None


# -- whole specs: the same bits with and without the plan --------------------------------------

def train_session(spec: str, kernels: str = "default", batch: int = 8, planned: bool = True,
                  backend: Backend | None = None):
    """(session, feeds, loss name) of ``spec``'s train step, as ``netlang train`` builds it,
    fed one synthetic batch."""
    model = netlang.compile(str(SPECS / spec))
    config = train_config(model.train_config, model.graph.name)
    graph = build_train_graph(model, config.make_optimizer(), config.weight_decay)
    session = Model(graph, passes=model.passes).session("cpu", 0, kernels)
    if backend is not None:
        session.backend = session.executor.backend = backend
    session.executor.buffer_plan = planned
    rng = np.random.default_rng(1)
    feeds = {LR_INPUT: np.float32(config.make_optimizer().lr)}
    for name, nid in model.graph.inputs.items():
        t = model.graph.nodes[nid].type
        shape = tuple(d if isinstance(d, int) else batch for d in t.shape)
        feeds[name] = (rng.standard_normal(shape) if t.dtype.is_float
                       else rng.integers(0, 2, shape)).astype(t.dtype.numpy)
    return session, feeds, model.graph.loss


def trajectory(spec: str, kernels: str, planned: bool, steps: int = 3,
               backend: Backend | None = None):
    session, feeds, loss = train_session(spec, kernels, planned=planned, backend=backend)
    losses = [session.run(loss, feeds, training=True, updates=True) for _ in range(steps)]
    outputs = sorted(session.model.graph.outputs)
    evaluated = session.run([o for o in outputs if not o.startswith("grad/")],
                            {k: v for k, v in feeds.items() if k != LR_INPUT})
    return losses, session.state.to_numpy(), evaluated


@pytest.mark.parametrize("spec", TRAINED)
def test_specs_train_and_evaluate_bit_for_bit_the_same_with_the_plan(spec):
    """3 train steps (forward, backward, updates in place) and an eval run of every output:
    losses, every parameter and optimizer slot, and the outputs equal bit for bit."""
    planned = trajectory(spec, "default", True)
    plain = trajectory(spec, "default", False)
    assert planned[0] == plain[0]
    assert planned[1].keys() == plain[1].keys()
    for name in plain[1]:
        np.testing.assert_array_equal(planned[1][name], plain[1][name], err_msg=name)
    for a, b in zip(planned[2], plain[2]):
        np.testing.assert_array_equal(a, b)


def test_a_train_steps_seed_and_mean_gradient_are_computed_when_bound(monkeypatch):
    """autodiff's seed ``fill_like(loss)`` and ``mean_grad`` of it depend on the sizes
    alone: the bound step hands on arrays computed once (``executor.fold_at_binding``), with
    the bits of computing them every step."""
    folded = trajectory("spiral.net", "default", True)
    session, feeds, loss = train_session("spiral.net")
    step(session, feeds, loss)
    bound = next(b for by in session.executor._bound.values() for b in by.values()
                 if b.in_place)
    program = next(p for p in session.executor._bound if session.executor._bound[p] and
                   bound in session.executor._bound[p].values())
    ops = {program.calls[i].opdef.name for i, call in enumerate(bound.calls)
           if getattr(call[1], "__name__", "") == "folded"}
    assert ops == {"fill_like", "mean_grad"}
    monkeypatch.setattr(executor, "FOLD_AT_BINDING", 0)
    every_step = trajectory("spiral.net", "default", True)
    assert folded[0] == every_step[0]
    for name in folded[1]:
        np.testing.assert_array_equal(folded[1][name], every_step[1][name], err_msg=name)


@pytest.mark.parametrize("kernels", ["builtin", "library and NumPy"])
def test_other_kernel_sets_give_the_same_bits_too(kernels):
    """``--kernels builtin``: the NumPy convolutions keep the forward's patch matrix for the
    filter gradient, keyed by the input array, which is a planned buffer reused every run.
    oneDNN and the NumPy fused plans alone: Adam's updates written over their variables by
    the NumPy plans' ``overwriting`` variants."""
    backend = library_and_numpy_backend() if kernels != "builtin" else None
    planned, plain = (trajectory("mnist.net", "builtin", flag, backend=backend)
                      for flag in (True, False))
    assert planned[0] == plain[0]
    for name in plain[1]:
        np.testing.assert_array_equal(planned[1][name], plain[1][name], err_msg=name)


# -- variables updated in place ----------------------------------------------------------------

def step(session, feeds, loss):
    return session.run(loss, feeds, training=True, updates=True)


def test_parameters_and_optimizer_slots_keep_their_arrays():
    session, feeds, loss = train_session("mnist.net")
    step(session, feeds, loss)
    # Ids, not the arrays: holding them would keep the update from overwriting them.
    before = {k: id(v) for k, v in session.state.items()}
    copies = {k: v.copy() for k, v in session.state.items()}
    step(session, feeds, loss)
    kept = [k for k, v in session.state.items() if id(v) == before[k]]
    changed = [k for k in kept if not np.array_equal(session.state[k], copies[k])]
    # Adam's beta powers are scalars updated by a plain mul: new arrays each step.
    assert sorted(set(before) - set(kept)) == ["adam/beta1_power", "adam/beta2_power"]
    assert len(kept) == 24 and changed == kept
    assert session.executor.spares.arrays == {}


def test_a_fetched_parameter_keeps_its_value_and_the_update_goes_elsewhere():
    session, feeds, loss = train_session("mnist.net")
    step(session, feeds, loss)
    w = session.run("dense1/W")                       # the state's own array, not a copy
    held = w.copy()
    step(session, feeds, loss)
    np.testing.assert_array_equal(w, held)            # the step wrote a spare instead
    assert session.state["dense1/W"] is not w
    assert not np.array_equal(session.state["dense1/W"], held)
    del w
    current = id(session.state["dense1/W"])
    step(session, feeds, loss)
    assert id(session.state["dense1/W"]) == current   # in place again, nobody else holds it


def test_arrays_put_into_the_state_between_steps_are_the_ones_updated():
    """After steps whose updates all went in place (the next run then checks the state's
    arrays at once, ``executor.LastState``), a user puts copies into the state and keeps the
    arrays they replace: the copies are trained on, bit for bit as without the swap (the
    copies lie in no arena: the update's tuple kernels run), and the kept arrays stay."""
    one, feeds, loss = train_session("mnist_small.net")
    other, _, _ = train_session("mnist_small.net")
    for _ in range(3):
        assert step(one, feeds, loss) == step(other, feeds, loss)
    replaced = dict(other.state.arrays)
    values = {k: v.copy() for k, v in replaced.items()}
    for name, value in replaced.items():
        other.state[name] = value.copy()
    copies = {k: id(v) for k, v in other.state.items()}   # ids: holding them would keep
    for _ in range(2):                                      # the updates from overwriting
        assert step(one, feeds, loss) == step(other, feeds, loss)
    for name, value in values.items():
        np.testing.assert_array_equal(replaced[name], value, err_msg=name)
        np.testing.assert_array_equal(other.state[name], one.state[name], err_msg=name)
    kept = [k for k in copies if id(other.state[k]) == copies[k]]
    assert len(kept) == len(copies) - 2                 # all but Adam's beta powers
    held = other.state["dense1/W"]                       # held once it is in place again
    before = held.copy()
    step(one, feeds, loss)
    step(other, feeds, loss)
    np.testing.assert_array_equal(held, before)
    np.testing.assert_array_equal(other.state["dense1/W"], one.state["dense1/W"])


def test_a_copy_of_the_state_kept_for_two_steps_stays_intact_and_arrays_are_recycled():
    """As the train loop keeps the state before each step (to re-run one that goes
    non-finite): those arrays are never overwritten, and after two steps the updates
    rotate through three arrays per variable instead of allocating."""
    session, feeds, loss = train_session("mnist.net")
    records: list[tuple[dict, dict]] = []
    seen: dict[str, set] = {}
    for _ in range(6):
        records = [*records[-1:], (dict(session.state.arrays),
                                   {k: v.copy() for k, v in session.state.arrays.items()})]
        step(session, feeds, loss)
        for kept, copies in records:
            for name, value in kept.items():
                np.testing.assert_array_equal(value, copies[name], err_msg=name)
        for name, value in session.state.arrays.items():
            seen.setdefault(name, set()).add(id(value))
    assert max(len(ids) for name, ids in seen.items() if "beta" not in name) == 3


def test_once_the_spares_rotate_an_array_somebody_holds_is_never_written():
    """A train loop's steps take every variable's oldest spare at once after the first few
    (``executor.LastState``: generations of spares).  A parameter fetched and held across
    those steps keeps its value: when its array comes round as the oldest spare, the step
    sees it held and writes elsewhere; the run's numbers are those of a session whose
    steps all went through the per-variable checks."""
    session, feeds, loss = train_session("mnist_small.net")
    other, _, _ = train_session("mnist_small.net")      # no copies kept: in place
    records: list = []
    held = before = None
    for k in range(12):
        records = [*records[-1:], dict(session.state.arrays)]
        if k == 5:
            held = session.run("dense1/W")
            before = held.copy()
        assert step(session, feeds, loss) == step(other, feeds, loss)
    np.testing.assert_array_equal(held, before)
    for name in session.state.arrays:
        np.testing.assert_array_equal(session.state[name], other.state[name], err_msg=name)
    del held
    for _ in range(4):
        records = [*records[-1:], dict(session.state.arrays)]
        step(session, feeds, loss)
    bound = next(b for by in session.executor._bound.values() for b in by.values()
                 if b.in_place)
    assert bound.last.mode == LastState.SPARES


def test_restored_arrays_are_updated_like_initialized_ones(tmp_path):
    """A checkpoint saved after 2 steps, restored into a new session, trains on exactly as
    the first session does (the saved values were the state of that step)."""
    first, feeds, loss = train_session("mnist_small.net")
    for _ in range(2):
        step(first, feeds, loss)
    first.save(tmp_path / "two.ckpt")
    second, _, _ = train_session("mnist_small.net")
    second.restore(tmp_path / "two.ckpt")
    second.rng.bit_generator.state = first.rng.bit_generator.state
    assert [step(first, feeds, loss) for _ in range(2)] == [step(second, feeds, loss)
                                                             for _ in range(2)]


def test_only_an_array_the_container_alone_holds_is_its_sole_holders():
    state = {"w": np.zeros(3)}
    assert sole_holder(state, "w")
    view = state["w"][1:]
    assert not sole_holder(state, "w")
    del view
    other = state["w"]
    assert not sole_holder(state, "w")
    del other
    spares = Spares(keep_last=1)
    spares.keep("w", state.pop("w"))
    first = spares.take("w", (3,), np.dtype(np.float64))
    assert spares.arrays["w"] == [] and first.shape == (3,)
    spares.keep("w", first)                       # still held here: not handed out again
    assert spares.take("w", (3,), np.dtype(np.float64)) is not first


# -- allocations per training step -------------------------------------------------------------

LARGE = 64 << 10    # bytes; the loss, the bias gradients and Adam's scalars stay below


class AllocationProbe:
    """A kernel profile (``Executor.profile``) that records each kernel during which NumPy
    allocated at least ``LARGE`` bytes more than it held before the call (tracemalloc's
    peak; NumPy reports its data to tracemalloc), by op name."""

    def __init__(self):
        self.runs = 0
        self.allocating: list[str] = []
        self.values: list[int] = []
        self.kernels = 0

    def start(self) -> int:
        tracemalloc.reset_peak()
        return tracemalloc.get_traced_memory()[0]

    def stop(self, _graph, node, started: int) -> None:
        self.kernels += 1
        if tracemalloc.get_traced_memory()[1] - started >= LARGE:
            self.allocating.append(node.op)
            self.values.append(node.id)


def allocating_kernels(session, feeds, loss) -> AllocationProbe:
    for _ in range(2):
        step(session, feeds, loss)
    probe = session.executor.profile = AllocationProbe()
    tracemalloc.start()
    try:
        step(session, feeds, loss)
    finally:
        tracemalloc.stop()
        session.executor.profile = None
    return probe


def without_state(factory, shapes, dtypes, attrs, _state):
    return factory(shapes, dtypes, attrs)


def library_and_numpy_backend() -> Backend:
    """The CPU backend with oneDNN's kernels and netlang's NumPy fast paths only (no Numba
    kernels): the allocations below do not move as generated kernels come and go."""
    factories: dict[str, tuple] = {}
    for op, factory in onednn_kernels().items():
        factories[op] = (functools.partial(without_state, factory),)
    for op, made in cpu_factories().items():
        factories[op] = factories.get(op, ()) + made
    return Backend("cpu", np, factories=factories)


@pytest.mark.skipif(not onednn.available(), reason="the pinned kernels are oneDNN's")
def test_a_training_step_allocates_only_where_a_kernel_cannot_take_out():
    """mnist at batch 64, the third step, with oneDNN's and netlang's NumPy kernels: every
    output of a kernel with ``out=`` lives in the arena or over its variable.  4 kernels
    still allocate 64 KiB or more, each for a reason of its own:

    * 3 reference kernels return new arrays: dropout's multiply (f32[64,1024]) and the two
      relu gradients (f32[64,8,8,64], f32[64,24,24,32]) (dropout's mask is drawn into its
      planned buffer, and the bias gradients' vector of ones is made once);
    * the fused group mul -> relu_grad writes relu_grad over its own gradient, so it builds
      the mask ``y > 0`` as a bool array (64 KiB, a quarter of its f32[64,1024] output).

    Without the plan, 24 kernels allocate (every large output)."""
    session, feeds, loss = train_session("mnist.net", batch=64,
                                         backend=library_and_numpy_backend())
    probe = allocating_kernels(session, feeds, loss)
    assert sorted(probe.allocating) == ["fused", "mul", "relu_grad", "relu_grad"]
    session.executor.buffer_plan = False
    unplanned = allocating_kernels(session, feeds, loss)
    assert len(unplanned.allocating) == 24 and probe.kernels == unplanned.kernels == 60


def test_with_the_default_kernels_a_training_step_allocates_nothing_large():
    """mnist at batch 64 with the default kernels, after the first steps: no kernel
    allocates 64 KiB or more (every large value lives in the arena or over its variable,
    dropout's mask included)."""
    session, feeds, loss = train_session("mnist.net", batch=64)
    probe = allocating_kernels(session, feeds, loss)
    assert probe.allocating == [] and probe.kernels == 60


# -- a variable and its optimizer slots updated by one loop -----------------------------------

def optimizer_trajectory(name: str, weight_decay: float, planned: bool, steps: int = 3):
    """``steps`` train steps of mnist_small with optimizer ``name``: losses, state, and how
    many calls hand on an array a merged update wrote (``executor._last``)."""
    model = netlang.compile(str(SPECS / "mnist_small.net"))
    optimizer = make_optimizer(name, {"lr": 0.01})
    graph = build_train_graph(model, optimizer, weight_decay)
    session = Model(graph, passes=model.passes).session("cpu", 0)
    session.executor.buffer_plan = planned
    rng = np.random.default_rng(2)
    feeds = {LR_INPUT: np.float32(0.01), "image": rng.standard_normal((8, 28, 28, 1), np.float32),
             "label": rng.integers(0, 10, 8).astype(np.int32)}
    losses = [step(session, feeds, model.graph.loss) for _ in range(steps)]
    (per_size,) = session.executor._bound.values()
    handed_on = sum(run is _last for bound in per_size.values()
                    for _, run, _, _ in bound.calls)
    return losses, session.state.to_numpy(), handed_on


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_merged_updates_give_the_same_bits_for_every_optimizer(name, weight_decay):
    """With the plan, each parameter's update and its slots' (momentum, m and v, ...) run as
    one generated loop; parameters and slots equal the unplanned run's bit for bit."""
    planned = optimizer_trajectory(name, weight_decay, True)
    plain = optimizer_trajectory(name, weight_decay, False)
    assert planned[0] == plain[0]
    for key in plain[1]:
        np.testing.assert_array_equal(planned[1][key], plain[1][key], err_msg=key)
    assert (planned[2] > 0 or name == "sgd") and plain[2] == 0
