"""What optimization did to a graph, read off the passes' id map (old id -> new id or None).

Old nodes that map to nothing were removed (dead code, or the inside of a folded
expression).  Several old nodes mapping to one new node were merged: by CSE when they had the
new node's op, folded when the new node is a constant, simplified otherwise (``x*1 -> x``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from netlang.ir.graph import Graph, Node

MAX_SCOPE_LINES = 12   # legend lines naming scopes with nodes gone; the rest are counted


@dataclass
class Changes:
    merged: dict[int, list[Node]] = field(default_factory=dict)      # new id -> old nodes
    fused: dict[int, list[Node]] = field(default_factory=dict)       # new fused id -> old
    folded: dict[int, list[Node]] = field(default_factory=dict)      # new const id -> old
    simplified: dict[int, list[Node]] = field(default_factory=dict)  # new id -> old nodes
    removed: list[Node] = field(default_factory=list)
    reports: list[tuple[str, str]] = field(default_factory=list)

    def marks(self, *new_ids: int) -> list[str]:
        """Short notes for surviving nodes (one node, or all of a layer's):
        ``+2 merged (CSE)``, ``fused 5 ops``, ``folded mul``."""
        out = []
        for table, say in ((self.merged, "merged (CSE)"), (self.fused, "fused"),
                           (self.folded, "folded"), (self.simplified, "simplified")):
            olds = [n for i in new_ids for n in table.get(i, ())]
            if olds and table is self.merged:
                out.append(f"+{len(olds)} {say}")
            elif olds:
                out.append(f"{say} {_ops(olds)}")
        return out


def _ops(nodes: list[Node]) -> str:
    return nodes[0].op if len(nodes) == 1 else f"{len(nodes)} ops"


def compare(before: Graph, after: Graph, id_map: dict[int, int | None] | None = None,
            reports=()) -> Changes:
    """The merges, folds and removals that turned ``before`` into ``after`` (``id_map``:
    where each of ``before``'s ids went; default: ids that still exist stayed)."""
    if id_map is None:
        id_map = {nid: nid for nid in before.nodes if nid in after.nodes}
    changes = Changes(reports=list(reports))
    groups: dict[int, list[Node]] = {}
    for node in before.nodes.values():
        new = id_map.get(node.id)
        if new is None or new not in after.nodes:
            changes.removed.append(node)
        else:
            groups.setdefault(new, []).append(node)
    for new, olds in groups.items():
        _classify(after.nodes[new], olds, changes)
    _claim_fused(before, after, changes)
    return changes


def _claim_fused(before: Graph, after: Graph, changes: Changes) -> None:
    """A fused node stands for its group's ops, though only the group's last op maps to it:
    the removed ops feeding that one, as many as the group holds, went into it."""
    removed = {n.id: n for n in changes.removed}
    for new_id, olds in changes.fused.items():
        wanted = [step[0] for step in after.nodes[new_id].attrs.get("expr", ())]
        for old in olds:
            if old.op in wanted:
                wanted.remove(old.op)
        todo = [i for o in olds for i in o.inputs]
        while todo and wanted:
            nid = todo.pop(0)
            if nid in removed and removed[nid].op in wanted:
                wanted.remove(removed[nid].op)
                olds.insert(0, removed.pop(nid))
                todo += before.nodes[nid].inputs
    changes.removed = [n for n in changes.removed if n.id in removed]


def _classify(new: Node, olds: list[Node], changes: Changes) -> None:
    if new.op == "fused":
        steps = {step[0] for step in new.attrs.get("expr", ())}
        changes.fused[new.id] = [o for o in olds if o.op in steps]
        olds = [o for o in olds if o.op not in steps]
        if not olds:
            return
    kept = next((o for o in olds if o.op == new.op), None)
    for old in olds:
        if old is kept:
            continue
        if new.is_source("const") and not old.is_source("const"):
            changes.folded.setdefault(new.id, []).append(old)
        elif old.op == new.op:
            changes.merged.setdefault(new.id, []).append(old)
        else:
            changes.simplified.setdefault(new.id, []).append(old)


def gone(changes: Changes) -> list[Node]:
    """Old nodes with no node of their own any more: removed, folded or simplified away."""
    nodes = list(changes.removed)
    for table in (changes.folded, changes.simplified):
        nodes += [n for olds in table.values() for n in olds]
    return sorted(nodes, key=lambda n: n.id)


def removed_by_scope(changes: Changes) -> dict[str, list[Node]]:
    """Nodes gone, grouped by scope (``∇ conv1`` for gradient nodes), in graph order."""
    out: dict[str, list[Node]] = {}
    for node in gone(changes):
        scope = node.scope or "(top level)"
        out.setdefault(f"∇ {scope}" if "grad" in node.tags else scope, []).append(node)
    return out


def legend_lines(changes: Changes, training: bool) -> list[str]:
    """The notes the optimized view prints beside the graph."""
    lines = [f"optimized for {'training' if training else 'inference'}"]
    for name, report in changes.reports:
        summary = str(report).split("\n", 1)[0]  # reports list each node after a summary
        if summary and getattr(report, "changed", 1) and not summary.startswith("no "):
            lines.append(f"{name}: {summary}")
    groups = removed_by_scope(changes)
    if groups:
        lines.append(f"gone (removed, folded or simplified away): "
                     f"{sum(len(g) for g in groups.values())} node(s)")
    for scope, nodes in list(groups.items())[:MAX_SCOPE_LINES]:
        ops = list(dict.fromkeys(n.op for n in nodes))
        text = ", ".join(ops[:4]) + (" …" if len(ops) > 4 else "")
        lines.append(f"  {scope}: {len(nodes)} ({text})")
    if len(groups) > MAX_SCOPE_LINES:
        lines.append(f"  … and {len(groups) - MAX_SCOPE_LINES} more scopes")
    return lines
