"""The interpreter: run a ``Program``'s calls over an env dict, freeing dead buffers.

Sources are loaded first: fed values from the feeds, parameters and state from the
``State``, constants from the graph (moved to the backend once per program).  Then each
call runs its kernel and drops the values whose last use it was, so memory follows the
liveness plan.  Kernels are chosen when a program is bound, once per program and batch size
(the feeds fix symbolic dims such as N): the backend's factories get every node's concrete
shapes (oneDNN primitives, generated fused functions, reused buffers are made then), and
the reference kernel runs where none takes the node; values the sizes alone fix (autodiff's
seed, a mean's gradient of it) are computed then too (``fold_at_binding``).  The loop does
nothing per step that could be done at bind time: the calls run as one generated function
(``straight_line``), and so do the loading of sources and the storing of updates
(``run_edges``); a failing kernel is reported with its node and spec location.

Binding also makes the static buffer plan (``runtime/memory.py``): every output a kernel can
write into a given buffer (``cpu_kernels.writes_out``) gets a fixed view of one arena, bound
to its kernel as ``out=``, so after the first run a step allocates only what the other
kernels allocate.  And a variable whose new value is computed by such a kernel, as the last
reader of the variable, is updated in place: the kernel writes over the variable's own
array.  That array must be the state's alone: one that anybody else still holds (a fetched
parameter, a copy of the state kept to re-run a step) is never overwritten; the update then
goes to a spare array, recycled once nobody holds it (``Spares``).  A run that fails after
an in-place update has changed that variable (updates are the last calls of a train step).
Consecutive in-place updates of one shape made by generated kernels (a parameter and its
optimizer slots) run as one loop that reads and writes each array once (``merge_updates``),
and the loops of all parameters updated alike as one call (``runtime/multi_tensor.py``),
and a generated kernel also takes the per-channel sums that read its output
(``channel_sums.fuse_channel_sums``: a batchnorm's and a bias's gradients), and a relu
gradient after a max pooling's runs with it as one loop (``runtime/pool_gradients.py``).
"""
from __future__ import annotations

import functools
import operator
import os
import sys
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netlang.errors import DeviceError, ExecutionError, FeedError, NetlangError
from netlang.ir.graph import device_of
from netlang.ir.types import bind_dims
from netlang.runtime import capture, cuda_updates, memory
from netlang.runtime.backend import Backend, get_backend
from netlang.runtime.channel_sums import fuse_channel_sums
from netlang.runtime.cpu_kernels import KernelState, compiles_after_binding
from netlang.runtime.cpu_kernels import writes_out as marked_writing_out
from netlang.runtime.ownership import (
    ALONE_IN_TUPLE,
    arena_arrays,
    arena_dtype,
    fits,
    sole_holder,
)
from netlang.runtime.pool_gradients import PooledRelu, finish_sums, fuse_pool_relu_grads
from netlang.runtime.profile import KernelProfile
from netlang.runtime.program import Program


@dataclass(frozen=True)
class InPlace:
    """A variable whose update writes into ``env[target]``: its own array when the state
    alone holds that, else a spare of the same shape and dtype."""

    name: str
    target: tuple
    shape: tuple
    dtype: np.dtype


class LastState:
    """What a bound program's in-place updates wrote into in its last runs, so that a run like
    them checks every variable at once instead of one at a time (``run_edges``).

    ``ids``: the arrays the last run's updates wrote over, when every one of them was the
    state's own (their ids, in ``Bound.in_place``'s order; None where some update went into a
    spare, or since one of those arrays died).  A run whose state holds the very same arrays,
    each still held by the state alone (one reference count per array, taken in one C-level
    pass), needs none of the per-variable tests: the same objects passed them before, and
    only a user who reshaped or re-flagged a variable's array in place behind the state's
    back could change what they found.  ``sources`` of a step with every update in place (the
    constants, variables and feeds included), median us, busy 2-core AMD host: residual
    (110 in-place variables) 113 -> 40, mnist 44 -> 21, spiral 10 -> 5.4.

    ``spared``: the generations of spares (``Spares``) that every update of a run took whole,
    each its oldest spare, as a train loop's steps do (it keeps the state before each step, so
    no update may write over it): ids of the arrays -> weak references that forget them.  A
    run whose oldest spares are such a generation, each held by its list alone, while the
    state's arrays are not all its alone (else they are written over), takes them all at
    once, and its finish keeps the state's arrays as spares in one loop."""

    IN_PLACE, SPARES = 1, 2          # ``mode``: the shortcut this run took (0: none)
    GENERATIONS = 4                  # generations of spares remembered

    def __init__(self):
        self.ids: tuple | None = None
        self.mode = 0
        self.spared: dict[tuple, list] = {}
        self._refs: list = []

    def record(self, arrays: tuple) -> None:
        """These arrays (all the state's own) are what the run's updates write over."""
        mine = weakref.ref(self)

        def gone(_):
            if mine() is not None:
                mine().ids = None
        self._refs = [weakref.ref(a, gone) for a in arrays]
        self.ids = tuple(map(id, arrays))

    def record_spares(self, arrays: tuple) -> None:
        """These arrays, each a variable's oldest spare that fits it, are what the run's
        updates write into (a generation of spares)."""
        ids = tuple(map(id, arrays))
        if ids in self.spared:
            return
        mine = weakref.ref(self)

        def gone(_, ids=ids):
            if mine() is not None:
                mine().spared.pop(ids, None)
        while len(self.spared) >= self.GENERATIONS:
            del self.spared[next(iter(self.spared))]
        self.spared[ids] = [weakref.ref(a, gone) for a in arrays]


