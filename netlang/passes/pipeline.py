"""The passes, as one visible list each, and the functions that run them in order.

``PREPARE`` runs once per compiled spec (the graph every view starts from).
``OPTIMIZE`` runs per program, after the mode is bound and the fetches are known.
Each pass is ``Graph -> (Graph, report)``; the reports are what ``netlang explain`` prints.
"""
from __future__ import annotations

from typing import Callable

from netlang.ir.graph import Graph
from netlang.passes.autodiff import expand_grads

Pass = Callable[[Graph], tuple[Graph, str]]

PREPARE: list[tuple[str, Pass]] = [
    ("autodiff", expand_grads),
]

OPTIMIZE: list[tuple[str, Pass]] = []


def run_passes(graph: Graph, passes: list[tuple[str, Pass]],
               stop_after: str | None = None) -> tuple[Graph, list[tuple[str, str]]]:
    reports = []
    for name, fn in passes:
        graph, report = fn(graph)
        reports.append((name, report))
        if name == stop_after:
            break
    return graph, reports
