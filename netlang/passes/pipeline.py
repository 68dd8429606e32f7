"""The passes, as one visible list each, and the functions that run them in order.

``PREPARE`` runs once per compiled spec (the graph every view starts from); autodiff comes
first, so every later pass sees gradients as ordinary nodes.
``OPTIMIZE`` runs per program, after the fed values are cut and the mode is bound: folding
first (it resolves the mode's selects), then simplification of what folding exposed, then
CSE across forward and backward nodes, ``settle`` (the three again until nothing changes:
merging can expose more, e.g. ``select(c, x, x)``), then pruning to what the run needs.
Each pass is ``Graph -> (Graph, report)``; the reports are what ``netlang explain`` prints.
After every pass the IR verifier checks the result (``VERIFY``), naming the pass that broke it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from netlang.ir.graph import Graph
from netlang.passes.autodiff import expand_grads
from netlang.passes.cse import eliminate_common_subexpressions
from netlang.passes.dce import eliminate_dead_code
from netlang.passes.fold import fold_constants
from netlang.passes.fusion import fuse_elementwise
from netlang.passes.report import Report
from netlang.passes.simplify import simplify
from netlang.passes.verify import IRError, verify_graph

Pass = Callable[[Graph], tuple[Graph, str]]


def settle(graph: Graph, rounds: int = 8) -> tuple[Graph, Report]:
    """Fold, simplify and CSE again until a round changes nothing.

    CSE can make a node's operands one value (``select(c, x, x)``, ``x - x``) that the
    earlier passes would have rewritten; usually nothing is left and this costs one round.
    """
    items: list[str] = []
    for _ in range(rounds):
        changed = 0
        for fn in (fold_constants, simplify, eliminate_common_subexpressions):
            graph, report = fn(graph)
            changed += getattr(report, "changed", 0)
            items += getattr(report, "items", ())
        if not changed:
            break
    summary = f"{len(items)} more change(s) once CSE had merged" if items else "nothing more"
    return graph, Report(summary, items, changed=len(items))


PREPARE: list[tuple[str, Pass]] = [
    ("autodiff", expand_grads),
]

OPTIMIZE: list[tuple[str, Pass]] = [
    ("fold", fold_constants),
    ("simplify", simplify),
    ("cse", eliminate_common_subexpressions),
    ("settle", settle),
    ("dce", eliminate_dead_code),
    ("fusion", fuse_elementwise),
]

VERIFY = True


def each_pass(graph: Graph, passes: list[tuple[str, Pass]],
              verify: bool | None = None) -> Iterator[tuple[str, Graph, str]]:
    """Run the passes in order, yielding ``(name, graph after it, report)`` for each."""
    for name, fn in passes:
        graph, report = fn(graph)
        if VERIFY if verify is None else verify:
            try:
                verify_graph(graph)
            except IRError as err:
                err.message = f"after pass '{name}': {err.message}"
                raise
        yield name, graph, report


def run_passes(graph: Graph, passes: list[tuple[str, Pass]],
               stop_after: str | None = None) -> tuple[Graph, list[tuple[str, str]]]:
    reports = []
    for name, after, report in each_pass(graph, passes):
        graph = after
        reports.append((name, report))
        if name == stop_after:
            break
    return graph, reports


def pass_names() -> list[str]:
    return [name for name, _ in (*PREPARE, *OPTIMIZE)]