@dataclass
class Bound:
    """A program made ready for one executor and batch size: constants on its backend, each
    call's kernel chosen (and built), the rng in random calls; with the buffer plan, the
    arena its planned buffers live in and the variables updated in place."""

    consts: dict[int, Any]
    calls: list[tuple]          # (out, run(*arrays), args, dead)
    index: dict[int, int]       # out id -> position in program.calls
    arena: Any = None           # the bytes of every planned buffer (None: no plan)
    plan: memory.ArenaPlan | None = None
    in_place: list[InPlace] = field(default_factory=list)
    step: Callable | None = None  # the calls as one function (``straight_line``), made once
    edges: tuple | None = None    # what runs before and after the calls (``run_edges``)
    last: LastState = field(default_factory=LastState)   # the state it last wrote


class Executor:
    def __init__(self, backend: Backend, rng=None, buffer_plan: bool = True,
                 devices: dict[str, Backend] | None = None, kernels: str = "default"):
        self.backend = backend          # the session's device: where unplaced nodes run
        # the backends of the devices 'on' blocks place nodes on, made on first use (a CPU
        # one with the session's kernel set)
        self.devices = dict(devices or {})
        self.kernels = kernels
        # GPU steps as CUDA graphs (runtime/capture.py); NETLANG_GRAPHS=0 (--no-graph) says no
        self.graphs = os.environ.get("NETLANG_GRAPHS", "1") != "0"
        self._graphed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._rng = rng
        self.buffer_plan = buffer_plan  # planned buffers and in-place updates (off: each
        #                                 kernel allocates its output, as the reference does)
        # with the plan, the optimizer's updates of all parameters as one generated call on
        # the CPU (runtime/multi_tensor.py) and one launch on the GPU (runtime/cuda_updates.py);
        # off (NETLANG_MULTI_TENSOR_UPDATES=0): one per parameter or fused group; read when a
        # program is bound
        self.multi_tensor = os.environ.get("NETLANG_MULTI_TENSOR_UPDATES", "1") != "0"
        self.kernel_calls = 0           # counted so tests can prove what did not run
        self.on_step: Callable | None = None   # hook(node, value), e.g. non-finite checks
        self.profile: KernelProfile | None = None   # time per kind of kernel (runtime/profile)
        self.kernel_state = KernelState()           # what kernels share between calls
        self.spares = Spares()
        self._bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # program -> {(the fed values' shapes, planned): its Bound}, as ``bind`` found it
        self._by_shapes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def backend_of(self, node) -> Backend:
        """The backend ``node`` runs on: its ``on`` block's device, else the session's.  A
        device this machine lacks is one error at the node's spec line."""
        name = device_of(node, self.backend.name)
        if name == self.backend.name:
            return self.backend
        backend = self.devices.get(name)
        if backend is None:
            try:
                backend = self.devices[name] = get_backend(name, self.kernels)
            except DeviceError as err:
                raise DeviceError(f"'on {name}' places this op on a device this machine "
                                  f"cannot use: {err.message}", node.span,
                                  hint=f"run it where the {name} works, or move the statement "
                                       f"out of 'on {name} {{ ... }}'") from None
        return backend

    @property
    def rng(self):
        return self._rng

    @rng.setter
    def rng(self, rng) -> None:
        self._rng = rng
        self._bound.clear()   # random calls carry the generator

    def bind(self, program: Program, feeds: dict[int, Any] | None = None) -> Bound:
        """The program bound for the sizes ``feeds`` give its symbolic dims (cached).  A run
        with an ``on_step`` hook gets the program without the buffer plan: the hook may keep
        the values it is shown, which planned buffers would overwrite."""
        planned = self.buffer_plan and self.on_step is None
        feeds = feeds or {}
        shapes = tuple(getattr(feeds.get(nid), "shape", None) for nid in program.fed)
        per_shapes = self._by_shapes.get(program)
        if per_shapes is None:
            per_shapes = self._by_shapes[program] = {}
        bound = per_shapes.get((shapes, planned))
        if bound is None:      # the dims these shapes fix, matched once (2-3 us a run)
            bound = self.bind_sizes(program, self._dims(program, feeds), planned)
            per_shapes[shapes, planned] = bound
        return bound

    def bind_sizes(self, program: Program, dims: dict[str, int], planned: bool = True
                   ) -> Bound:
        """The program bound for these symbolic dims (cached per program, dims and plan)."""
        per_size = self._bound.get(program)
        if per_size is None:
            per_size = self._bound[program] = {}
        key = (tuple(sorted(dims.items())), planned)
        bound = per_size.get(key)
        if bound is None:
            with compiles_after_binding():  # the kernels the bound program still calls
                bound = per_size[key] = self._new_bound(program, dims, planned)
        return bound

    def _new_bound(self, program: Program, dims: dict[str, int], planned: bool) -> Bound:
        """The program's calls with their kernels (and, ``planned``, buffers)."""
        runs = [self._kernel(program, c, dims) for c in program.calls]
        consts = {n.id: self._const(n) for n in program.consts}
        fold_at_binding(program, runs, consts, dims, self.backend_of)
        bound = Bound(consts, [(c.out, run, c.args, c.dead)
                               for c, run in zip(program.calls, runs)],
                      {c.out: i for i, c in enumerate(program.calls)})
        def types(nid):
            return _concrete(program, nid, dims)
        pooled = fuse_pool_relu_grads(program, bound, runs, types,
                                      _kept_in_registers if planned else None)
        if planned:
            plan_buffers(program, bound, runs, dims, self.multi_tensor, pooled)
            if self.multi_tensor and self.backend.name == "gpu":
                cuda_updates.merge_gpu_updates(program, bound, self.backend, dims)
        else:       # the same kernels (and bits) as with the plan
            finish_sums(bound, pooled, {}, types)
            fuse_channel_sums(program, bound, runs, {}, set(), types)
        return bound

    def _const(self, node):
        """A constant moved to its device once per program.  On the CPU the program gets a
        writeable copy of the graph's read-only array: Numba types a read-only array apart,
        so a kernel compiled at binding for arrays (``jit.compile_now``) would compile again
        at its first call.  No kernel writes its inputs, and the buffer plan writes only
        variables and its own buffers."""
        try:
            value = self.backend_of(node).asarray(node.attrs["value"])
        except DeviceError as err:          # a dtype the device cannot hold
            raise err.with_span(node.span) from None
        if isinstance(value, np.ndarray) and not value.flags.writeable:
            value = value.copy()
        return value

    def _dims(self, program: Program, feeds: dict[int, Any]) -> dict[str, int]:
        dims: dict[str, int] = {}
        for nid in program.fed:
            value = feeds.get(nid)
            if value is not None:
                bind_dims(program.graph.nodes[nid].type.shape, tuple(value.shape), dims)
        return dims

    def _kernel(self, program: Program, call, dims: dict[str, int]) -> Callable:
        """The backend's kernel for this call at these sizes, else the reference."""
        backend = self.backend_of(call.node)
        try:
            for a in (*call.args, call.out):
                backend.holds(program.graph.nodes[a].type.dtype.numpy)
        except DeviceError as err:
            raise err.with_span(call.node.span) from None
        if call.opdef.name == "transfer":       # a copy between two devices' backends
            source = self.backend_of(program.graph.nodes[call.args[0]])
            return functools.partial(_transfer, source, backend)
        attrs = {**call.attrs, "rng": self._rng} if call.random else call.attrs
        factories = backend.factories.get(call.opdef.name, ())
        types = [program.graph.nodes[a].type for a in (*call.args, call.out)]
        if factories and any(t.dtype.is_half for t in types):
            note_half_precision(backend)
            factories = ()       # the library and generated kernels take f32 and f64
        if factories and not call.random:
            try:
                shapes = [t.concrete(dims) for t in types]
            except KeyError:        # a dim the feeds do not fix: the reference runs
                shapes = None
            if shapes is not None and any(0 in s for s in shapes):
                shapes = None       # an empty array in or out (a batch of 0): the reference
            if shapes is not None:
                shapes, types = shapes[:-1], types[:-1]
                dtypes = [t.dtype.numpy for t in types]
                for factory in factories:
                    try:
                        run = factory(shapes, dtypes, call.attrs, self.kernel_state)
                    except NetlangError as err:   # sizes the shape rule could not check
                        raise err.with_span(call.node.span) from None   # (symbolic ones)
                    if run is not None:
                        return run
        kernel = backend.kernel_for(call.opdef)
        run = functools.partial(kernel, backend.xp, **attrs)
        # A reference kernel that can write into a given NumPy array (dropout's mask) gets
        # its planned buffer on the CPU too.
        if getattr(kernel, "writes_out", False) and backend.xp is np:
            return marked_writing_out(run)
        return run

    def run(self, program: Program, feeds: dict[int, Any], store) -> list[Any]:
        """Run ``program``: ``feeds`` maps fed ids to arrays, ``store`` holds the variables
        (read here, and written with the program's updates at the end)."""
        bound = self.bind(program, feeds)
        graphed = self._graphed_program(program, bound, feeds, store)
        if graphed is not None:
            self.kernel_calls += len(bound.calls)
            return graphed.run(feeds, store)
        # Planned buffers hold new values each run: a patch matrix is reused within a run only.
        self.kernel_state.new_run()
        env = self._sources(program, bound, feeds, store)
        if self.on_step is not None or self.profile is not None:
            return self._run_traced(program, bound, env, store)
        try:
            straight_line(bound)(env)
        except StepFailure as failure:     # a kernel failed: reported with its node
            env.update(failure.values)
            self.kernel_calls += failure.index
            out = bound.calls[failure.index][0]
            raise self._failure(program, bound, out, env, failure.__cause__) from None
        self.kernel_calls += len(bound.calls)
        return self._finish(program, bound, env, store)

    def _graphed_program(self, program: Program, bound: Bound, feeds, store):
        """The program's step as CUDA graphs (runtime/capture.py), made on its first run at
        these sizes; None where a run is not replayed: off, not the GPU, a traced run, or
        nodes placed on another device.  A capture that fails says why once, then runs as
        before."""
        if (not self.graphs or self.backend.name != "gpu" or self.on_step is not None
                or self.profile is not None or len(feeds) < len(program.fed)
                or any(device_of(c.node, self.backend.name) != self.backend.name
                       for c in program.calls)):
            return None
        per_program = self._graphed.setdefault(program, {})
        key = id(bound)
        if key not in per_program:
            try:
                per_program[key] = capture.GraphedProgram(self, program, bound, feeds, store)
            except Exception as err:  # noqa: BLE001 - whatever capture refused: run uncaptured
                capture.say_once(f"note: the step runs without CUDA graphs ({type(err).__name__}"
                                 f": {err})")
                per_program[key] = None
        return per_program[key]

    def _sources(self, program: Program, bound: Bound, feeds, store) -> dict[int, Any]:
        if len(feeds) < len(program.fed) or not program.fed <= feeds.keys():
            missing = sorted(program.graph.nodes[f].name or f"%{f}" for f in program.fed
                             if f not in feeds)
            raise FeedError(f"no value fed for {', '.join(missing)}")
        if bound.edges is None:
            bound.edges = run_edges(program, bound, self.spares)
        try:
            return bound.edges[0](getattr(store, "arrays", store), feeds)
        except KeyError as err:
            raise ExecutionError(f"the variable {err} has no value in this session's state",
                                 hint="initialize or restore the session's state") from None

    def _finish(self, program: Program, bound: Bound, env, store) -> list[Any]:
        return bound.edges[1](getattr(store, "arrays", store), env)

    def _run_traced(self, program: Program, bound: Bound, env, store) -> list[Any]:
        """The same run, one kernel at a time: calls ``on_step(node, value)`` after every step
        and times every kernel into ``profile`` (whichever is set; slower)."""
        hook, profile = self.on_step, self.profile
        if hook is not None:
            for node in program.steps:
                if node.id in env:
                    hook(node, env[node.id])
        out = None
        try:
            for out, kernel, args, dead in bound.calls:
                node = program.calls[bound.index[out]].node
                started = profile.start() if profile is not None else 0.0
                env[out] = kernel(*[env[a] for a in args])
                self.kernel_calls += 1
                if profile is not None:
                    profile.stop(program.graph, node, started)
                if hook is not None:
                    hook(node, env[out])
                for d in dead:
                    del env[d]
        except Exception as err:  # noqa: BLE001 - any kernel failure, reported with its node
            raise self._failure(program, bound, out, env, err) from None
        if profile is not None:
            profile.runs += 1
        return self._finish(program, bound, env, store)

    def _failure(self, program: Program, bound: Bound, out, env, err) -> NetlangError:
        """The error for a kernel that raised, naming its node, inputs and spec location."""
        node = program.calls[bound.index[out]].node
        if isinstance(err, NetlangError):
            return err.with_span(node.span)
        shapes = ", ".join(str(getattr(env.get(a), "shape", "?")) for a in node.inputs)
        return ExecutionError(f"{node.op} (node %{node.id}) failed on inputs of shapes "
                              f"{shapes}: {err}", node.span)


