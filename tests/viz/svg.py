"""Reading a rendered SVG back: which boxes and edges it drew, with their classes and text."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

NS = {"svg": "http://www.w3.org/2000/svg"}


@dataclass
class Drawn:
    classes: set[str]
    texts: list[str] = field(default_factory=list)
    y: float = 0.0                             # where its first text sits (down is more)


@dataclass
class Picture:
    nodes: dict[str, Drawn]                   # DOT id -> its box
    edges: dict[tuple[str, str], list[Drawn]]  # (src, dst) -> the edges between them
    texts: list[str]                           # every text in the picture

    def edge_labels(self, src: str, dst: str) -> list[str]:
        return [" ".join(d.texts) for d in self.edges.get((src, dst), [])]

    def of_class(self, cls: str) -> list[str]:
        return [k for k, d in self.nodes.items() if cls in d.classes]


def _texts(group) -> list[str]:
    return [(t.text or "").strip() for t in group.iter(f"{{{NS['svg']}}}text")]


def read_svg(data: bytes) -> Picture:
    """Parse SVG (XML) as Graphviz writes it: each box and edge is a <g> with a <title>."""
    root = ET.fromstring(data)
    nodes, edges = {}, {}
    for g in root.iter(f"{{{NS['svg']}}}g"):
        classes = set((g.get("class") or "").split())
        title = g.find("svg:title", NS)
        if title is None or not classes & {"node", "edge"}:
            continue
        first = next(g.iter(f"{{{NS['svg']}}}text"), None)
        drawn = Drawn(classes, _texts(g), float(first.get("y")) if first is not None else 0.0)
        if "node" in classes:
            nodes[title.text] = drawn
        else:
            src, _, dst = title.text.partition("->")
            edges.setdefault((src, dst), []).append(drawn)
    return Picture(nodes, edges, _texts(root))


def text_boxes(data: bytes) -> list[tuple[str, float, float, float, float]]:
    """Every text's approximate box (x0, y0, x1, y1), from its anchor, size and length.

    Helvetica averages about 0.55 em a character; boxes are kept a little inside that
    estimate so only real collisions count.
    """
    root = ET.fromstring(data)
    boxes = []
    for t in root.iter(f"{{{NS['svg']}}}text"):
        text = (t.text or "").strip()
        if not text:
            continue
        size = float(t.get("font-size", "14"))
        x, y = float(t.get("x")), float(t.get("y"))
        width = 0.5 * size * len(text)
        anchor = t.get("text-anchor", "start")
        x0 = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
        boxes.append((text, x0, y - 0.7 * size, x0 + width, y))
    return boxes


def overlapping_texts(data: bytes) -> list[tuple[str, str]]:
    boxes = text_boxes(data)
    found = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]:
                found.append((a[0], b[0]))
    return found
