"""Whole steps as CUDA graphs: a bound program captured once, then replayed per step.

A step on the GPU is hundreds of small kernel launches, each paid for in Python and in the
driver.  Captured into a CUDA graph (``Stream.begin_capture`` / ``end_capture``), the same work
replays as one ``graph.launch()``.  Replay reuses the addresses the capture saw, so
``GraphedProgram`` makes every address fixed:

* feeds are copied into input buffers made once (``fixed_feeds``);
* every value computed while capturing stays referenced for the graph's lifetime (no value is
  freed, so no memory block the graph writes is ever handed to anything else);
* a variable's new value is copied over the graph's copy of the variable at the end of the
  step (inside the graph), so the next replay reads it where the capture read the old one;
  the store gets a copy of it (one device copy of the state per step), so an array anybody
  holds is never written under them;
* what cannot be captured runs between the graphs, eagerly, and its result is copied into
  the buffer the capture saw: matmuls through cuBLAS (CuPy 14.2 refuses cuBLAS calls during
  capture; cuDNN's matmul, used where the frontend is installed, is captured), random
  draws that keep no key on the device (a captured draw would repeat its mask),
  collectives, device transfers and what reads a value back to the host (``EAGER_OPS``).
  So a step is a list of segments, each one graph or one eager call;
* a draw that reads its key from a device array (``dropout_mask``'s Philox kernel,
  runtime/gpu_draws.py) is captured with a key array of its own, which is filled from the
  host generator before each replay of its graph, in the order an uncaptured step draws.

Where the array module cannot capture (the NumPy stand-in the tests use for CuPy) every
segment runs its calls the eager way: each call computes and copies its result into the
fixed buffer.  That replays the same work into the same buffers, which is what the tests
check against an uncaptured run, step after step.  Fetched values are returned as copies
(a replay overwrites the buffers).  A capture that fails says why once and the program runs
uncaptured (``NETLANG_GRAPHS=0`` or ``--no-graph`` turns capture off).
"""
from __future__ import annotations

import contextlib
import functools
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netlang.runtime.gpu_draws import draw_key, keyed

EAGER_OPS = frozenset({"matmul", "allreduce", "allreduce_start", "allreduce_wait", "transfer",
                       "all_finite"})   # all_finite reads its answer back to the host


@dataclass
class Segment:
    """Consecutive calls captured as one graph (``graph``), or one eager call."""

    calls: list[tuple] = field(default_factory=list)   # (out, kernel, args)
    capturable: bool = True
    graph: Any = None
    keys: list = field(default_factory=list)    # the key arrays its draws read, in order


def capturable(program, index: int, kernel) -> bool:
    """Whether a call can be captured: not a draw unless it reads its key from a device
    array (``gpu_draws.keyed``), and not one of ``EAGER_OPS`` unless its kernel says it can
    be (cuDNN's matmul, runtime/cudnn_kernels.py)."""
    call = program.calls[index]
    if call.random:
        return keyed(kernel)
    return call.opdef.name not in EAGER_OPS or getattr(kernel, "capturable", False)


def segments_of(program, bound) -> list[Segment]:
    """The bound calls cut into segments at every call that cannot be captured."""
    out: list[Segment] = []
    for value, kernel, args, _dead in bound.calls:   # (reordered by cuda_updates: the call
        if capturable(program, bound.index[value], kernel):    # is found by its value)
            if not out or not out[-1].capturable:
                out.append(Segment())
            out[-1].calls.append((value, kernel, args))
        else:
            out.append(Segment([(value, kernel, args)], capturable=False))
    return out


def give_keys(segments: list[Segment], xp) -> None:
    """Each keyed draw in a captured segment given a key array of its own (zeros until a
    step fills it), so the graph reads its key at a fixed address."""
    for segment in segments:
        if not segment.capturable:
            continue
        for i, (value, kernel, args) in enumerate(segment.calls):
            if keyed(kernel):
                key = xp.zeros(1, dtype=np.uint64)
                segment.calls[i] = (value, functools.partial(kernel, key=key), args)
                segment.keys.append(key)


def can_capture(xp) -> bool:
    """Whether the array module captures streams into graphs (CuPy does; NumPy does not)."""
    stream = getattr(getattr(xp, "cuda", None), "Stream", None)
    return callable(stream) and hasattr(stream, "begin_capture")


