"""Layer records and scope names: what ``check`` and ``summary`` list, and how layers are named.

Every call the lowering expands (a layer, a primitive op, an operator) leaves a
``LayerRecord`` in ``graph.spec.layers``: its name (``conv1``, ``residual1/bn2``,
``relu3``), the op or layer it was, its span, its output value, the node ids it created and
the parameters it made.  Names count per kind within a scope, as Keras and tf.layers do.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from netlang.errors import Span


@dataclass
class LayerRecord:
    name: str
    kind: str
    span: Span | None
    first_node: int
    end_node: int = -1                # one past the last node id it created
    output: int | None = None
    params: list[str] = field(default_factory=list)   # parameters and state it created
    shares: str | None = None         # the scope whose parameters it reused

    @property
    def nodes(self) -> range:
        return range(self.first_node, self.end_node)


@dataclass
class ScopeInfo:
    """A named scope that owns parameters: a layer (``conv1``) or a block use."""

    path: str
    kind: str
    span: Span | None


class Namer:
    """Hands out ``conv1``, ``conv2``, ... per prefix, skipping names already taken."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.taken: set[str] = set()

    def next(self, prefix: str) -> str:
        count = self.counts.get(prefix, 0)
        while True:
            count += 1
            name = f"{prefix}{count}"
            if name not in self.taken:
                break
        self.counts[prefix] = count
        self.taken.add(name)
        return name

    def claim(self, name: str) -> None:
        self.taken.add(name)


def join(*parts: str) -> str:
    return "/".join(p for p in parts if p)
