"""Reading what optimization did from the passes' id map, and marking it in the views."""
from __future__ import annotations

from netlang.ir.graph import Graph
from netlang.model import Model
from netlang.ops.builder import Builder
from netlang.passes.rewrite import compose, rebuild
from netlang.viz import compare, diagram_of, view_diagram
from tests.viz.nets import N, f32, mlp_graph


def duplicated_graph() -> Graph:
    """y = relu(x) * relu(x) + (2 * 3), plus a dead sin(x)."""
    b = Builder(Graph(name="dup"))
    x = b.input("x", f32(N, 3))
    r1, r2 = b.relu(x), b.relu(x)
    six = b.mul(b.const(2.0), b.const(3.0))
    b.sin(x)
    b.graph.outputs["y"] = b.add(b.mul(r1, r2), six)
    return b.graph


def hand_optimize(graph: Graph) -> Graph:
    """CSE of the second relu, folding of 2*3, then DCE: as the passes record it."""
    seen = {}

    def merge_and_fold(b, node, inputs):
        if node.op == "relu":
            if inputs not in seen:
                seen[inputs] = b.relu(*inputs)
            return seen[inputs]
        if node.op == "mul" and all(graph.nodes[i].op == "const" for i in node.inputs):
            return b.const(6.0)
        return None

    g, first = rebuild(graph, merge_and_fold)
    keep = g.ancestors(g.roots())
    after, second = rebuild(g, keep=keep)
    return after, compose(first, second)


def test_compare_tells_merged_folded_and_removed_apart():
    before = duplicated_graph()
    after, id_map = hand_optimize(before)
    changes = compare(before, after, id_map)
    relu = next(n.id for n in after if n.op == "relu")
    six = next(n.id for n in after if n.op == "const")
    assert [n.op for n in changes.merged[relu]] == ["relu"]
    assert [n.op for n in changes.folded[six]] == ["mul"]
    assert sorted(n.op for n in changes.removed) == ["const", "const", "sin"]
    assert changes.marks(relu) == ["+1 merged (CSE)"]
    assert changes.marks(six) == ["folded mul"]


def test_optimized_op_view_marks_merges_and_lists_removals():
    before = duplicated_graph()
    after, id_map = hand_optimize(before)
    d = diagram_of(after, "op", changes=compare(before, after, id_map))
    relu = next(n.id for n in after if n.op == "relu")
    assert d.boxes[f"op{relu}"].marks == ["+1 merged (CSE)"]
    six = [b for b in d.boxes.values() if b.marks == ["folded mul"]]
    assert len(six) == 1 and not six[0].small   # a folded constant is drawn full size
    assert "gone (removed, folded or simplified away): 4 node(s)" in d.notes
    assert "  (top level): 4 (const, mul, sin)" in d.notes


def test_eval_view_of_the_real_optimizer_drops_the_training_branch():
    """Through Model.optimized: the eval graph has no mode switch and says so."""
    model = Model(mlp_graph())
    d = view_diagram(model, optimized=True, detail="op")
    assert "optimized for inference" in d.notes[0]
    assert not any(b.title in ("select", "mode") for b in d.boxes.values())
    assert any(line.startswith("  norm1:") for line in d.notes)
    train = view_diagram(model, train=True, optimized=True, detail="layer")
    assert "grad" in train.kinds()
    assert train.title == "mlp: training graph, optimized for training (layers, 16 parameters)"
