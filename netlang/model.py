"""The Python API: ``netlang.compile`` gives a ``Model``; a ``Session`` runs it.

This is the one module that chains the stages: parse and lower (``frontend``), the prepare
passes (``passes``), then per program the mode binding, optimization and planning, which the
``runtime`` executes against a ``State`` (the seed's Graph/Session model, in netlang's words).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from netlang.errors import FeedError, NetlangError, UsageError, did_you_mean
from netlang.ir.graph import Graph
from netlang.ir.printer import format_graph
from netlang.ir.types import DType, TensorType, bind_dims
from netlang.passes.feeds import cut_feeds
from netlang.passes.mode import bind_mode
from netlang.passes.pipeline import OPTIMIZE, PREPARE, run_passes
from netlang.runtime.backend import get_backend
from netlang.runtime.executor import Executor
from netlang.runtime.program import Program, plan
from netlang.runtime.state import State


def read_source(source: str | Path) -> tuple[str, str]:
    """(text, path) for a spec given as a path or as text."""
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                    and "{" not in source):
        path = Path(source)
        try:
            return path.read_text(), str(source)
        except OSError as err:
            raise UsageError(f"cannot read spec '{source}': {err.strerror}") from None
    return source, "<string>"


def compile(source: str | Path, path: str | None = None) -> "Model":
    """Parse, lower and prepare a spec (a file path or the spec text itself)."""
    from netlang.frontend import load_spec

    text, where = read_source(source)
    graph = load_spec(text, path or where)
    lowered = graph
    graph, reports = run_passes(graph, PREPARE)
    return Model(graph, reports, lowered)


class Model:
    """A compiled spec: the typed graph, and programs compiled from it on demand."""

    def __init__(self, graph: Graph, reports=(), lowered: Graph | None = None):
        self.graph = graph
        self.lowered = lowered or graph
        self.reports = list(reports)
        self._programs: dict[tuple, tuple[Program, list]] = {}

    @property
    def warnings(self) -> list:
        return list(self.lowered.meta.get("warnings", []))

    @property
    def train_config(self):
        return self.graph.meta.get("train")

    def ir(self, with_span: bool = True) -> str:
        return format_graph(self.graph, with_span)

    def types(self) -> dict[str, TensorType]:
        """The type of every named value (inputs, parameters, assignments, outputs)."""
        out = {}
        for name in self.graph.known_names():
            out[name] = self.graph.nodes[self.graph.resolve(name)].type
        return out

    def session(self, device: str = "cpu", seed: int = 0) -> "Session":
        return Session(self, device, seed)

    def optimized(self, training: bool, graph: Graph | None = None,
                  fed: frozenset[int] = frozenset()):
        """The graph cut at the fed values, with the mode bound and every optimization
        pass run, plus the reports."""
        start = (graph or self.graph).copy()
        start.meta.pop("id_map", None)
        graph, cut_report = cut_feeds(start, fed)
        graph, report = bind_mode(graph, training)
        graph, reports = run_passes(graph, OPTIMIZE)
        return graph, [("cut_feeds", cut_report), ("bind_mode", report), *reports]

    def program(self, fetches: tuple[int, ...], fed: frozenset[int], training: bool,
                updates: bool, graph: Graph | None = None) -> Program:
        """The cached program for these fetches and fed values (ids in ``self.graph``)."""
        base = graph or self.graph
        key = (id(base), fetches, fed, training, updates)
        if key not in self._programs:
            opt, reports = self.optimized(training, base, fed)
            mapping = _id_map(opt, base)
            fetch_ids = [mapping[f] for f in fetches]
            if None in fetch_ids:
                raise UsageError("a fetched value was optimized away")
            fed_ids = {mapping[f] for f in fed if mapping.get(f) is not None}
            ups = {k: v for k, v in opt.updates.items()} if updates else {}
            self._programs[key] = (plan(opt, fetch_ids, fed_ids, ups), mapping)
        return self._programs[key]


def _id_map(graph: Graph, base: Graph) -> dict[int, int | None]:
    """Where each value of ``base`` lives in ``graph`` (identity if nothing was rebuilt)."""
    mapping = graph.meta.get("id_map")
    return dict(mapping) if mapping is not None else {nid: nid for nid in base.nodes}


class Session:
    """A model bound to a backend, holding the state its runs read and update."""

    def __init__(self, model: Model, device: str = "cpu", seed: int = 0):
        self.model = model
        self.backend = get_backend(device)
        self.seed = seed
        self.state = State.initialize(model.graph, self.backend, seed)
        self.rng = np.random.default_rng(seed)
        self.executor = Executor(self.backend, self.rng)

    def _value_id(self, name) -> int:
        try:
            return self.model.graph.resolve(name)
        except KeyError:
            raise UsageError(f"no value named '{name}'",
                             hint=did_you_mean(str(name), self.model.graph.known_names()))

    def run(self, fetches, feeds: dict | None = None, training: bool = False,
            updates: bool = False) -> Any:
        """Compute ``fetches`` (a name or a list of names) given ``feeds`` (name -> value)."""
        single = isinstance(fetches, (str, int))
        names = [fetches] if single else list(fetches)
        ids = tuple(self._value_id(n) for n in names)
        feeds = feeds or {}
        fed_ids = {self._value_id(k): v for k, v in feeds.items()}
        program, mapping = self.model.program(ids, frozenset(fed_ids), training, updates)
        values = {mapping[k]: self._feed_value(k, v) for k, v in fed_ids.items()
                  if mapping.get(k) is not None}
        try:
            out = self.executor.run(program, values, self.state)
        except NetlangError:
            raise
        out = [self.backend.to_numpy(v) for v in out]
        return out[0] if single else out

    def _feed_value(self, nid: int, value):
        node = self.model.graph.nodes[nid]
        declared = node.type
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise FeedError(f"feed '{node.name or nid}' is not numeric ({arr.dtype})")
        if declared.dtype.is_float or declared.dtype is DType.bool or arr.dtype.kind in "biu":
            arr = arr.astype(declared.dtype.numpy, copy=False)
        elif arr.dtype.kind == "f":
            raise FeedError(f"feed '{node.name or nid}' has float values but the spec declares "
                            f"{declared}", hint="feed integers (class labels) here")
        if not bind_dims(declared.shape, arr.shape, {}):
            raise FeedError(f"feed '{node.name or nid}' has shape {list(arr.shape)} but the "
                            f"spec declares {declared}")
        return self.backend.asarray(arr)
