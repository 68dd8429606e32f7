"""Which graph a picture shows: the forward graph, the training graph, or either optimized.

The training graph is the forward graph plus the nodes computing every parameter's gradient
of the loss (``Model.training_graph()``), named as outputs ``grad/conv1/W`` so that
optimizing the training graph keeps them, as a training step does.  The optimized views run
the model's own passes (``Model.trace``), so the picture is the program that runs.
"""
from __future__ import annotations

from dataclasses import dataclass

from netlang.ir.graph import Graph
from netlang.ops.builder import Builder
from netlang.passes.autodiff import gradients
from netlang.viz.changes import Changes, compare
from netlang.viz.output import RenderError
from netlang.viz.roles import GRAD_PREFIX


@dataclass
class View:
    graph: Graph
    title: str
    changes: Changes | None = None
    training: bool = False


def build_training_graph(graph: Graph) -> Graph:
    """A copy of ``graph`` with outputs ``grad/<param>``: d(loss)/d(param) for each
    parameter (what ``Model.training_graph`` returns; used for bare graphs)."""
    if graph.loss is None:
        raise RenderError(f"network '{graph.name}' has no loss, so it has no training graph",
                          hint="declare one (loss xent = ...) or render without --train")
    g = graph.copy()
    g.meta.pop("id_map", None)
    names = list(g.params)
    grads = gradients(Builder(g), g.outputs[g.loss], [g.params[n] for n in names])
    for name, gid in zip(names, grads):
        if gid is not None:
            g.outputs[GRAD_PREFIX + name] = gid
    return g


def training_graph(model) -> Graph:
    make = getattr(model, "training_graph", None)
    return make() if callable(make) else build_training_graph(model.graph)


def optimize(model, graph: Graph, training: bool) -> tuple[Graph, list[tuple[str, str]]]:
    """``graph`` after the model's optimization passes (mode bound), and their reports.
    An inference program runs no state updates, so they are pruned from its picture."""
    steps = model.trace(training, graph, updates=training)
    return steps[-1][1], [(name, report) for name, _, report in steps]


def select_view(model, train: bool = False, optimized: bool = False) -> View:
    """The graph to draw, its title, and (when optimized) what the optimizer changed."""
    graph = training_graph(model) if train else model.graph
    what = "training graph" if train else "forward graph"
    if not optimized:
        return View(graph, f"{graph.name}: {what}", training=train)
    after, reports = optimize(model, graph, train)
    changes = compare(graph, after, reports)
    mode = "training" if train else "inference"
    return View(after, f"{graph.name}: {what}, optimized for {mode}", changes, train)
