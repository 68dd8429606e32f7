"""The IR graph: typed nodes in topological order, plus the named roles values play.

A ``Node`` is one op applied to earlier nodes' values; every node has exactly one output, so a
node id is also a value id.  ``Graph`` keeps nodes in insertion order, which is always a
topological order (a node only ever refers to earlier ids); passes build new graphs rather
than editing old ones.  Insertion order being topological, reachability is one walk over
the inputs (``ancestors``) and a graph cannot have a cycle, so no graph library is needed
here.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from netlang.errors import Span
from netlang.ir.types import TensorType

# Ops whose values come from outside the dataflow: feeds, the parameter store, state.
SOURCE_OPS = frozenset({"input", "param", "state", "const"})
VARIABLE_OPS = frozenset({"param", "state"})     # values a session's state holds

# Where a node runs: ``on gpu { ... }`` in a spec tags the nodes it builds "on:gpu" (the
# gradients and the nodes passes write in their place keep the tag); an untagged node runs on
# the session's device.  passes/placement.py puts a ``transfer`` where a value crosses.
DEVICES = ("cpu", "gpu")
DEVICE_TAG = "on:"


def device_of(node: Node, default: str | None = None) -> str | None:
    """The device ``node`` is placed on by its tag, else ``default``."""
    for tag in node.tags:
        if tag.startswith(DEVICE_TAG):
            return tag[len(DEVICE_TAG):]
    return default


@dataclass(frozen=True)
class Node:
    id: int
    op: str
    inputs: tuple[int, ...]
    attrs: dict[str, Any]
    type: TensorType
    scope: str = ""
    name: str | None = None
    span: Span | None = None
    tags: frozenset = frozenset()

    def is_source(self, kind: str | None = None) -> bool:
        """Whether the value comes from outside the dataflow (of that kind: ``"input"``,
        ``"param"``, ``"state"``, ``"const"``)."""
        return self.op == kind if kind is not None else self.op in SOURCE_OPS

    def is_variable(self) -> bool:
        """Whether a session's state holds the value (a parameter or a state variable)."""
        return self.op in VARIABLE_OPS

    def label(self) -> str:
        """How other nodes refer to this one in the IR text: ``%conv1/W`` or ``%7``."""
        named = self.is_variable() or self.is_source("input")
        return f"%{self.name}" if named and self.name else f"%{self.id}"


def attr_key(attrs: dict[str, Any]) -> tuple:
    """A hashable, order-independent key for a node's attributes (arrays by content)."""
    items = []
    for k in sorted(attrs):
        v = attrs[k]
        if isinstance(v, np.ndarray):
            v = ("ndarray", v.dtype.str, v.shape, v.tobytes())
        elif isinstance(v, list):
            v = tuple(v)
        items.append((k, v))
    return tuple(items)


@dataclass(frozen=True)
class SpecInfo:
    """What the front end learned from the spec besides the graph; passes carry it unchanged.

    ``train``: the validated train section (key -> value; ``train/config.py`` reads it), or
    None.  ``layers``: one ``LayerRecord`` per layer use, for ``check``, ``summary`` and the
    layer view.  ``warnings``: what ``check`` warns about (an unused input).  ``source``: the
    spec's text.  ``optimizer``: how the train step's updates were made (``adam(lr=...)``),
    set only on a train-step graph.
    """

    train: dict | None = None
    layers: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    source: Any = None
    optimizer: str | None = None


@dataclass
class Graph:
    """A network's IR.  ``nodes`` is ordered topologically; the dicts name its roles."""

    name: str = "net"
    nodes: dict[int, Node] = field(default_factory=dict)
    inputs: dict[str, int] = field(default_factory=dict)     # placeholders, fed at run time
    params: dict[str, int] = field(default_factory=dict)     # trainable variables
    state: dict[str, int] = field(default_factory=dict)      # non-trainable (moving stats)
    outputs: dict[str, int] = field(default_factory=dict)    # named outputs, loss, metrics
    updates: dict[str, int] = field(default_factory=dict)    # state name -> its new value
    loss: str | None = None
    metrics: list[str] = field(default_factory=list)
    values: dict[str, int] = field(default_factory=dict)     # every user-visible name
    # names a program does not fetch (outputs and values it leaves out): reports still show
    # them, but nothing is kept for their sake
    unfetched: dict[str, int] = field(default_factory=dict)
    spec: SpecInfo = field(default_factory=SpecInfo)          # train section, layers, ...
    next_id: int = 0

    # -- building -------------------------------------------------------------------------
    def add(self, op: str, inputs: Iterable[int], attrs: dict[str, Any], type: TensorType,
            **fields) -> int:
        inputs = tuple(inputs)
        for i in inputs:
            if i not in self.nodes:
                raise ValueError(f"node input %{i} is not in the graph")
        nid = self.next_id
        self.next_id += 1
        self.nodes[nid] = Node(nid, op, inputs, dict(attrs), type, **fields)
        return nid

    def copy(self) -> Graph:
        return replace(self, nodes=dict(self.nodes), inputs=dict(self.inputs),
                       params=dict(self.params), state=dict(self.state),
                       outputs=dict(self.outputs), updates=dict(self.updates),
                       metrics=list(self.metrics), values=dict(self.values),
                       unfetched=dict(self.unfetched))

    # -- queries --------------------------------------------------------------------------
    def __getitem__(self, nid: int) -> Node:
        return self.nodes[nid]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self):
        return iter(self.nodes.values())

    def type_of(self, nid: int) -> TensorType:
        return self.nodes[nid].type

    def roots(self) -> list[int]:
        """The values a full run must compute: outputs and state updates."""
        return list(dict.fromkeys([*self.outputs.values(), *self.updates.values()]))

    def users(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {nid: [] for nid in self.nodes}
        for node in self.nodes.values():
            for i in node.inputs:
                out[i].append(node.id)
        return out

    def ancestors(self, roots: Iterable[int], stop: Iterable[int] = ()) -> set[int]:
        """Every node the roots depend on (roots included); ``stop`` nodes are not entered."""
        stop = set(stop)
        seen: set[int] = set()
        todo = list(roots)
        while todo:
            nid = todo.pop()
            if nid in seen:
                continue
            seen.add(nid)
            if nid not in stop:
                todo.extend(self.nodes[nid].inputs)
        return seen

    def name_of(self, nid: int) -> str | None:
        """The user-visible name of a value, if it has one."""
        for table in (self.outputs, self.values, self.params, self.inputs, self.state,
                      self.unfetched):
            for k, v in table.items():
                if v == nid:
                    return k
        return None

    def resolve(self, name_or_id) -> int:
        """A value by user name (output, assignment, parameter, input) or id."""
        if isinstance(name_or_id, (int, np.integer)):
            if int(name_or_id) in self.nodes:
                return int(name_or_id)
        else:
            for table in (self.outputs, self.values, self.params, self.inputs, self.state):
                if name_or_id in table:
                    return table[name_or_id]
        raise KeyError(name_or_id)

    def known_names(self) -> list[str]:
        names: dict[str, None] = {}
        for table in (self.outputs, self.values, self.params, self.inputs, self.state):
            names.update(dict.fromkeys(table))
        return list(names)
