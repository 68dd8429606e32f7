"""What a pass says it did: a string (printed by ``netlang explain``) that also keeps its counts.

``Report`` is a ``str`` so reports read as text everywhere (``explain``, ``viz``), while tests
and tools can check ``report.changed`` and the per-node ``report.items`` without parsing.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Self

from netlang.ir.graph import Graph, Node


class Report(str):
    """A pass report: the summary line, then one indented line per changed node."""

    changed: int
    items: tuple[str, ...]
    extra: dict

    def __new__(cls, summary: str, items: Iterable[str] = (), changed: int | None = None,
                **extra) -> Self:
        items = tuple(items)
        text = "\n".join([summary, *(f"  {item}" for item in collapse(items))])
        self = super().__new__(cls, text)
        self.changed = len(items) if changed is None else changed
        self.items = items
        self.extra = extra
        return self

    @property
    def summary(self) -> str:
        return self.split("\n", 1)[0]


def collapse(lines: Iterable[str]) -> list[str]:
    """Repeated lines once each, with a count: ``select [bn1] -> branch a (x2)``."""
    counts = Counter(lines)
    return [line if k == 1 else f"{line} (x{k})" for line, k in counts.items()]


def describe(graph: Graph, node: Node) -> str:
    """A node as a user recognizes it: ``mul 'c'``, ``softmax [fc2] (grad) @mnist.net:12:3``."""
    name = graph.name_of(node.id)
    parts = [node.op if name is None else f"{node.op} '{name}'"]
    value = node.attrs.get("value") if node.op == "const" else None
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
