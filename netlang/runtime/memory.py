"""Memory planning: when each buffer can be freed, and where each buffer lives.

Liveness runs over the graph in its (topological) run order: a value dies right after the
step that uses it last, unless a run must return it (fetches, outputs, state updates).  The
executor drops values on exactly that schedule: ``runtime.program.plan`` takes its lists
from ``last_uses``.  ``netlang explain`` compares the peak bytes held by activations, the
values kernels compute, with the plan and without it (every value kept to the end of the
run).  Parameters, state, constants and fed inputs are not activations: they exist either
way.  Symbolic dims (``N``) are bound to the batch size.  Each value is counted as its own
buffer, so views (a NumPy reshape) make the numbers an upper bound.

The static buffer plan (``live_ranges``, ``plan_arena``) places the outputs of kernels that
can write into a given buffer at fixed offsets of one arena, by coloring the interference
graph of their live ranges; ``overwritable`` says when a variable's update may overwrite the
variable's own array.  The executor applies both when it binds a program to a batch size.
This is the one module that imports networkx.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from netlang.ir.graph import Graph, Node
from netlang.ir.types import TensorType, resolve_dim


def last_uses(steps: list[Node], keep: set[int]) -> list[list[int]]:
    """For each step, the values that die once it has run (never those in ``keep``)."""
    last: dict[int, int] = {}
    for index, node in enumerate(steps):
        last.setdefault(node.id, index)
        for i in node.inputs:
            last[i] = index
    free: list[list[int]] = [[] for _ in steps]
    for value, index in last.items():
        if value not in keep:
            free[index].append(value)
    return free


def tensor_bytes(t: TensorType, batch: int) -> int:
    bindings = AllSymbols(batch)
    count = 1
    for d in t.shape:
        count *= resolve_dim(d, bindings)
    return count * t.dtype.itemsize


class AllSymbols(dict):
    """Bindings that give every symbolic dim the batch size."""

    def __init__(self, batch: int):
        super().__init__()
        self.batch = batch

    def __missing__(self, _symbol: str) -> int:
        return self.batch


@dataclass(frozen=True)
class MemoryPlan:
    batch: int
    peak_bytes: int          # most bytes of activations alive at once, freeing on the plan
    unplanned_bytes: int     # bytes of activations alive at the end when nothing is freed
    peak_step: Node | None   # the step where the planned peak is reached
    values: int              # number of activations


def plan_memory_usage(graph: Graph, batch: int = 1) -> MemoryPlan:
    """The peak bytes of a full run of ``graph`` (its outputs and updates) at ``batch``."""
    roots = graph.roots()
    live = graph.ancestors(roots)
    steps = [node for node in graph if node.id in live]
    free = last_uses(steps, set(roots))
    size = {n.id: tensor_bytes(n.type, batch) for n in steps if not n.is_source()}
    held = peak = 0
    peak_step = None
    for node, dead in zip(steps, free):
        held += size.get(node.id, 0)
        if held > peak:
            peak, peak_step = held, node
        held -= sum(size.get(d, 0) for d in dead)
    return MemoryPlan(batch, peak, sum(size.values()), peak_step, len(size))


def human_bytes(count: int) -> str:
    """``12,845,056 B (12.25 MiB)``: exact bytes, then a readable size."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count:,} B ({count / scale:.2f} {unit})"
    return f"{count:,} B"


# -- the static buffer plan: one arena, a slot per colour of the interference graph --------------
#
# The executor binds a program once per batch size; that is when its values get buffers.  A
# kernel marked ``writes_out`` (runtime/cpu_kernels.py) writes into a buffer it is given, so
# its output can live at a fixed offset of one arena, reused by values whose lives do not
# overlap.  Any other kernel may return a view of an input (a reshape) or the input itself,
# so its output may share memory with its inputs: a buffer then lives as long as anything
# that may alias it, and a buffer that anything escaping the run may alias (a fetch, a state
# update) stays out of the arena, since the next run would overwrite what the user holds.

ALIGNMENT = 64   # every slot starts on a cache line (and on any dtype's alignment)


