"""Where a step's time goes: seconds per kind of kernel, summed over profiled runs.

Set ``executor.profile = KernelProfile(backend)`` and run steps as usual.  Each kernel is timed
from its call until the device has finished it (``backend.synchronize()``; a no-op on the CPU),
so on a GPU each time is the kernel's launch overhead plus its execution, serialized.  The sum
of the kernel times against the step's wall time without profiling shows how much of a step
is the kernels and how much is the rest (feeds, transfers, the interpreter).

Kernels are grouped by ``label``: the op name, with a fused group's ops in brackets
(``fused[add,relu]``) and a convolution's window (``conv2d 3x3``), so one row is one kind of
work, however many nodes of it a network has.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass


def label(graph, node) -> str:
    """The row a node's kernel time is added to."""
    if node.op == "fused":
        return "fused[" + ",".join(step[0] for step in node.attrs["expr"]) + "]"
    if node.op in WINDOWED:
        filt = graph.nodes[node.inputs[WINDOWED[node.op]]].type.shape
        return f"{node.op} {filt[0]}x{filt[1]}"
    return node.op


# tags whose nodes' time is also summed on its own (train/step.py tags the optimizer's nodes)
TRACKED_TAGS = frozenset({"optimizer"})

# convolutions, and which input's type holds the filter shape [kh, kw, ...]
WINDOWED = {"conv2d": 1, "conv2d_backprop_input": 1, "conv2d_backprop_filter": 2,
            "conv2d_transpose": 1}


@dataclass
class Row:
    label: str
    calls: float        # per step
    ms: float           # per step
    share: float        # of all kernel time


class KernelProfile:
    def __init__(self, backend):
        self.synchronize = backend.synchronize
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self.tagged: dict[str, float] = defaultdict(float)   # seconds of nodes per tag
        self.runs = 0

    def start(self) -> float:
        return time.perf_counter()

    def stop(self, graph, node, started: float) -> None:
        """Charge ``node``'s kernel with the time since ``started``, once the device is done."""
        self.synchronize()
        key = label(graph, node)
        seconds = time.perf_counter() - started
        self.seconds[key] += seconds
        self.calls[key] += 1
        for tag in node.tags & TRACKED_TAGS:
            self.tagged[tag] += seconds

    def total_ms(self) -> float:
        """Kernel time per run (milliseconds)."""
        return sum(self.seconds.values()) * 1e3 / max(self.runs, 1)

    def tag_ms(self, tag: str) -> float:
        """Time per run of the kernels of nodes tagged ``tag`` (``optimizer``: the updates)."""
        return self.tagged.get(tag, 0.0) * 1e3 / max(self.runs, 1)

    def rows(self, top: int | None = None) -> list[Row]:
        """The heaviest kinds of kernel first, per run."""
        total = sum(self.seconds.values()) or 1.0
        runs = max(self.runs, 1)
        ranked = sorted(self.seconds.items(), key=lambda kv: -kv[1])[:top]
        return [Row(k, self.calls[k] / runs, s * 1e3 / runs, s / total) for k, s in ranked]