def _transfer(source: Backend, target: Backend, value):
    """``value`` on ``source``'s device copied to ``target``'s (host <-> GPU)."""
    return target.asarray(source.to_numpy(value))


# -- values known once the sizes are ----------------------------------------------------------

# At most this many elements in a value ``fold_at_binding`` computes once (it then stays
# allocated for the bound program, apart from the planned buffers).
FOLD_AT_BINDING = 1 << 16


def fold_at_binding(program: Program, runs: list, consts: dict, dims: dict[str, int],
                    backend_of: Callable) -> None:
    """CPU calls whose every input is a constant, a value folded here, or read for its shape
    alone (``OpDef.shape_only``) compute the same value every step once the sizes are known:
    autodiff's seed ``fill_like(loss)`` and the mean's gradient of it, ``mean_grad(seed,
    losses)``, in every train step.  Each is computed now by its own kernel (the same bits)
    and its run becomes one that hands on that array.  Not for a value a user sees (fetched,
    or a variable's new value): nothing else may write it, as no kernel writes its inputs.
    spiral's step at batch 64: two calls of 1.7 and 2.0 us each step."""
    escaping = {*program.fetches, *program.updates.values()}
    known, graph = dict(consts), program.graph
    for i, call in enumerate(program.calls):
        op = call.opdef
        if (not op.foldable or call.random or call.out in escaping
                or backend_of(call.node).name != "cpu"):
            continue
        try:
            size = int(np.prod(graph.nodes[call.out].type.concrete(dims), dtype=np.int64))
            arrays = [known[a] if a in known else _shape_of(graph.nodes[a].type, dims)
                      if k in op.shape_only else None for k, a in enumerate(call.args)]
        except KeyError:        # a dim the sizes do not fix
            continue
        if size > FOLD_AT_BINDING or any(a is None for a in arrays):
            continue
        try:
            with np.errstate(all="ignore"):
                value = runs[i](*arrays)
        except (NetlangError, ArithmeticError, ValueError, TypeError, IndexError):
            continue            # left to run time, which reports it with its node
        known[call.out] = value
        runs[i] = _handing_on(value)


