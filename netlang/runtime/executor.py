"""The interpreter: run a ``Program``'s calls over an env dict, freeing dead buffers.

Sources are loaded first: fed values from the feeds, parameters and state from the
``State``, constants from the graph (moved to the backend once per program).  Then each
call runs its kernel and drops the values whose last use it was, so memory follows the
liveness plan.  Kernels are chosen when a program is bound, once per program and batch size
(the feeds fix symbolic dims such as N): the backend's factories get every node's concrete
shapes (oneDNN primitives, generated fused functions, reused buffers are made then), and
the reference kernel runs where none takes the node.  The loop does nothing per step that
could be done at bind time; a failing kernel is reported with its node and spec location.
"""
from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netlang.errors import ExecutionError, FeedError, NetlangError
from netlang.ir.types import bind_dims
from netlang.runtime.backend import Backend
from netlang.runtime.cpu_kernels import KernelState
from netlang.runtime.profile import KernelProfile
from netlang.runtime.program import Program


@dataclass
class Bound:
    """A program made ready for one executor and batch size: constants on its backend, each
    call's kernel chosen (and built), the rng in random calls."""

    consts: dict[int, Any]
    calls: list[tuple]          # (out, run(*arrays), args, dead)
    index: dict[int, int]       # out id -> position in calls


class Executor:
    def __init__(self, backend: Backend, rng=None):
        self.backend = backend
        self._rng = rng
        self.kernel_calls = 0           # counted so tests can prove what did not run
        self.on_step: Callable | None = None   # hook(node, value), e.g. non-finite checks
        self.profile: KernelProfile | None = None   # time per kind of kernel (runtime/profile)
        self.kernel_state = KernelState()           # what kernels share between calls
        self._bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def rng(self):
        return self._rng

    @rng.setter
    def rng(self, rng) -> None:
        self._rng = rng
        self._bound.clear()   # random calls carry the generator

    def bind(self, program: Program, feeds: dict[int, Any] | None = None) -> Bound:
        """The program bound for the sizes ``feeds`` give its symbolic dims (cached)."""
        dims = self._dims(program, feeds or {})
        per_size = self._bound.get(program)
        if per_size is None:
            per_size = self._bound[program] = {}
        key = tuple(sorted(dims.items()))
        bound = per_size.get(key)
        if bound is None:
            consts = {n.id: self.backend.asarray(n.attrs["value"]) for n in program.consts}
            calls = [(c.out, self._kernel(program, c, dims), c.args, c.dead)
                     for c in program.calls]
            bound = per_size[key] = Bound(consts, calls,
                                          {c.out: i for i, c in enumerate(program.calls)})
        return bound

    def _dims(self, program: Program, feeds: dict[int, Any]) -> dict[str, int]:
        dims: dict[str, int] = {}
        for nid in program.fed:
            value = feeds.get(nid)
            if value is not None:
                bind_dims(program.graph.nodes[nid].type.shape, tuple(value.shape), dims)
        return dims

    def _kernel(self, program: Program, call, dims: dict[str, int]) -> Callable:
        """The backend's kernel for this call at these sizes, else the reference."""
        attrs = {**call.attrs, "rng": self._rng} if call.random else call.attrs
        factories = self.backend.factories.get(call.opdef.name, ())
        if factories and not call.random:
            types = [program.graph.nodes[a].type for a in call.args]
            try:
                shapes = [t.concrete(dims) for t in types]
            except KeyError:        # a dim the feeds do not fix: the reference runs
                shapes = None
            if shapes is not None:
                dtypes = [t.dtype.numpy for t in types]
                for factory in factories:
                    run = factory(shapes, dtypes, call.attrs, self.kernel_state)
                    if run is not None:
                        return run
        kernel = self.backend.kernel_for(call.opdef)
        return functools.partial(kernel, self.backend.xp, **attrs)

    def run(self, program: Program, feeds: dict[int, Any], store) -> list[Any]:
        """Run ``program``: ``feeds`` maps fed ids to arrays, ``store`` holds the variables
        (read here, and written with the program's updates at the end)."""
        bound = self.bind(program, feeds)
        env = self._sources(program, bound, feeds, store)
        if self.on_step is not None or self.profile is not None:
            return self._run_traced(program, bound, env, store)
        out = None
        try:
            for out, kernel, args, dead in bound.calls:
                env[out] = kernel(*[env[a] for a in args])
                for d in dead:
                    del env[d]
        except Exception as err:  # noqa: BLE001 - any kernel failure, reported with its node
            self.kernel_calls += bound.index[out]
            raise self._failure(program, bound, out, env, err) from None
        self.kernel_calls += len(bound.calls)
        return self._finish(program, env, store)

    def _sources(self, program: Program, bound: Bound, feeds, store) -> dict[int, Any]:
        if len(feeds) < len(program.fed) or not program.fed <= feeds.keys():
            missing = sorted(program.graph.nodes[f].name or f"%{f}" for f in program.fed
                             if f not in feeds)
            raise FeedError(f"no value fed for {', '.join(missing)}")
        env = dict(bound.consts)
        arrays = getattr(store, "arrays", store)   # a State's dict, read without a call each
        try:
            for nid, name in program.variables:
                env[nid] = arrays[name]
        except KeyError as err:
            raise ExecutionError(f"the variable {err} has no value in this session's state",
                                 hint="initialize or restore the session's state") from None
        for nid in program.fed:
            env[nid] = feeds[nid]
        return env

    def _finish(self, program: Program, env, store) -> list[Any]:
        arrays = getattr(store, "arrays", store)
        for name, value_id in program.updates.items():
            arrays[name] = env[value_id]
        return [env[f] for f in program.fetches]

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
        return self._finish(program, env, store)

    def _failure(self, program: Program, bound: Bound, out, env, err) -> NetlangError:
        """The error for a kernel that raised, naming its node, inputs and spec location."""
        node = program.calls[bound.index[out]].node
        if isinstance(err, NetlangError):
            return err.with_span(node.span)
        shapes = ", ".join(str(getattr(env.get(a), "shape", "?")) for a in node.inputs)
        return ExecutionError(f"{node.op} (node %{node.id}) failed on inputs of shapes "
                              f"{shapes}: {err}", node.span)
