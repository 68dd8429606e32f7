"""Programs: the steps one ``run(fetches, feeds)`` executes, and when each buffer dies.

Planning prunes the graph to what the fetches (and requested state updates) need; a fed
value cuts away whatever produced it.  Liveness gives, for every step, the values whose last
use it was, so the executor can free them right away.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from netlang.errors import FeedError
from netlang.ir.graph import Graph, Node


@dataclass
class Program:
    graph: Graph
    steps: list[Node]
    fetches: list[int]
    fed: frozenset[int]
    updates: dict[str, int] = field(default_factory=dict)
    free_after: list[list[int]] = field(default_factory=list)

    @property
    def node_count(self) -> int:
        return len(self.steps)


def liveness(steps: list[Node], keep: set[int]) -> list[list[int]]:
    """For each step, the values that are dead once it has run (never those in ``keep``)."""
    last_use: dict[int, int] = {}
    for index, node in enumerate(steps):
        last_use.setdefault(node.id, index)
        for i in node.inputs:
            last_use[i] = index
    free: list[list[int]] = [[] for _ in steps]
    for value, index in last_use.items():
        if value not in keep:
            free[index].append(value)
    return free


def plan(graph: Graph, fetches: list[int], fed: set[int] = frozenset(),
         updates: dict[str, int] | None = None) -> Program:
    updates = dict(updates or {})
    roots = list(fetches) + list(updates.values())
    needed = graph.ancestors(roots, stop=fed)
    steps = [n for n in graph.nodes.values() if n.id in needed]
    for node in steps:
        if node.op == "input" and node.id not in fed:
            wanted = ", ".join(f"'{graph.name_of(f) or f'%{f}'}'" for f in fetches) or "updates"
            raise FeedError(f"fetching {wanted} needs the input '{node.name}', "
                            f"which was not fed",
                            hint=f"feed '{node.name}' ({node.type}), or feed a value "
                                 f"computed from it")
    keep = set(roots)
    return Program(graph, steps, list(fetches), frozenset(fed), updates,
                   liveness(steps, keep))