def _shape_of(tensor_type, dims: dict[str, int]) -> np.ndarray:
    """An array of this type's shape and dtype for an input read for its shape alone (one
    zero seen through every index: nothing allocated)."""
    dtype = tensor_type.dtype.numpy
    return np.broadcast_to(np.zeros((), dtype), tensor_type.concrete(dims))


def _handing_on(value) -> Callable:
    def folded(*_arrays):
        """A value computed once, when the program was bound (``fold_at_binding``)."""
        return value
    return folded


# -- the step as one generated function ------------------------------------------------------

class StepFailure(Exception):
    """A kernel of a straight-line step raised (the cause): its index among the calls and
    the values computed so far, for the error message."""

    def __init__(self, index: int, values: dict):
        super().__init__(index)
        self.index, self.values = index, values


def straight_line(bound: Bound) -> Callable:
    """``step(env)``: ``bound``'s calls as one generated Python function, made on the first
    run (binding has settled the calls by then).  Each value is a local variable (``v12 =
    k3(v9, v10)``) instead of a dict entry read and written per call, dead values are
    ``del``-ed where the loop freed them, sources are read from ``env`` once and the values
    the run returns are written back to it.  On spiral's 42 small kernels that saves 8%
    (``netlang bench --workloads spiral``, three interleaved runs each, medians 371k -> 400k
    samples/s at batch 64 and 958k -> 1,035k at 256).

    A merged update's later members (``_last``) are no calls: their value is the local of
    the array the group's loop wrote (one name for both, deleted once neither is live).
    Residual's 94 of them took 26 us of its 117 us update (``netlang bench --profile``)."""
    if bound.step is not None:
        return bound.step
    produced = {out for out, _, _, _ in bound.calls}
    freed = {d for _, _, _, dead in bound.calls for d in dead}
    names: dict = {}            # env key (a node id, or an in-place target) -> local name

    def local(key) -> str:
        if key not in names:
            names[key] = f"v{len(names)}"
        return names[key]

    holders: dict[str, set] = {}   # local name -> the live keys it holds (aliases share one)
    lines, loaded, scope = ["def step(env):", "    at = 0", "    try:"], set(), {}
    for i, (out, run, args, dead) in enumerate(bound.calls):
        for a in args:
            if a not in produced and a not in loaded:
                scope[f"key{len(loaded)}"] = a
                lines.append(f"        {local(a)} = env[key{len(loaded)}]")
                holders[local(a)] = {a}
                loaded.add(a)
        if run is _last:        # a merged update's later member: the array its loop wrote
            names[out] = local(args[0])
        elif run is _kept_in_registers:
            lines.append(f"        {local(out)} = None")
        else:
            scope[f"k{i}"] = run
            lines += [f"        at = {i}",
                      f"        {local(out)} = k{i}({', '.join(local(a) for a in args)})"]
        holders.setdefault(local(out), set()).add(out)
        for d in dead:
            held = holders[local(d)]
            held.discard(d)
            if not held:
                lines.append(f"        del {local(d)}")
    lines += [f"        env[{out!r}] = {local(out)}" for out, _, _, _ in bound.calls
              if out not in freed]
    lines.append("        pass")            # a program of no calls (a fetched variable)
    lines += ["    except Exception as err:",
              "        values = {keys[k]: v for k, v in locals().items() if k in keys}",
              "        raise StepFailure(at, values) from err", ""]
    scope["keys"] = {name: key for key, name in names.items()}
    scope["StepFailure"] = StepFailure
    exec(compile("\n".join(lines), "<netlang step>", "exec"), scope)  # noqa: S102
    bound.step = scope["step"]
    return bound.step


