"""What a pass says it did: a summary line, one line per changed node, counts and the id map.

``netlang explain`` prints ``str(report)``; tests and tools read ``changed``, ``items`` and
``extra`` without parsing text.  ``mapping`` says where every node of the pass's input graph
went (old id -> new id, None where the pass removed it); the compile pipeline composes these
maps, so a session can follow a value through any number of passes.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from netlang.ir.graph import Graph, Node


@dataclass(frozen=True)
class Report:
    """A pass report: the summary line, then one indented line per changed node."""

    summary: str
    items: tuple[str, ...] = ()
    changed: int = 0
    mapping: dict[int, int | None] | None = field(default=None, repr=False, compare=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        return "\n".join([self.summary, *(f"  {item}" for item in collapse(self.items))])


def report(summary: str, items: Iterable[str] = (), changed: int | None = None,
           mapping: dict[int, int | None] | None = None, **extra) -> Report:
    """A ``Report``; ``changed`` defaults to the number of items."""
    items = tuple(items)
    return Report(summary, items, len(items) if changed is None else changed, mapping, extra)


def collapse(lines: Iterable[str]) -> list[str]:
    """Repeated lines once each, with a count: ``select [bn1] -> branch a (x2)``."""
    counts = Counter(lines)
    return [line if k == 1 else f"{line} (x{k})" for line, k in counts.items()]


def describe(graph: Graph, node: Node) -> str:
    """A node as a user recognizes it: ``mul 'c'``, ``softmax [fc2] (grad) @mnist.net:12:3``."""
    name = graph.name_of(node.id)
    parts = [node.op if name is None else f"{node.op} '{name}'"]
    value = node.attrs.get("value") if node.is_source("const") else None
    if value is not None and value.size == 1:
        parts[0] += " " + str(value.reshape(())[()])
    where = location(node)
    return " ".join([*parts, where]) if where else parts[0]


def location(node: Node) -> str:
    """``[fc2] (grad) @mnist.net:12:3``: the scope, the gradient tag and the spec position."""
    parts = []
    if node.scope:
        parts.append(f"[{node.scope}]")
    if "grad" in node.tags:
        parts.append("(grad)")
    if node.span is not None:
        parts.append(f"@{node.span.short()}")
    return " ".join(parts)


def count_ops(nodes: Iterable[Node]) -> str:
    """``3 mul, 2 const`` (most frequent first)."""
    counts = Counter(n.op for n in nodes)
    return ", ".join(f"{k} {op}" for op, k in counts.most_common())


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def with_orphans(summary: str, orphans) -> str:
    """``summary`` plus how many nodes a rewrite left unused (and so removed), if any."""
    return f"{summary}, removing {plural(len(orphans), 'node')} only they used" if orphans \
        else summary
