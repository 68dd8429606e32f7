"""What a picture of a graph says, before Graphviz decides where things go.

A ``Diagram`` is boxes (one per layer or per IR node), edges between them labelled with
tensor shapes, and clusters (layer scopes).  The layer and op views build one; ``dot.py``
turns it into DOT text.  Keeping this step free of Graphviz lets tests read a diagram
directly and keeps styling in one table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Box kinds, each drawn in its own style (dot.STYLES): the roles a value plays.
BOX_KINDS = ("input", "output", "loss", "metric", "layer", "op", "param", "state", "const",
             "grad")

# Edge kinds: activations, parameters/state read by a layer, gradients, activations saved
# for the backward pass, state updates.
EDGE_KINDS = ("data", "param", "grad", "saved", "update")


@dataclass
class Box:
    """One drawn node: a layer, an IR node, an input, an output, a parameter."""

    key: str                        # the DOT node id (stable, readable: "conv1", "op17")
    kind: str                       # one of BOX_KINDS
    title: str                      # bold first line: the layer or value name
    lines: list[str] = field(default_factory=list)   # op, attributes, counts
    cluster: str = ""               # scope path of the cluster it sits in ("" = none)
    marks: list[str] = field(default_factory=list)   # optimizer notes ("merged 2 (CSE)")
    rank_with: str | None = None    # a box to share a rank with (a gradient beside its layer)
    small: bool = False             # constants and the mode flag: drawn small, per use
    device: str | None = None       # the device an 'on' block placed it on (drawn in its colour)


@dataclass
class Edge:
    src: str
    dst: str
    label: str = ""
    kind: str = "data"
    constraint: bool = True         # False: the edge does not push dst below src


@dataclass
class Diagram:
    """Boxes, edges and clusters of one view, plus legend notes (what the optimizer did)."""

    title: str
    boxes: dict[str, Box] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    clusters: dict[str, str] = field(default_factory=dict)   # scope path -> label
    notes: list[str] = field(default_factory=list)

    def add_box(self, box: Box) -> Box:
        self.boxes.setdefault(box.key, box)
        return self.boxes[box.key]

    def add_edge(self, edge: Edge) -> None:
        self.edges.append(edge)

    def add_cluster_path(self, path: str) -> None:
        """Register ``path`` and every enclosing scope (``residual1/bn1`` -> ``residual1``),
        each labelled with its last part."""
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            self.clusters.setdefault("/".join(parts[:i]), parts[i - 1])

    def kinds(self) -> set[str]:
        return {b.kind for b in self.boxes.values()}