def run_edges(program: Program, bound: Bound, spares: Spares) -> tuple[Callable, Callable]:
    """``(sources(arrays, feeds) -> env, finish(arrays, env) -> fetched values)``: what a run
    does before and after its calls, generated for this bound program (no loop over the
    variables in Python: on spiral with a train loop's copy of the state, 18 updates, the
    two took 23 us of a 95 us run when each variable had a line).

    ``sources``: env holds the constants, the array each in-place update writes into, every
    variable the program reads (a KeyError names one the state lacks) and the feeds.  Before
    env holds the variables, whether the state alone holds each array is decided by
    counting references (so no local name may hold one either): an update writes over its
    variable's array when that is the state's alone and fits, else into a spare.  Where the
    state holds the arrays the last run wrote over, each still its alone, or every update
    can take the oldest of its spares as a train loop's step does, that is decided for all
    of them at once (``LastState``).
    ``finish``: a variable's array that an update did not write over is kept as a spare;
    the updates' values go to the state, and the fetched values come back."""
    last = bound.last
    names = [u.name for u in bound.in_place]
    scope = {"consts": bound.consts, "sole_holder": sole_holder, "fits": fits,
             "take": spares.take, "keep": spares.keep, "family": bound.in_place,
             "kept": spares.arrays, "keep_last": spares.keep_last, "last": last,
             "getrefcount": sys.getrefcount, "first": operator.itemgetter(0),
             "alone": [ALONE_IN_TUPLE] * len(bound.in_place),
             "held": _getter(names),      # each in-place variable's entry (state, spares)
             "targets": tuple(u.target for u in bound.in_place),
             "variables": tuple(nid for nid, _ in program.variables),
             "read": _getter([name for _, name in program.variables]),
             "fed": tuple(program.fed), "feed": _getter(list(program.fed)),
             "updated": tuple(program.updates), "update": _getter(list(program.updates.values())),
             "fetched": _getter(list(program.fetches)),
             "IN_PLACE": LastState.IN_PLACE, "SPARES": LastState.SPARES}
    lines = ["def sources(arrays, feeds):", "    env = dict(consts)", "    mode = 0"]
    if bound.in_place:
        lines += ["    if last.ids is not None:",
                  "        try:",
                  "            now = held(arrays)",
                  "        except KeyError:",
                  "            now = ()",
                  "        if (tuple(map(id, now)) == last.ids",
                  "                and list(map(getrefcount, now)) == alone):",
                  "            env.update(zip(targets, now))",
                  "            mode = IN_PLACE",
                  "        now = None",
                  "    if not mode and last.spared:",
                  "        try:",
                  "            spare_lists = held(kept)",
                  "            oldest = tuple(map(first, spare_lists))",
                  "        except (KeyError, IndexError):",
                  "            spare_lists = oldest = ()",
                  "        if (tuple(map(id, oldest)) in last.spared",
                  "                and list(map(getrefcount, oldest)) == alone",
                  "                and list(map(getrefcount, held(arrays))) != alone):",
                  "            for spare_list in spare_lists:",
                  "                del spare_list[0]",
                  "            env.update(zip(targets, oldest))",
                  "            mode = SPARES",
                  "        spare_lists = oldest = None",
                  "    if not mode:",
                  "        last.ids = None",
                  "        whole = True",
                  "        rotated = True"]
    for k, update in enumerate(bound.in_place):
        scope.update({f"n{k}": update.name, f"t{k}": update.target, f"s{k}": update.shape,
                      f"d{k}": update.dtype})
        test = f"n{k} in arrays and sole_holder(arrays, n{k}) and fits(arrays[n{k}], s{k}, d{k})"
        # a train loop's step: the oldest spare is free (``Spares.take``'s first try, inline)
        spare = f"spares and sole_holder(spares, 0) and fits(spares[0], s{k}, d{k})"
        lines += [f"        if {test}:", f"            env[t{k}] = arrays[n{k}]",
                  "            rotated = False",
                  "        else:", "            whole = False",
                  f"            spares = kept.get(n{k})", f"            if {spare}:",
                  f"                env[t{k}] = spares.pop(0)", "            else:",
                  "                rotated = False",
                  f"                env[t{k}] = take(n{k}, s{k}, d{k}, family)"]
    if bound.in_place:
        lines += ["        spares = None",
                  "        if whole:", "            last.record(held(arrays))",
                  "        elif rotated:",
                  "            last.record_spares(tuple(env[t] for t in targets))"]
    lines += ["    last.mode = mode",
              "    env.update(zip(variables, read(arrays)))",
              "    env.update(zip(fed, feed(feeds)))",
              "    return env", "", "def finish(arrays, env):"]
    if bound.in_place:
        lines += ["    if last.mode == SPARES:      # every variable's array is kept as a spare",
                  "        for spare_list, old in zip(held(kept), held(arrays)):",
                  "            spare_list.append(old)",
                  "            del spare_list[:-keep_last]",
                  "    elif not last.mode:"]
    for k in range(len(bound.in_place)):
        lines += [f"        old = arrays.get(n{k})",
                  f"        if old is not None and old is not env[t{k}]:",
                  f"            keep(n{k}, old)"]
    lines += ["    arrays.update(zip(updated, update(env)))",
              "    return list(fetched(env))", ""]
    exec(compile("\n".join(lines), "<netlang run edges>", "exec"), scope)  # noqa: S102
    return scope["sources"], scope["finish"]


