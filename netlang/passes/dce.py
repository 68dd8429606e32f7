"""Dead-code elimination: keep only what the roots need, and say which inputs are still used.

The roots are the values a run must produce: the fetches when a program has them
(``meta["fetches"]``, ids of the graph the pipeline started from), otherwise every output;
plus the state updates.  An update whose new value is the variable itself (batchnorm's moving
averages in eval mode, once the mode is folded) is a no-op and is dropped first.  Like JAX's
``dce_jaxpr`` the report names the inputs the pruned graph still reads.

``rewrite`` is the other half: the rebuild that the rewriting passes (fold, simplify, CSE)
share, which also removes the nodes the rewrite itself left without a use, so each pass's
report and node count are its own.
"""
from __future__ import annotations

from collections.abc import Callable

from netlang.ir.graph import Graph, Node
from netlang.passes.report import Report, count_ops, describe, plural
from netlang.passes.rewrite import copy_node, rebuild


def fetch_roots(graph: Graph) -> list[int] | None:
    """The fetched values' ids in this graph, or None when the graph has no fetch list."""
    fetches = graph.meta.get("fetches")
    if fetches is None:
        return None
    id_map = graph.meta.get("id_map")
    ids = [id_map.get(f) if id_map is not None else f for f in fetches]
    return [i for i in ids if i is not None]


def root_ids(graph: Graph) -> list[int]:
    """What a run of this graph must compute: the fetches (or all outputs), and the updates."""
    fetched = fetch_roots(graph)
    wanted = list(graph.outputs.values()) if fetched is None else fetched
    return list(dict.fromkeys([*wanted, *graph.updates.values()]))


def live_nodes(graph: Graph) -> set[int]:
    return graph.ancestors(root_ids(graph))


def variable_id(graph: Graph, name: str) -> int | None:
    return graph.state.get(name, graph.params.get(name))


def rewrite(graph: Graph, visit: Callable) -> tuple[Graph, list[Node]]:
    """``rebuild(graph, visit)``, then drop the nodes the rewrite orphaned.

    A node that was live before and is dead after (the ``1`` of a removed ``x*1``, the inputs
    of a folded expression) goes; nodes that were already dead stay for DCE to report, and so
    do inputs, parameters and state (DCE says which inputs a run still reads).
    """
    image: dict[int, int] = {}

    def tracked(b, node, inputs):
        nid = visit(b, node, inputs)
        image[node.id] = copy_node(b, node, inputs) if nid is None else nid
        return image[node.id]

    live = live_nodes(graph)
    new = rebuild(graph, tracked)
    kept = [image[n] for n in graph.nodes if n not in live]
    kept += [*new.inputs.values(), *new.params.values(), *new.state.values()]
    keep = new.ancestors([*root_ids(new), *kept])
    if len(keep) == len(new):
        return new, []
    orphans = [node for node in new if node.id not in keep]
    return rebuild(new, keep=keep), orphans


def eliminate_dead_code(graph: Graph) -> tuple[Graph, Report]:
    """Prune to the roots; drop no-op updates; report what went and which inputs are used."""
    trimmed = graph.copy()
    noop = [name for name, nid in graph.updates.items() if nid == variable_id(graph, name)]
    for name in noop:
        del trimmed.updates[name]
    live = live_nodes(trimmed)
    removed = [node for node in trimmed if node.id not in live]
    new = rebuild(trimmed, keep=live)
    used = [name for name, nid in graph.inputs.items() if nid in live]
    unused = [name for name in graph.inputs if name not in used]
    return new, _dce_report(graph, removed, noop, used, unused)


def _dce_report(graph: Graph, removed: list[Node], noop: list[str], used: list[str],
                unused: list[str]) -> Report:
    parts = [f"removed {plural(len(removed), 'node')}"
             + (f" ({count_ops(removed)})" if removed else "")]
    if noop:
        parts.append(f"dropped {plural(len(noop), 'no-op update')} ({', '.join(noop)})")
    parts.append("inputs used: " + (", ".join(used) or "none"))
    if unused:
        parts.append("unused: " + ", ".join(unused))
    items = [f"removed {describe(graph, n)}" for n in removed if graph.name_of(n.id)]
    return Report("; ".join(parts), items, changed=len(removed) + len(noop),
                  removed=[n.id for n in removed], noop_updates=noop, used_inputs=used,
                  unused_inputs=unused)
