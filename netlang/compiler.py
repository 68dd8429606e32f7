"""The compile pipeline, in one place: every stage from spec text to a runnable program.

    text --load--> Graph (parse, lower: frontend)
         --prepare--> the compiled graph (PREPARE: autodiff expands grad())
         [--training_graph--> + grad/<param> outputs, d(loss)/d(param)]
         --program_graph--> outputs narrowed to a run's fetches
         --cut_feeds--> fed values become inputs
         --bind_mode--> train/eval fixed
         --optimize--> the pass list (OPTIMIZE by default: fold, simplify, cse, settle, dce,
                        conv_bias, batchnorm, relu_mask, fusion), each pass checked by the
                        IR verifier
         --plan--> Program (runtime): the kernel calls and when each buffer dies

``Model`` (model.py), the training step, the graph views, gradcheck and the benchmark all
compile through these functions; the pass list is an argument, never a global to patch.
Each pass returns ``(graph, Report)``; the reports' id maps compose into one map from the
starting graph's ids to the program's, so a session can name values across the passes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from netlang.errors import NetlangError, UsageError
from netlang.ir.graph import DEVICES, Graph
from netlang.ops.builder import Builder
from netlang.passes.autodiff import check_all_reached, gradients
from netlang.passes.feeds import cut_feeds
from netlang.passes.mode import bind_mode
from netlang.passes.pipeline import OPTIMIZE, PREPARE, Pass, each_pass
from netlang.passes.placement import place_on, placed
from netlang.passes.report import Report, describe, report
from netlang.passes.rewrite import Mapping, compose, identity_mapping
from netlang.runtime.backend import Backend, get_backend
from netlang.runtime.executor import Executor, stored_nowhere
from netlang.runtime.memory import AllSymbols, human_bytes, plan_memory_usage, tensor_bytes
from netlang.runtime.program import Program, plan

GRAD_PREFIX = "grad/"   # the training graph names d(loss)/d(param) "grad/<param>"
Passes = Sequence[tuple[str, Pass]]


def read_source(source: str | Path) -> tuple[str, str]:
    """(text, path) for a spec given as a path or as text."""
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                    and "{" not in source):
        path = Path(source)
        try:
            return path.read_text(), str(source)
        except OSError as err:
            raise UsageError(f"cannot read spec '{source}': {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise UsageError(f"cannot read spec '{source}': not UTF-8 text (byte "
                             f"0x{err.object[err.start]:02x} at offset {err.start})",
                             hint="a spec is a UTF-8 text file (.net)") from None
    return source, "<string>"


def load(source: str | Path, path: str | None = None) -> Graph:
    """Parse and lower a spec (a file path or the spec text itself) to its IR."""
    from netlang.frontend import load_spec

    text, where = read_source(source)
    return load_spec(text, path or where)


@dataclass
class Step:
    """One stage of a compilation: its name, the graph after it, and what it did."""

    name: str
    graph: Graph
    report: Report | str

    def __iter__(self):   # unpacks as (name, graph, report)
        return iter((self.name, self.graph, self.report))


def run_passes(graph: Graph, passes: Passes, stop_after: str | None = None
               ) -> tuple[Graph, list[Step]]:
    """The passes in order (each verified); the last graph and every step."""
    steps = []
    for name, after, rep in each_pass(graph, list(passes)):
        graph = after
        steps.append(Step(name, after, rep))
        if name == stop_after:
            break
    return graph, steps


def prepare(graph: Graph, passes: Passes = PREPARE) -> tuple[Graph, list[Step]]:
    """The compiled graph every program starts from (autodiff first, so later passes see
    gradients as ordinary nodes)."""
    return run_passes(graph, passes)


def training_graph(graph: Graph, require_all: bool = True,
                   scale: int | None = None) -> Graph:
    """A copy of ``graph`` with outputs ``grad/<param>``: d(loss)/d(param) for every
    parameter.  A parameter the loss cannot reach is a ``GradientError`` naming the op that
    blocks it, unless ``require_all`` is False (then it simply gets no output).

    ``scale`` (a scalar node of ``graph``: dynamic loss scaling's factor) seeds the backward
    pass with it instead of 1, so the half-precision gradients inside are that much larger
    and do not underflow; each ``grad/<param>`` is divided by it again at the end."""
    if graph.loss is None or graph.loss not in graph.outputs:
        raise UsageError(f"network '{graph.name}' has no loss to differentiate",
                         hint="add a line such as: loss xent = mean(...)")
    out = graph.copy()
    b = Builder(out)
    loss = out.outputs[out.loss]
    names = list(out.params)
    grads = gradients(b, loss, [out.params[n] for n in names], seed=scale)
    if require_all:
        check_all_reached(out, loss, out.params, dict(zip(names, grads)))
    inverse = None if scale is None else b.div(b.const(1.0, b.type_of(scale).dtype), scale)
    for name, grad in zip(names, grads):
        if grad is not None:
            if inverse is not None:
                grad = b.mul(grad, b.cast(inverse, dtype=str(b.type_of(grad).dtype)))
            out.outputs[GRAD_PREFIX + name] = grad
    return out


def fetch_key(graph: Graph, nid: int) -> str:
    """The name a fetched value gets among a program's outputs."""
    name = graph.name_of(nid)
    return name if name is not None and graph.resolve(name) == nid else f"%{nid}"


def program_graph(graph: Graph, fetches: dict[str, int]) -> Graph:
    """``graph`` whose outputs are exactly ``fetches`` (key -> id) and where nothing else is
    named for fetching, so every later pass keeps what the run returns and prunes the rest."""
    out = graph.copy()
    out.unfetched = {**graph.values, **graph.outputs}
    out.outputs = dict(fetches)
    out.values = {}
    out.loss = graph.loss if graph.loss in out.outputs else None
    out.metrics = [m for m in graph.metrics if m in out.outputs]
    return out


@dataclass
class Trace:
    """Every stage of one program's compilation and the id map from start to end."""

    steps: list[Step]
    mapping: Mapping

    @property
    def graph(self) -> Graph:
        return self.steps[-1].graph


def trace(graph: Graph, training: bool = False, fed: frozenset[int] = frozenset(),
          fetches: Sequence[int] | None = None, updates: bool = True,
          passes: Passes = OPTIMIZE, device: str = "cpu") -> Trace:
    """cut_feeds -> bind_mode -> ``passes`` -> placement for one program of ``graph``.

    ``fetches`` (ids of ``graph``) become the program's outputs (default: all outputs);
    without ``updates`` the state updates are left out of the program.  ``device`` is the
    session's: where the nodes no ``on`` block placed run (passes/placement.py; the step
    shows only for a graph with ``on`` blocks).
    """
    start = graph.copy()
    if not updates:
        start.updates = {}
    steps: list[Step] = []
    mapping = identity_mapping(graph)
    if fed:
        start, cut = cut_feeds(start, fed)
        steps.append(Step("cut_feeds", start, cut))
        mapping = compose(mapping, cut.mapping)
    if fetches is not None:
        keys = {fetch_key(graph, f): mapping.get(f) for f in fetches}
        start = program_graph(start, {k: v for k, v in keys.items() if v is not None})
    current, bound = bind_mode(start, training)
    steps.append(Step("bind_mode", current, bound))
    mapping = compose(mapping, bound.mapping)
    for name, after, rep in each_pass(current, list(passes)):
        steps.append(Step(name, after, rep))
        mapping = compose(mapping, getattr(rep, "mapping", None))
    if placed(steps[-1].graph):
        for name, after, rep in each_pass(steps[-1].graph, [("placement", place_on(device))]):
            steps.append(Step(name, after, rep))
            mapping = compose(mapping, rep.mapping)
    return Trace(steps, mapping)


@dataclass(eq=False)
class Compiled:
    """A program and how the starting graph's ids map into it."""

    program: Program
    mapping: Mapping


def compile_program(graph: Graph, fetches: Sequence[int], fed: frozenset[int],
                    training: bool, updates: bool, passes: Passes = OPTIMIZE,
                    device: str = "cpu") -> Compiled:
    """The program that computes ``fetches`` (ids of ``graph``) given the ``fed`` values,
    on a session whose device is ``device``."""
    result = trace(graph, training, fed, fetches, updates, passes, device)
    opt = result.graph
    fetch_ids = [result.mapping.get(f) for f in fetches]
    if None in fetch_ids:
        raise UsageError("a fetched value was optimized away")
    fed_ids = {result.mapping[f] for f in fed if result.mapping.get(f) is not None}
    return Compiled(plan(opt, fetch_ids, fed_ids, opt.updates), result.mapping)


def memory_report(graph: Graph, batch: int, backend: Backend | None = None) -> Report:
    """The memory plan of a full run of ``graph`` at ``batch``, as ``explain`` prints it:
    the liveness peak with and without freeing, and the arena the executor binds on
    ``backend`` (default: the CPU's kernels) for the kernels that write into given buffers."""
    mp = plan_memory_usage(graph, batch)
    saved = mp.unplanned_bytes - mp.peak_bytes
    summary = (f"peak activation memory at batch {batch}: {human_bytes(mp.peak_bytes)} with "
               f"the plan (each value freed after its last use), "
               f"{human_bytes(mp.unplanned_bytes)} without (every value kept to the end); "
               f"saves {human_bytes(saved)}")
    items = []
    if mp.peak_step is not None:
        items.append(f"{mp.values} activations; the peak is reached at "
                     f"{describe(graph, mp.peak_step)}")
    try:
        bound = bind_for_batch(graph, batch, backend or get_backend("cpu"))
    except NetlangError as err:        # a window too large for the sizes given to symbols
        items.append(f"arena: not planned at every symbolic dim = {batch} ({err.message}); "
                     f"a run plans it at the sizes fed")
        return report(summary, items, changed=0, plan=mp, arena=None, bound=None)
    arena = bound.plan
    if arena is not None and mp.values:
        placed = sum(1 for key in arena.offsets if not isinstance(key, tuple))
        nowhere = stored_nowhere(bound)
        in_place = len(bound.in_place)
        items.append(
            f"arena: {human_bytes(arena.arena_bytes)} in {arena.slots} slots for {placed} of "
            f"{mp.values} activations (at most {human_bytes(arena.live_peak)} of them alive "
            f"at once); kernels allocate the other {mp.values - placed - in_place - nowhere}; "
            f"variables updated in place: {in_place}"
            + (f"; stored nowhere (computed inside another kernel's loop): {nowhere}"
               if nowhere else ""))
    return report(summary, items, changed=0, plan=mp, arena=arena, bound=bound)


def transfer_bytes(graph: Graph, batch: int) -> str | None:
    """The bytes a run of ``graph`` copies between devices at ``batch`` (its ``transfer``
    nodes, which the placement pass lists one by one), or None when it copies nothing."""
    moved = [n for n in graph if n.op == "transfer"]
    if not moved:
        return None
    total = sum(tensor_bytes(n.type, batch) for n in moved)
    return (f"transfers between devices: {human_bytes(total)} per step at batch {batch} "
            f"({len(moved)} copies)")


def bind_for_batch(graph: Graph, batch: int, backend: Backend):
    """A full run of ``graph`` (its outputs and updates, every input fed) bound on
    ``backend`` with every symbolic dim at ``batch``, as a session's executor binds it."""
    fed = {n.id for n in graph if n.is_source("input")}
    program = plan(graph, list(graph.outputs.values()), fed, graph.updates)
    everywhere = {device: backend for device in DEVICES}   # placed nodes planned as if there
    return Executor(backend, devices=everywhere).bind_sizes(program, AllSymbols(batch))


def explain_text(title: str, steps: Sequence[Step], memory: Report | str) -> str:
    """The table ``netlang explain`` prints: pass, node count, change, report lines."""
    lines = [title, f"  {'pass':<12}{'nodes':>6}{'change':>8}  what changed"]
    previous = None
    for name, graph, rep in steps:
        change = "" if previous in (None, len(graph)) else f"{len(graph) - previous:+d}"
        previous = len(graph)
        head, *items = str(rep).split("\n") if rep else [""]
        lines.append(f"  {name:<12}{len(graph):>6}{change:>8}  {head}".rstrip())
        lines += [f"      {item.strip()}" for item in items]
    head, *items = str(memory).split("\n")
    lines.append(f"memory plan: {head}")
    lines += [f"      {item.strip()}" for item in items]
    return "\n".join(lines) + "\n"