def _getter(keys: list) -> Callable:
    """``get(mapping)``: the tuple of ``mapping[key]`` for each of ``keys``, in one C-level
    call (``operator.itemgetter``, which returns a lone value bare for one key)."""
    if len(keys) == 1:
        key = keys[0]
        return lambda mapping: (mapping[key],)
    if not keys:
        return lambda mapping: ()
    return operator.itemgetter(*keys)


# -- the static buffer plan, applied to a bound program ----------------------------------------

HALF_NOTE = ("note: f16 and bf16 run NumPy's reference kernels on the CPU (no library has a "
             "fast half GEMM there): they save memory, not time")
_HALF_NOTED: list[bool] = []


def note_half_precision(backend: Backend) -> None:
    """Say once per process that half precision on the CPU takes the slow path."""
    if backend.name == "cpu" and not _HALF_NOTED:
        _HALF_NOTED.append(True)
        print(HALF_NOTE, file=sys.stderr, flush=True)


def plan_buffers(program: Program, bound: Bound, runs: list[Callable],
                 dims: dict[str, int], multi_tensor: bool = True,
                 pooled: Sequence[PooledRelu] = ()) -> None:
    """Give ``bound``'s calls their planned buffers (see the module doc): updates in place
    where ``memory.overwritable`` allows, then one arena for the outputs and scratch buffers
    of ``writes_out`` kernels that nothing escaping the run may alias.  Each call reads
    what ``bound``'s reads (``pooled``: the relu gradients that read their maxpool
    gradient's arguments instead, ``runtime/pool_gradients.py``)."""
    types = {c.out: _concrete(program, c.out, dims) for c in program.calls}
    steps = [memory.StepBuffers(c.out, args, _nbytes(types[c.out]),
                                writes_out(run) and types[c.out] is not None,
                                _scratch_bytes(run), _viewed(c))
             for c, run, (_, _, args, _) in zip(program.calls, runs, bound.calls)]
    escaping = [*program.fetches, *program.updates.values()]
    runs, targets, overwritten = list(runs), {}, {}
    for update, index, variant, position in in_place_updates(program, steps, runs, types,
                                                             dims, escaping):
        bound.in_place.append(update)
        runs[index], targets[index] = variant, update.target
        overwritten[index] = position
        old = steps[index]
        steps[index] = memory.StepBuffers(old.out, old.args, old.nbytes, True,
                                          _scratch_bytes(variant))
    plan = memory.plan_arena(memory.live_ranges(steps, escaping))
    bound.plan, bound.arena = plan, arena_bytes(plan.arena_bytes)
    views = {key: _view(bound.arena, plan.offsets[key], *shape)
             for key, shape in _buffer_types(plan, types, runs).items()}
    for index, call in enumerate(bound.calls):
        bound.calls[index] = _with_buffers(call, index, runs[index], views,
                                           targets.get(index))
    finish_sums(bound, pooled, views, types.get)
    fuse_channel_sums(program, bound, runs, views, set(targets),
                      lambda nid: _concrete(program, nid, dims), planned=True)
    merge_updates(program, bound, runs, targets, overwritten, types,
                  memory.may_alias(steps), multi_tensor, set(views))


def _viewed(call) -> tuple[int, ...] | None:
    """The arguments a call's output may be a view of: all but its op's shape-only ones."""
    skip = call.opdef.shape_only
    return tuple(a for k, a in enumerate(call.args) if k not in skip) if skip else None


def merge_updates(program: Program, bound: Bound, runs: list, targets: dict,
                  overwritten: dict, types: dict, owners: dict,
                  multi_tensor: bool = True, planned: set = frozenset()) -> None:
    """Runs of consecutive in-place updates of one shape (a parameter and its optimizer
    slots, which the train step builds one after another) become one generated loop
    (``generated.merged_updates``) at the first one's place; the others then only hand on
    the array their update was written into.  Nothing else runs between them, so every
    input the loop reads is still alive and no planned buffer is reused in between.

    ``multi_tensor``: the loops of many variables that compute the same thing (the same
    optimizer, every parameter) run as one call (``runtime/multi_tensor.py``), where the
    order of the step allows (``multi_tensor.group_units``; ``owners``: ``memory.may_alias``
    of the step's values; ``planned``: the values with a planned buffer, which their calls
    write into every run)."""
    from netlang.runtime.multi_tensor import group_units

    units = _update_units(program, bound, runs, targets, overwritten, types)
    if multi_tensor:
        groups = group_units(units, *_effects(program, bound, overwritten, owners))
    else:
        groups = [[unit] for unit in units]
    updated = {u.name for u in bound.in_place}
    fixed = frozenset({*planned, *targets.values(),
                       *(nid for nid, name in program.variables if name in updated)})
    for group in groups:
        _merge_group(program, bound, runs, targets, overwritten, group, fixed)


