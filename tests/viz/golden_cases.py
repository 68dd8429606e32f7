"""The pictures pinned as golden DOT files (tests/viz/golden/), by file name.

``tools/regen_viz_golden.py`` rewrites them; review the diff like code.
"""
from __future__ import annotations

from pathlib import Path

import netlang
from netlang.viz import build_training_graph, diagram_of, to_dot, view_diagram
from tests.viz.nets import mlp_graph

GOLDEN = Path(__file__).parent / "golden"

# A small spec in the .net language: two dense layers, a loss and a metric.
TINY = """
network tiny {
  input x: f32[N, 4]
  input label: i32[N]
  h = x |> dense(8) |> relu
  logits = dense(h, 3)
  output probs = softmax(logits)
  loss xent = mean(softmax_cross_entropy(logits, label))
  metric accuracy = mean(cast(equal(argmax(logits, axis=1), label), dtype=f32))
}
"""


def _mlp(detail: str, train: bool = False) -> str:
    graph = build_training_graph(mlp_graph()) if train else mlp_graph()
    return to_dot(diagram_of(graph, detail))


def _tiny(**options) -> str:
    return to_dot(view_diagram(netlang.compile(TINY, "tiny.net"), **options))


CASES = {
    "tiny_layers.dot": lambda: _tiny(),
    "tiny_train_layers.dot": lambda: _tiny(train=True),
    "tiny_ops.dot": lambda: _tiny(detail="op"),
    "mlp_layers.dot": lambda: _mlp("layer"),
    "mlp_ops.dot": lambda: _mlp("op"),
    "mlp_train_layers.dot": lambda: _mlp("layer", train=True),
}
