"""Programs: the steps one ``run(fetches, feeds)`` executes, and when each buffer dies.

Planning prunes the graph to what the fetches (and requested state updates) need; a fed
value cuts away whatever produced it.  Liveness gives, for every step, the values whose last
use it was, so the executor can free them right away.  Everything the executor would
otherwise look up per step (the kernel, its attributes, the argument ids, what to free) is
resolved here, once, into ``calls``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netlang.errors import ExecutionError, FeedError
from netlang.ir.graph import Graph, Node
from netlang.ops.registry import get_op
from netlang.ops.state import ASSIGN_OP
from netlang.runtime.memory import last_uses

_NO_KERNEL_HINT = {"mode": "bind the train/eval mode first (passes.mode.bind_mode)",
                   "grad": "expand grad() nodes first (passes.autodiff.expand_grads)"}


@dataclass(frozen=True)
class Call:
    """One kernel step: ``env[out] = kernel(xp, *env[args], **attrs)``, then free ``dead``.
    The backend picks the kernel for ``opdef`` when it binds the program (GPU overrides)."""

    out: int
    opdef: Any
    args: tuple[int, ...]
    attrs: dict
    dead: tuple[int, ...]
    random: bool
    node: Node


@dataclass(eq=False)
class Program:
    graph: Graph
    steps: list[Node]
    fetches: list[int]
    fed: frozenset[int]
    updates: dict[str, int] = field(default_factory=dict)
    free_after: list[list[int]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    variables: list[tuple[int, str]] = field(default_factory=list)   # (id, state name)
    consts: list[Node] = field(default_factory=list)


def plan(graph: Graph, fetches: list[int], fed: set[int] = frozenset(),
         updates: dict[str, int] | None = None) -> Program:
    updates = dict(updates or {})
    fed = frozenset(fed)
    roots = list(fetches) + list(updates.values())
    needed = graph.ancestors(roots, stop=fed)
    steps = early_first([n for n in graph.nodes.values() if n.id in needed])
    for node in steps:
        if node.op == ASSIGN_OP:
            updates[node.attrs["variable"]] = _assignment(graph, node, updates)
    for node in steps:
        if node.is_source("input") and node.id not in fed:
            raise _missing_feed(graph, node, fetches)
    free = last_uses(steps, set(fetches) | set(updates.values()))
    program = Program(graph, steps, list(fetches), fed, updates, free)
    _compile_steps(program)
    return program


# Ops to run as soon as their inputs exist, with the reshapes and concats that feed them
# (a data-parallel step's gradient buckets: each reduction then overlaps the rest of the
# backward pass instead of starting after it).
EARLY_OPS = ("allreduce_start",)
PACKING_OPS = ("reshape", "concat")


def early_first(steps: list[Node]) -> list[Node]:
    """``steps`` (a topological order) with the ``EARLY_OPS`` and their packing moved to just
    after the last of their inputs; everything else keeps its order."""
    by_id = {n.id: n for n in steps}
    early: set[int] = set()
    todo = [n.id for n in steps if n.op in EARLY_OPS]
    while todo:
        nid = todo.pop()
        if nid in early:
            continue
        early.add(nid)
        todo += [i for i in by_id[nid].inputs
                 if i in by_id and by_id[i].op in PACKING_OPS]
    if not early:
        return steps
    missing = {nid: {i for i in by_id[nid].inputs if i in by_id} for nid in early}
    consumers: dict[int, list[int]] = {}
    for nid, inputs in missing.items():
        for i in inputs:
            consumers.setdefault(i, []).append(nid)
    out: list[Node] = []
    emitted: set[int] = set()

    def emit(node: Node) -> None:
        out.append(node)
        emitted.add(node.id)
        for nid in sorted(consumers.get(node.id, ())):    # an early node whose last input
            missing[nid].discard(node.id)                 # this was runs right away
            if not missing[nid]:
                emit(by_id[nid])

    for node in steps:
        if node.id in early:
            if not missing[node.id] and node.id not in emitted:   # no computed input
                emit(node)
        else:
            emit(node)
    return out


def _compile_steps(program: Program) -> None:
    """Resolve kernels and attributes once; only computed values are freed (sources are
    held by the feeds, the state or the graph anyway)."""
    computed = {n.id for n in program.steps
                if n.id not in program.fed and not n.is_source()}
    for node, dead in zip(program.steps, program.free_after):
        if node.id in program.fed:
            continue
        if node.is_variable():
            program.variables.append((node.id, node.name))
        elif node.is_source("const"):
            program.consts.append(node)
        else:
            opdef = get_op(node.op)
            if opdef.kernel is None:
                raise ExecutionError(f"op '{node.op}' cannot run (it has no kernel)", node.span,
                                     hint=_NO_KERNEL_HINT.get(node.op))
            program.calls.append(Call(node.id, opdef, node.inputs, dict(node.attrs),
                                      tuple(d for d in dead if d in computed),
                                      opdef.random, node))


def _assignment(graph: Graph, node: Node, updates: dict[str, int]) -> int:
    """An ``assign`` the run computes: the variable takes its value when the run ends, as
    the train step's updates do; a variable updated twice in one run is an error."""
    name = node.attrs["variable"]
    other = updates.get(name)
    if other is not None:
        what = ("assigned again" if graph.nodes[other].op == ASSIGN_OP
                else "updated by the training step")
        where = graph.nodes[other].span
        raise ExecutionError(f"'{name}' is {what}{f' at {where}' if where else ''} in the "
                             "same run", node.span,
                             hint="a run stores one new value per variable: fetch one of "
                                  "its assignments per run")
    return node.id


def _missing_feed(graph: Graph, node: Node, fetches: list[int]) -> FeedError:
    wanted = ", ".join(f"'{graph.name_of(f) or f'%{f}'}'" for f in fetches) or "the updates"
    return FeedError(f"fetching {wanted} needs the input '{node.name}', which was not fed",
                     node.span, hint=f"feed '{node.name}' ({node.type}), or feed a value computed "
                          f"from it")