def _update_units(program: Program, bound: Bound, runs: list, targets: dict,
                  overwritten: dict, types: dict) -> list:
    """Each run of consecutive in-place updates of one shape by generated kernels (one
    update alone, too) as a ``multi_tensor.Unit``: what one loop can compute.  The call
    right before such a run joins it when only the run reads its result (a weight's decayed
    gradient ``g + wd * W``): the loop computes it in registers and stores it nowhere."""
    from netlang.runtime import generated
    from netlang.runtime.multi_tensor import Unit

    readers: dict = {}
    for i, call in enumerate(program.calls):
        for a in {*call.args, *(a for a in bound.calls[i][2] if isinstance(a, int))}:
            readers.setdefault(a, set()).add(i)
    escaping = {*program.fetches, *program.updates.values()}
    units, index = [], 0
    while index < len(bound.calls):
        shape = types.get(bound.calls[index][0])
        end = index
        while (end in targets and shape is not None and types.get(bound.calls[end][0]) == shape
               and generated.mergeable(runs[end], *shape)):
            end += 1
        if end > index:
            before = index - 1
            call = program.calls[before] if before >= 0 else None
            run = bound.calls[before][1] if call is not None else None
            absorbed = (call is not None and before not in targets
                        and types.get(call.out) == shape
                        and generated.mergeable(runs[before], *shape)
                        and getattr(run, "func", run) is runs[before]   # no sums taken
                        and call.out not in escaping
                        and readers.get(call.out, set()) <= set(range(index, end)))
            whole = range(before if absorbed else index, end)
            for window in _apart(whole, program, runs, targets):
                members = [(runs[i], program.calls[i].args, overwritten.get(i)) for i in window]
                written = [m for m, i in enumerate(window) if i in targets]
                loop = generated.update_loop(members, [program.calls[i].out for i in window],
                                             written)
                units.append(Unit(window, loop,
                                  tuple(targets[i] for i in window if i in targets)))
        index = max(end, index + 1)
    return units


def _apart(window: range, program: Program, runs: list, targets: dict) -> list[range]:
    """``window``'s calls as the runs that touch no array of another: the updates of
    variables of one shape that follow each other (a convolution's bias, then the
    batchnorm's gamma and beta, 16 channels each) each as their own unit, so that they
    compute what every other variable's update does (one ``UpdateLoop.key``) and join the
    same multi-tensor call.  Calls are tied where one reads another's result or both read
    or write one array (not a number all of them read: the learning rate); the whole
    window where the tied calls do not lie next to each other, or some run would update
    no variable.  Residual's Adam: two calls (11 tensors, and 7 loops of 3 variables) ->
    one of 32 tensors; the update inside the step (first to last update call, median of
    200 steps, three interleaved runs, busy 2-core host) 88-122 -> 50-60 us."""
    tied = memory.graph_library().utils.UnionFind(window)
    made = {program.calls[i].out: i for i in window}
    seen: dict = {}                 # an array some call reads -> the first call that reads it
    for i in window:
        for arg, kind in zip(program.calls[i].args, runs[i].group.kinds):
            if arg in made:
                tied.union(i, made[arg])
            elif kind not in ("scalar", "unused"):
                tied.union(i, seen.setdefault(arg, i))
    parts: list[range] = []
    for i in window:
        if parts and tied[i] == tied[parts[-1].start]:
            parts[-1] = range(parts[-1].start, i + 1)
        else:
            parts.append(range(i, i + 1))
    if (len({tied[part.start] for part in parts}) != len(parts)
            or not all(any(i in targets for i in part) for part in parts)):
        return [window]
    return parts


def _merge_group(program: Program, bound: Bound, runs: list, targets: dict,
                 overwritten: dict, group: list, fixed: frozenset) -> None:
    """``group``'s units as one call at its first call's place: a multi-tensor call for
    several units, one variable's loop for one unit of several updates (one update alone
    keeps its call); every other call of the group hands on its array (or, for a value the
    loop kept in registers, nothing).  A multi-tensor call whose every array is ``fixed``
    (a planned buffer, or a variable updated in place: the same object in every run whose
    variables are the same, ``LastState``) skips its per-array checks in such runs."""
    from netlang.runtime import generated
    from netlang.runtime.multi_tensor import multi_tensor_updates

    if len(group) > 1:
        run, args = multi_tensor_updates(group, same=bound.last, fixed=fixed,
                                         constants=frozenset(bound.consts))
    elif len(group[0].indices) > 1:
        unit = group[0]
        members = [(runs[i], program.calls[i].args, overwritten.get(i)) for i in unit.indices]
        run, args = generated.merged_updates(
            members, [program.calls[i].out for i in unit.indices], unit.loop.written)
        args = (*args, *unit.targets)
    else:
        return
    head = group[0].indices[0]
    out, _, _, dead = bound.calls[head]
    bound.calls[head] = (out, run, args, dead)
    for i in (i for unit in group for i in unit.indices if i != head):
        out, _, _, dead = bound.calls[i]
        bound.calls[i] = ((out, _last, (targets[i],), dead) if i in targets
                          else (out, _kept_in_registers, (), dead))


def _effects(program: Program, bound: Bound, overwritten: dict, owners: dict
             ) -> tuple[list, list]:
    """Per call, the values it may read (its arguments, the bound call's too, and whatever
    they may be views of) and those it writes (its output, and the variable an in-place
    update writes over)."""
    reads, writes = [], []
    for i, call in enumerate(program.calls):
        args = {*call.args, *(a for a in bound.calls[i][2] if isinstance(a, int))}
        reads.append(frozenset().union(*(owners.get(a, {a}) for a in args)))
        over = overwritten.get(i)
        writes.append(frozenset((call.out,) if over is None else (call.out, call.args[over])))
    return reads, writes


def _last(array):
    """A merged update's later member: its array was written by the first one's loop."""
    return array


def _kept_in_registers() -> None:
    """A value another call's loop computed and read itself, stored nowhere: a merged
    update's member, or the maxpool gradient a pooled relu gradient computes
    (``runtime/pool_gradients.py``)."""


def runs_a_kernel(run: Callable) -> bool:
    """Whether a bound call computes anything (not a merged update's later member, nor a
    value another call's loop kept): the straight-line step makes no call of the others."""
    return run is not _last and run is not _kept_in_registers


def stored_nowhere(bound: Bound) -> int:
    """How many of ``bound``'s values no kernel stores (``_kept_in_registers``)."""
    return sum(1 for _, run, _, _ in bound.calls if run is _kept_in_registers)