class GraphedProgram:
    """One program at one set of sizes, its values at fixed addresses, replayed per step."""

    def __init__(self, executor, program, bound, feeds: dict, store):
        self.program, self.xp = program, executor.backend.xp
        xp = self.xp
        self.fixed_feeds = {nid: xp.array(value, copy=True) for nid, value in feeds.items()}
        arrays = getattr(store, "arrays", store)
        names = [name for _, name in program.variables] + list(program.updates)
        # The graphs read and write these copies; the store is given copies back after a
        # step (``run``), so an array anybody holds (a train loop's record of the state
        # before a step) never changes under them, as on the CPU.
        self.variables = {name: xp.array(arrays[name], copy=True) for name in names}
        self.given = {name: arrays[name] for name in names}    # what the store holds now
        self.segments = segments_of(program, bound)
        give_keys(self.segments, xp)
        self.executor = executor            # whose host generator keys the draws
        self.env: dict = {}
        self.capture = can_capture(xp)
        self.stream = xp.cuda.Stream(non_blocking=True) if self.capture else None
        self._record(executor, bound)

    def _sources(self, bound) -> dict:
        env = dict(bound.consts)
        env.update({nid: self.variables[name] for nid, name in self.program.variables})
        env.update(self.fixed_feeds)
        return env

    def _record(self, executor, bound) -> None:
        """Run the step once to build every lazy thing (discarded), then once more recording
        it: captured into graphs where the module can, with every value kept.  The host
        generator is put back afterwards, so the replays draw what an uncaptured run would."""
        rng = executor.rng
        saved = rng.bit_generator.state if rng is not None else None
        try:
            self._run_twice(bound)
        finally:
            if saved is not None:
                rng.bit_generator.state = saved

    def _run_twice(self, bound) -> None:
        warm = self._sources(bound)
        for segment in self.segments:
            for value, kernel, args in segment.calls:
                warm[value] = kernel(*[warm[a] for a in args])
        del warm
        env = self._sources(bound)
        last = len(self.segments) - 1
        with self.on_stream():
            for i, segment in enumerate(self.segments):
                if not (self.capture and segment.capturable):
                    for value, kernel, args in segment.calls:  # each its own buffer, which
                        env[value] = self.xp.array(kernel(*[env[a] for a in args]),
                                                   copy=True)  # replays copy into
                    continue
                self.stream.begin_capture()
                try:
                    for value, kernel, args in segment.calls:
                        env[value] = kernel(*[env[a] for a in args])
                    if i == last:
                        self._commit(env)
                finally:
                    segment.graph = self.stream.end_capture()
        self.commit_eagerly = not (self.segments and self.segments[-1].graph is not None)
        self.env = env

    def _commit(self, env) -> None:
        """Each updated variable's new value copied over the variable's own array."""
        for name, value in self.program.updates.items():
            self.xp.copyto(self.variables[name], env[value])

    def run(self, feeds: dict, store) -> list:
        """One step: the feeds into their buffers, every segment in order, the fetches
        copied out, and the store given copies of the updated variables.  A value put into
        the store since (a restored checkpoint) is copied in first."""
        xp, env = self.xp, self.env
        arrays = getattr(store, "arrays", store)
        for name, fixed in self.variables.items():
            if arrays[name] is not self.given[name]:      # put there since (a checkpoint)
                xp.copyto(fixed, arrays[name])
                self.given[name] = arrays[name]
        with self.on_stream():               # everything in order on one stream
            for nid, buffer in self.fixed_feeds.items():
                xp.copyto(buffer, feeds[nid])
            for segment in self.segments:
                for key in segment.keys:        # before the graph reads them
                    key.fill(draw_key(self.executor.rng))
                if segment.graph is not None:
                    segment.graph.launch(self.stream)
                    continue
                for value, kernel, args in segment.calls:
                    xp.copyto(env[value], kernel(*[env[a] for a in args]))
            if self.commit_eagerly:
                self._commit(env)
            fetched = [xp.array(env[f], copy=True) for f in self.program.fetches]
            for name in self.program.updates:
                arrays[name] = self.given[name] = xp.array(self.variables[name], copy=True)
        if self.stream is not None:
            self.stream.synchronize()
        return fetched

    def launches(self) -> dict[str, int]:
        """What one replayed step launches on the device: a graph per captured segment
        (counted so where the module cannot capture, as on the NumPy stand-in), each eager
        call, and a ``fill`` of each key a draw in a graph reads (copies of feeds, fetches
        and state are not counted)."""
        graphs = sum(1 for s in self.segments if s.capturable)
        eager = sum(len(s.calls) for s in self.segments if not s.capturable)
        return {"graphs": graphs, "eager calls": eager,
                "key fills": sum(len(s.keys) for s in self.segments)}

    def launches_per_step(self) -> int:
        """Graph launches, eager calls and key fills of one step (``launches``), against the
        kernel calls (``len(program.calls)``) an uncaptured step makes."""
        return sum(self.launches().values())

    def on_stream(self):
        """The capture stream as the current one (nothing where there is none)."""
        return self.stream if self.stream is not None else contextlib.nullcontext()


def graphed_programs(executor) -> list[GraphedProgram]:
    """The steps ``executor`` replays as graphs (none where it runs them uncaptured)."""
    return [g for per in executor._graphed.values() for g in per.values() if g is not None]


_SAID: list[str] = []


def say_once(text: str) -> None:
    if text not in _SAID:
        _SAID.append(text)
        print(text, file=sys.stderr, flush=True)
