"""The passes, as one visible list each, and the functions that run them in order.

``PREPARE`` runs once per compiled spec (the graph every view starts from); autodiff comes
first, so every later pass sees gradients as ordinary nodes.
``OPTIMIZE`` runs per program, after the fed values are cut and the mode is bound: folding
first (it resolves the mode's selects), then simplification of what folding exposed, then
CSE across forward and backward nodes, ``settle`` (the three again until nothing changes:
merging can expose more, e.g. ``select(c, x, x)``), then pruning to what the run needs,
convolutions fused with their bias (and relu), batchnorm's ops written as elementwise steps
(only where fusion then merges them), relu's gradient after a batchnorm taken from the
batchnorm's input (``relu_mask``), and elementwise fusion.
Each pass is ``Graph -> (Graph, report)``; the reports are what ``netlang explain`` prints.
After every pass the IR verifier checks the result (``VERIFY``), naming the pass that broke it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from netlang.errors import IRError
from netlang.ir.graph import Graph
from netlang.passes.autodiff import expand_grads
from netlang.passes.batchnorm import expand_batchnorm
from netlang.passes.conv_bias import fuse_conv_bias
from netlang.passes.cse import eliminate_common_subexpressions
from netlang.passes.dce import eliminate_dead_code
from netlang.passes.fold import fold_constants
from netlang.passes.fusion import fuse_elementwise
from netlang.passes.relu_mask import mask_from_input
from netlang.passes.report import Report, report
from netlang.passes.rewrite import compose, identity_mapping
from netlang.passes.simplify import simplify
from netlang.passes.verify import verify_graph

Pass = Callable[[Graph], tuple[Graph, Report]]


def settle(graph: Graph, rounds: int = 8) -> tuple[Graph, Report]:
    """Fold, simplify and CSE again until a round changes nothing.

    CSE can make a node's operands one value (``select(c, x, x)``, ``x - x``) that the
    earlier passes would have rewritten; usually nothing is left and this costs one round.
    """
    items: list[str] = []
    mapping = identity_mapping(graph)
    for _ in range(rounds):
        changed = 0
        for fn in (fold_constants, simplify, eliminate_common_subexpressions):
            graph, rep = fn(graph)
            changed += rep.changed
            items += rep.items
            mapping = compose(mapping, rep.mapping)
        if not changed:
            break
    summary = f"{len(items)} more change(s) once CSE had merged" if items else "nothing more"
    return graph, report(summary, items, mapping=mapping)


PREPARE: list[tuple[str, Pass]] = [
    ("autodiff", expand_grads),
]

OPTIMIZE: list[tuple[str, Pass]] = [
    ("fold", fold_constants),
    ("simplify", simplify),
    ("cse", eliminate_common_subexpressions),
    ("settle", settle),
    ("dce", eliminate_dead_code),
    ("conv_bias", fuse_conv_bias),
    ("batchnorm", expand_batchnorm),
    ("relu_mask", mask_from_input),
    ("fusion", fuse_elementwise),
]


def without(passes: list[tuple[str, Pass]], *names: str) -> list[tuple[str, Pass]]:
    """The list with the named passes left out (``without(OPTIMIZE, "fusion")``)."""
    return [(name, fn) for name, fn in passes if name not in names]


def each_pass(graph: Graph, passes: list[tuple[str, Pass]],
              verify: bool = True) -> Iterator[tuple[str, Graph, Report]]:
    """Run the passes in order, yielding ``(name, graph after it, report)`` for each; the IR
    verifier checks every result and names the pass that broke it."""
    for name, fn in passes:
        graph, rep = fn(graph)
        if verify:
            try:
                verify_graph(graph)
            except IRError as err:
                err.message = f"after pass '{name}': {err.message}"
                raise
        yield name, graph, rep


def pass_names() -> list[str]:
    return [name for name, _ in (*PREPARE, *OPTIMIZE)]