@dataclass(frozen=True)
class StepBuffers:
    """What the buffer plan needs to know of one kernel call of a program."""

    out: int
    args: tuple[int, ...]
    nbytes: int                    # the output's bytes
    writes_out: bool               # the output is a fresh buffer it can be told to write into
    scratch: tuple[int, ...] = ()  # bytes of buffers the kernel uses during its call only
    viewed: tuple[int, ...] | None = None   # the args its output may view (None: all of them;
    #                                         an op's ``shape_only`` inputs are left out)


@dataclass(frozen=True)
class LiveRange:
    """A buffer that must hold its bytes from step ``start`` to step ``end`` (inclusive)."""

    key: Any             # the value's id, or (step index, k) for a call's k-th scratch buffer
    start: int
    end: int
    nbytes: int

    def overlaps(self, other: LiveRange) -> bool:
        return self.start <= other.end and other.start <= self.end


def may_alias(steps: list[StepBuffers]) -> dict[int, frozenset[int]]:
    """For each value, the buffers it may share memory with: a source or a ``writes_out``
    output owns its own; any other kernel's output may be a view of any of its inputs but
    those it reads for their shape alone (``StepBuffers.viewed``; one that views none of its
    inputs owns its own too)."""
    owners: dict[int, frozenset[int]] = {}
    for step in steps:
        for a in step.args:
            owners.setdefault(a, frozenset((a,)))
        if step.writes_out:
            owners[step.out] = frozenset((step.out,))
        else:
            viewed = step.args if step.viewed is None else step.viewed
            owners[step.out] = (frozenset().union(*(owners[a] for a in viewed))
                                if viewed or step.viewed is None else frozenset((step.out,)))
    return owners


def last_reads(steps: list[StepBuffers]) -> dict[int, int]:
    """For each value, the index of the last step that reads it (its own step if none)."""
    last: dict[int, int] = {}
    for index, step in enumerate(steps):
        last.setdefault(step.out, index)
        for a in step.args:
            last[a] = index
    return last


def live_ranges(steps: list[StepBuffers], escaping: Iterable[int]) -> list[LiveRange]:
    """The ranges of the buffers an arena can hold: each ``writes_out`` output that nothing
    escaping the run may alias, from its step to the last read of anything that may alias
    it; and each call's scratch buffers, for its own step."""
    owners, last = may_alias(steps), last_reads(steps)
    escaped = frozenset().union(*(owners.get(e, ()) for e in escaping))
    end: dict[int, int] = {}
    for value, owned in owners.items():
        for owner in owned:
            end[owner] = max(end.get(owner, 0), last[value])
    ranges = []
    for index, step in enumerate(steps):
        if step.writes_out and step.out not in escaped and step.nbytes > 0:
            ranges.append(LiveRange(step.out, index, end[step.out], step.nbytes))
        ranges += [LiveRange((index, k), index, index, size)
                   for k, size in enumerate(step.scratch) if size > 0]
    return ranges


def overwritable(steps: list[StepBuffers], at: int, arg: int, escaping: Iterable[int],
                 owners: dict[int, frozenset[int]] | None = None,
                 last: dict[int, int] | None = None) -> bool:
    """Whether step ``at`` may write its output over its argument ``arg`` (a variable's array,
    updated in place): nothing that may share that buffer is read after step ``at`` or
    escapes the run, no other argument of the step may share it, and nothing escaping but
    the output itself may alias the output.  ``owners`` and ``last`` are ``may_alias`` and
    ``last_reads`` of ``steps``, when the caller has them already."""
    step = steps[at]
    target = step.args[arg]
    owners = may_alias(steps) if owners is None else owners
    last = last_reads(steps) if last is None else last
    if not step.writes_out or any(target in owners[a] for j, a in enumerate(step.args)
                                  if j != arg):
        return False
    for value, owned in owners.items():
        if target in owned and last[value] > at:
            return False
    escaping = list(escaping)
    if escaping.count(step.out) > 1:     # fetched too, or the new value of two variables
        return False
    return not any(target in owners.get(e, ()) or (e != step.out and step.out in
                                                   owners.get(e, ())) for e in escaping)


