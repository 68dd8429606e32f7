"""Memory planning: when each buffer can be freed, and what that saves at a given batch size.

Liveness runs over the graph in its (topological) run order: a value dies right after the
step that uses it last, unless a run must return it (fetches, outputs, state updates).  The
executor frees on exactly that schedule: ``runtime.program.plan`` takes its lists from
``last_uses``.  ``netlang explain`` compares the peak bytes held by activations, the values
kernels compute, with the plan and without it (every value kept to the end of the run).
Parameters, state, constants and fed inputs are not activations: they exist either way.
Symbolic dims (``N``) are bound to the batch size.  Each value is counted as its own buffer,
so views (a NumPy reshape) make the numbers an upper bound.
"""
from __future__ import annotations

from dataclasses import dataclass

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
    bindings = _AllSymbols(batch)
    count = 1
    for d in t.shape:
        count *= resolve_dim(d, bindings)
    return count * t.dtype.itemsize


class _AllSymbols(dict):
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