def _with_buffers(call: tuple, index: int, run: Callable, views: dict, target) -> tuple:
    """The bound call ``(out, run, args, dead)`` with ``run`` writing into its planned
    output and scratch views, or over ``env[target]`` (an in-place update)."""
    out, _, args, dead = call
    scratch = tuple(views[(index, k)] if (index, k) in views else np.empty(shape, dtype)
                    for k, (shape, dtype) in enumerate(getattr(run, "scratch", ())))
    if target is not None:
        return out, _overwriting(run, scratch), (*args, target), dead
    kwargs = {"out": views[out]} if out in views else {}
    if scratch:
        kwargs["scratch"] = scratch
    return (out, functools.partial(run, **kwargs), args, dead) if kwargs else call


def in_place_updates(program: Program, steps: list, runs: list, types: dict,
                     dims: dict[str, int], escaping: list):
    """(InPlace, call index, the run that may write over the variable) for every update the
    plan lets overwrite its variable (``memory.overwritable``) whose kernel has such a run."""
    variables = {name: nid for nid, name in program.variables}
    position = {c.out: i for i, c in enumerate(program.calls)}
    owners, last = memory.may_alias(steps), memory.last_reads(steps)
    for name, value in program.updates.items():
        index, var = position.get(value), variables.get(name)
        if index is None or var is None or not writes_out(runs[index]):
            continue
        args = program.calls[index].args
        var_type = _concrete(program, var, dims)
        overwriting = getattr(runs[index], "overwriting", None)
        if (overwriting is None or args.count(var) != 1 or var_type is None
                or var_type != types[value]
                or not memory.overwritable(steps, index, args.index(var), escaping, owners,
                                           last)):
            continue
        variant = overwriting(args.index(var))
        if variant is not None:
            yield InPlace(name, ("update", name), *var_type), index, variant, args.index(var)


def _overwriting(run: Callable, scratch: tuple) -> Callable:
    """``run`` taking the array to write into as its last argument."""
    if scratch:
        return lambda *arrays: run(*arrays[:-1], out=arrays[-1], scratch=scratch)
    return lambda *arrays: run(*arrays[:-1], out=arrays[-1])


def writes_out(run: Callable) -> bool:
    return bool(getattr(run, "writes_out", False))


def _concrete(program: Program, nid: int, dims: dict[str, int]) -> tuple | None:
    """(shape, numpy dtype) of a value at these dims, or None where they do not fix it."""
    t = program.graph.nodes[nid].type
    try:
        return t.concrete(dims), np.dtype(t.dtype.numpy)
    except KeyError:
        return None


def _nbytes(shape_dtype: tuple | None) -> int:
    if shape_dtype is None:
        return 0
    shape, dtype = shape_dtype
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _scratch_bytes(run: Callable) -> tuple[int, ...]:
    return tuple(_nbytes((tuple(s), np.dtype(d))) for s, d in getattr(run, "scratch", ()))


def _buffer_types(plan: memory.ArenaPlan, types: dict, runs: list) -> dict:
    """(shape, dtype) of every buffer the plan placed: values and scratch buffers."""
    out = {}
    for key in plan.offsets:
        if isinstance(key, tuple):
            index, k = key
            shape, dtype = runs[index].scratch[k]
            out[key] = (tuple(shape), np.dtype(dtype))
        else:
            out[key] = types[key]
    return out


def arena_bytes(nbytes: int) -> np.ndarray:
    """``nbytes`` of uninitialized memory starting on an ``ALIGNMENT`` boundary."""
    raw = np.empty(nbytes + memory.ALIGNMENT, np.uint8)
    shift = -raw.ctypes.data % memory.ALIGNMENT
    return raw[shift:shift + nbytes]


def _view(arena: np.ndarray, offset: int, shape: tuple, dtype: np.dtype) -> np.ndarray:
    nbytes = _nbytes((shape, dtype))
    return arena[offset:offset + nbytes].view(dtype).reshape(shape)


# -- whose array is it? (``runtime/ownership.py``) ----------------------------------------------

class Spares:
    """Arrays a variable's update may write into when its current array is held elsewhere
    (a fetched parameter, a train loop's copy of the state before a step): each variable's
    replaced arrays are kept (the last ``keep_last``) and handed out again once nobody else
    holds them, so such updates stop allocating too.  New ones come a generation at a time:
    one ``VariableArena`` with a place for every float variable the program updates, so
    that a step's updates write one block of memory per role (the multi-tensor update's
    flat kernel, ``runtime/multi_tensor.py``), as they do over the state's own arena."""

    def __init__(self, keep_last: int = 2):
        self.keep_last = keep_last
        self.arrays: dict[str, list] = {}

    def take(self, name: str, shape: tuple, dtype: np.dtype, family: Sequence[InPlace] = ()
             ) -> np.ndarray:
        """A free array for ``name``'s update; ``family``: the program's in-place updates
        (``InPlace``), a place for each of which a new generation holds."""
        kept = self.arrays.get(name, [])
        for i in range(len(kept)):
            if sole_holder(kept, i) and fits(kept[i], shape, dtype):
                return kept.pop(i)
        members = [u for u in family if arena_dtype(u.dtype)]
        if not arena_dtype(dtype) or name not in {u.name for u in members}:
            return np.empty(shape, dtype)
        try:
            places = dict(zip([u.name for u in members],
                              arena_arrays([(u.shape, u.dtype) for u in members])))
        except (MemoryError, OSError, OverflowError):
            return np.empty(shape, dtype)
        mine = places.pop(name)
        for other, place in places.items():     # the others' spares, taken next
            self.arrays.setdefault(other, []).append(place)
        return mine

    def keep(self, name: str, array) -> None:
        kept = self.arrays.setdefault(name, [])
        kept.append(array)
        del kept[:-self.keep_last]
