"""Which graph a picture shows: the forward graph, the training graph, or either optimized.

The training graph is the forward graph plus the nodes computing every parameter's gradient
of the loss (``compiler.training_graph``), named as outputs ``grad/conv1/W`` so that
optimizing the training graph keeps them, as a training step does.  The optimized views run
the model's own passes (``Model.trace``), so the picture is the program that runs.
"""
from __future__ import annotations

from dataclasses import dataclass

from netlang.compiler import trace
from netlang.compiler import training_graph as gradients_of
from netlang.errors import UsageError
from netlang.ir.graph import Graph
from netlang.viz.changes import Changes, compare
from netlang.viz.output import RenderError


@dataclass
class View:
    graph: Graph
    title: str
    changes: Changes | None = None
    training: bool = False


def build_training_graph(graph: Graph) -> Graph:
    """A copy of ``graph`` with outputs ``grad/<param>`` (used for bare graphs; parameters
    the loss cannot reach get none)."""
    try:
        return gradients_of(graph, require_all=False)
    except UsageError:
        raise RenderError(f"network '{graph.name}' has no loss, so it has no training graph",
                          hint="declare one (loss xent = ...) or render without --train"
                          ) from None


def training_graph(model) -> Graph:
    make = getattr(model, "training_graph", None)
    return make() if callable(make) else build_training_graph(model.graph)


def optimize(model, graph: Graph, training: bool):
    """``graph`` after the model's optimization passes (mode bound), their reports and the
    id map from ``graph`` to the result.  An inference program runs no state updates, so
    they are pruned from its picture."""
    passes = getattr(model, "passes", None)
    result = trace(graph, training, updates=training, **({"passes": passes} if passes else {}))
    return result.graph, [(s.name, s.report) for s in result.steps], result.mapping


def select_view(model, train: bool = False, optimized: bool = False) -> View:
    """The graph to draw, its title, and (when optimized) what the optimizer changed."""
    graph = training_graph(model) if train else model.graph
    what = "training graph" if train else "forward graph"
    if not optimized:
        return View(graph, f"{graph.name}: {what}", training=train)
    after, reports, mapping = optimize(model, graph, train)
    changes = compare(graph, after, mapping, reports)
    mode = "training" if train else "inference"
    return View(after, f"{graph.name}: {what}, optimized for {mode}", changes, train)