def graph_library():
    """networkx, imported on first use, not with this module: only binding a program needs
    it (0.1-0.2 s; ``backend.cpu_set_up_beside`` imports it while data loads)."""
    import networkx

    return networkx


def interference_graph(ranges: list[LiveRange]):
    """Live ranges as a networkx graph: an edge joins two ranges alive at the same step."""
    graph = graph_library().Graph()
    graph.add_nodes_from(r.key for r in ranges)
    by_start = sorted(ranges, key=lambda r: r.start)
    for i, r in enumerate(by_start):
        for other in by_start[i + 1:]:
            if other.start > r.end:
                break
            graph.add_edge(r.key, other.key)
    return graph


def aligned(nbytes: int) -> int:
    """``nbytes`` rounded up to whole ``ALIGNMENT`` lines (an arena slot's size)."""
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


def _in_order(key: Callable) -> Callable:
    """A networkx coloring strategy visiting the nodes sorted by ``key``."""
    return lambda graph, _colors: sorted(graph, key=key)


@dataclass(frozen=True)
class ArenaPlan:
    """Where each planned buffer lives: ``offsets[key]`` bytes into one arena of
    ``arena_bytes``.  ``live_peak`` is the most bytes of these buffers alive at one step,
    which no arena can beat; ``slots`` the colours used; ``strategy`` the coloring chosen."""

    offsets: dict
    sizes: dict
    arena_bytes: int
    live_peak: int
    slots: int
    strategy: str


def plan_arena(ranges: list[LiveRange]) -> ArenaPlan:
    """Colour the interference graph (networkx's greedy coloring, under a few orders: by
    start uses the fewest colours an interval graph can have, largest buffer first gave the
    smallest arena on every shipped spec); each colour is one slot as large as its largest
    member, slots laid end to end.  The smallest arena wins.  (networkx's DSATUR and
    largest-degree orders never won on the specs, and DSATUR took 0.8 s on 200 buffers.)"""
    if not ranges:
        return ArenaPlan({}, {}, 0, 0, 0, "none")
    nx = graph_library()
    graph = interference_graph(ranges)
    info = {r.key: r for r in ranges}
    strategies = {
        "by start": _in_order(lambda k: (info[k].start, -info[k].nbytes)),
        "largest buffer first": _in_order(lambda k: (-info[k].nbytes, info[k].start)),
        "smallest_last": "smallest_last",
    }
    best = None
    for name, strategy in strategies.items():
        colors = nx.greedy_color(graph, strategy=strategy)
        slot_bytes: dict[int, int] = {}
        for key, color in colors.items():
            slot_bytes[color] = max(slot_bytes.get(color, 0), aligned(info[key].nbytes))
        total = sum(slot_bytes.values())
        if best is None or total < best[0]:
            best = (total, name, colors, slot_bytes)
    total, name, colors, slot_bytes = best
    start, offset = {}, 0
    for color in sorted(slot_bytes):
        start[color], offset = offset, offset + slot_bytes[color]
    offsets = {key: start[color] for key, color in colors.items()}
    return ArenaPlan(offsets, {r.key: r.nbytes for r in ranges}, total, live_peak(ranges),
                     len(slot_bytes), name)


def live_peak(ranges: list[LiveRange]) -> int:
    """The most bytes of ``ranges`` alive at any one step."""
    events: dict[int, int] = {}
    for r in ranges:
        events[r.start] = events.get(r.start, 0) + r.nbytes
        events[r.end + 1] = events.get(r.end + 1, 0) - r.nbytes
    held = peak = 0
    for index in sorted(events):
        held += events[index]
        peak = max(peak, held)
    return peak


def conflicts(plan: ArenaPlan, ranges: list[LiveRange]) -> list[tuple]:
    """Pairs of ranges alive at the same step whose bytes overlap in the arena (none, for a
    correct plan; the tests check it on random programs)."""
    placed = [r for r in ranges if r.key in plan.offsets]
    bad = []
    for i, a in enumerate(placed):
        for b in placed[i + 1:]:
            oa, ob = plan.offsets[a.key], plan.offsets[b.key]
            if a.overlaps(b) and oa < ob + b.nbytes and ob < oa + a.nbytes:
                bad.append((a.key, b.key))
    return bad
