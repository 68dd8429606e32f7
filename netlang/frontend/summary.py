"""Per-layer numbers for ``netlang check`` and ``netlang summary`` (like Keras' summary).

Rows come from the ``LayerRecord``s the lowering leaves in ``graph.spec.layers``: each
layer's output type, the parameters it created, its forward FLOPs per example (from each
op's ``flops`` rule, one FLOP per output element where an op has none; a multiply-add is
2) and the bytes of its output at a given batch size.  The batch symbols are the leading
dims of the inputs (``N``); any other symbolic dim counts as 1.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from netlang.errors import SpecWarning
from netlang.ir.graph import SOURCE_OPS, Graph, Node
from netlang.ir.types import Sym, TensorType, resolve_dim
from netlang.ops.registry import OPS

NO_WORK_OPS = SOURCE_OPS | {"mode", "grad"}


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    type: TensorType | None
    params: int            # trainable parameters the layer created
    state: int             # non-trainable values it created (moving statistics)
    flops: int             # forward FLOPs for one example
    activation_bytes: int  # its output's bytes at the summary's batch size
    names: tuple[str, ...] = ()   # user names of its output (h, logits, probs)


@dataclass(frozen=True)
class Summary:
    network: str
    batch: int
    rows: list[LayerRow]

    @property
    def trainable(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def non_trainable(self) -> int:
        return sum(r.state for r in self.rows)

    @property
    def total_params(self) -> int:
        return self.trainable + self.non_trainable

    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.rows)

    @property
    def activation_bytes(self) -> int:
        return sum(r.activation_bytes for r in self.rows)


def summarize(graph: Graph, batch: int = 1) -> Summary:
    """The summary of a lowered graph (the one ``load_spec`` returns)."""
    per_example = {s: 1 for s in _symbols(graph)}
    at_batch = dict(per_example, **{s: batch for s in batch_symbols(graph)})
    names = _user_names(graph)
    rows = [_row(graph, record, per_example, at_batch, names)
            for record in graph.spec.layers]
    return Summary(graph.name, batch, rows)


def _row(graph: Graph, record, per_example: dict, at_batch: dict, names: dict) -> LayerRow:
    out = graph.nodes[record.output].type if record.output is not None else None
    params = state = 0
    for path in record.params:
        if path in graph.params:
            params += _count(graph.type_of(graph.params[path]).shape, per_example)
        elif path in graph.state:
            state += _count(graph.type_of(graph.state[path]).shape, per_example)
    flops = sum(node_flops(graph, graph.nodes[i], per_example) for i in record.nodes
                if i in graph.nodes)
    act = out.dtype.itemsize * _count(out.shape, at_batch) if out is not None else 0
    return LayerRow(record.name, record.kind, out, params, state, flops, act,
                    tuple(names.get(record.output, ())))


def node_flops(graph: Graph, node: Node, bindings: dict) -> int:
    """FLOPs of one node: its op's rule, else one per output element."""
    if node.op in NO_WORK_OPS:
        return 0
    opdef = OPS.get(node.op)
    if opdef is not None and opdef.flops is not None:
        inputs = [graph.nodes[i].type for i in node.inputs]
        try:
            return max(0, _resolve(opdef.flops(node.type, *inputs, **node.attrs), bindings))
        except (TypeError, ValueError, KeyError, AttributeError):
            pass  # a rule that cannot say: count one per output element
    return _count(node.type.shape, bindings)


def batch_symbols(graph: Graph) -> set[str]:
    """The symbols that lead an input's shape (``N`` in ``f32[N,28,28,1]``)."""
    out = set()
    for nid in graph.inputs.values():
        shape = graph.nodes[nid].type.shape
        if shape and isinstance(shape[0], Sym):
            out.update(shape[0].symbols)
    return out


def _symbols(graph: Graph) -> set[str]:
    out = set()
    for node in graph:
        for d in node.type.shape:
            if isinstance(d, Sym):
                out.update(d.symbols)
    return out


def _resolve(value, bindings: dict) -> int:
    if isinstance(value, Sym):
        return resolve_dim(value, {s: bindings.get(s, 1) for s in value.symbols})
    return int(value)


def _count(shape: tuple, bindings: dict) -> int:
    total = 1
    for d in shape:
        total *= _resolve(d, bindings)
    return total


def _user_names(graph: Graph) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for table in (graph.values, graph.outputs):
        for name, nid in table.items():
            if name not in out.setdefault(nid, []):
                out[nid].append(name)
    return out


# -- memory -----------------------------------------------------------------------------------

def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``, else physical memory)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def memory_warnings(graph: Graph, batch: int, available: int | None) -> list[SpecWarning]:
    """A warning for each parameter, and each layer's output at ``batch``, that alone needs
    more memory than is ``available``: such a spec checks, but cannot run here."""
    if available is None:
        return []
    per_example = {s: 1 for s in _symbols(graph)}
    at_batch = dict(per_example, **{s: batch for s in batch_symbols(graph)})
    have = format_bytes(available)
    out = []
    for path, nid in {**graph.params, **graph.state}.items():
        node = graph.nodes[nid]
        size = node.type.dtype.itemsize * _count(node.type.shape, per_example)
        if size > available:
            out.append(SpecWarning(
                f"parameter '{path}' ({node.type}) needs {format_bytes(size)}, more than "
                f"the {have} of memory available", node.span,
                hint="check the layer sizes; running or training this spec will fail"))
    seen = set(graph.params.values()) | set(graph.state.values())
    for record in graph.spec.layers:
        if record.output is None or record.output in seen:
            continue
        seen.add(record.output)
        t = graph.nodes[record.output].type
        size = t.dtype.itemsize * _count(t.shape, at_batch)
        if size > available:
            out.append(SpecWarning(
                f"the output of {record.name} ({t}) needs {format_bytes(size)} at batch "
                f"{batch}, more than the {have} of memory available", record.span,
                hint="use a smaller batch or smaller layers; running this spec will fail"))
    return out


def format_count(n: int) -> str:
    return f"{n:,}"


def format_bytes(n: int) -> str:
    """``1.5 MiB``: binary units, three significant digits."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1024
    return f"{n} B"
