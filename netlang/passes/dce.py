"""Dead-code elimination: keep only what the roots need, and say which inputs are still used.

The roots are the values a run must produce; by default the graph's outputs and state
updates (a program's outputs are exactly its fetches, see ``compiler.program_graph``).  An
update whose new value is the variable itself (batchnorm's moving averages in eval mode, once
the mode is folded) is a no-op and is dropped first.  Like JAX's ``dce_jaxpr`` the report
names the inputs the pruned graph still reads.

``rewrite_and_prune`` is the other half: the rebuild that the rewriting passes (fold,
simplify, CSE) share, which also removes the nodes the rewrite itself left without a use, so
each pass's report and node count are its own.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from netlang.ir.graph import Graph, Node
from netlang.passes.report import Report, count_ops, describe, plural, report
from netlang.passes.rewrite import Mapping, compose, copy_node, rebuild


def variable_id(graph: Graph, name: str) -> int | None:
    return graph.state.get(name, graph.params.get(name))


def rewrite_and_prune(graph: Graph, visit: Callable) -> tuple[Graph, list[Node], Mapping]:
    """``rebuild(graph, visit)``, then drop the nodes the rewrite orphaned.

    A node that was live before and is dead after (the ``1`` of a removed ``x*1``, the inputs
    of a folded expression) goes; nodes that were already dead stay for DCE to report, and so
    do inputs, parameters and state (DCE says which inputs a run still reads).  Returns the
    graph, the orphans removed and the id mapping.
    """
    live = graph.ancestors(graph.roots())
    new, mapping = rebuild(graph, lambda b, node, inputs: visit(b, node, inputs))
    kept = [mapping[n] for n in graph.nodes if n not in live]
    kept += [*new.inputs.values(), *new.params.values(), *new.state.values()]
    keep = new.ancestors([*new.roots(), *kept])
    if len(keep) == len(new):
        return new, [], mapping
    orphans = [node for node in new if node.id not in keep]
    pruned, second = rebuild(new, keep=keep)
    return pruned, orphans, compose(mapping, second)


def eliminate_dead_code(graph: Graph, roots: Iterable[int] | None = None
                        ) -> tuple[Graph, Report]:
    """Prune to ``roots`` (default: the outputs) and the state updates; drop no-op updates;
    report what went and which inputs are used."""
    trimmed = graph.copy()
    noop = [name for name, nid in graph.updates.items() if nid == variable_id(graph, name)]
    for name in noop:
        del trimmed.updates[name]
    wanted = list(trimmed.outputs.values()) if roots is None else list(roots)
    live = trimmed.ancestors([*wanted, *trimmed.updates.values()])
    removed = [node for node in trimmed if node.id not in live]
    new, mapping = rebuild(trimmed, keep=live)
    used = [name for name, nid in graph.inputs.items() if nid in live]
    unused = [name for name in graph.inputs if name not in used]
    parts = [f"removed {plural(len(removed), 'node')}"
             + (f" ({count_ops(removed)})" if removed else "")]
    if noop:
        parts.append(f"dropped {plural(len(noop), 'no-op update')} ({', '.join(noop)})")
    parts.append("inputs used: " + (", ".join(used) or "none"))
    if unused:
        parts.append("unused: " + ", ".join(unused))
    items = [f"removed {describe(graph, n)}" for n in removed if graph.name_of(n.id)]
    return new, report("; ".join(parts), items, changed=len(removed) + len(noop),
                       mapping=mapping, removed=[n.id for n in removed], noop_updates=noop,
                       used_inputs=used, unused_inputs=unused)


def copy_unchanged(b, node: Node, inputs: tuple[int, ...]) -> int:
    """The default of a rewrite rule that leaves ``node`` as it is."""
    return copy_node(b, node, inputs)
