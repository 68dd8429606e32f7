"""The Python API: ``netlang.compile`` gives a ``Model``; a ``Session`` runs it.

The stages themselves are chained in ``compiler.py``; a model keeps the compiled graph and
the programs compiled from it, and a session runs them against a ``State`` (the seed's
Graph/Session model, in netlang's words)::

    model = netlang.compile("specs/mnist.net")
    s = model.session(device="cpu", seed=0)
    probs = s.run("probs", {"image": x})                       # eval mode, no updates
    y, _ = s.run(["y", "update_ops"], {"x": x}, training=True)  # and batchnorm's updates
    s.run("c", {"b": 3.0})             # any value may be fed; it cuts away its producers
    s.save("run.ckpt"); s.restore("run.ckpt")

A run computes only what its fetches need; its program is compiled once per
(fetches, fed names, mode, updates) and cached.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from netlang import compiler
from netlang.compiler import GRAD_PREFIX, Compiled, Passes, Step, explain_text
from netlang.errors import FeedError, UsageError, did_you_mean
from netlang.ir.graph import Graph
from netlang.ir.printer import format_graph
from netlang.ir.types import DType, TensorType, bind_dims, is_float_dtype
from netlang.passes.pipeline import OPTIMIZE
from netlang.runtime import checkpoint
from netlang.runtime.backend import get_backend
from netlang.runtime.executor import Executor
from netlang.runtime.initializers import initialize
from netlang.runtime.state import State

UPDATE_OPS = "update_ops"   # fetch this name to run the state updates (the seed's update_ops)

__all__ = ["GRAD_PREFIX", "UPDATE_OPS", "Model", "Session", "compile"]


def compile(source: str | Path, path: str | None = None,
            passes: Passes = OPTIMIZE) -> Model:
    """Parse, lower and prepare a spec (a file path or the spec text itself); ``passes``
    optimizes every program the model compiles (default: ``passes.pipeline.OPTIMIZE``)."""
    lowered = compiler.load(source, path)
    graph, steps = compiler.prepare(lowered)
    return Model(graph, steps, lowered, passes)


class Model:
    """A compiled spec: the typed graph, and programs compiled from it on demand."""

    def __init__(self, graph: Graph, steps=(), lowered: Graph | None = None,
                 passes: Passes = OPTIMIZE):
        self.graph = graph
        self.lowered = lowered or graph
        self.steps: list[Step] = [s if isinstance(s, Step) else Step(*s) for s in steps]
        self.passes = list(passes)
        self._programs: dict[tuple, Compiled] = {}
        self._training_graph: Graph | None = None
        self._defaults: dict[str, np.ndarray] | None = None

    @property
    def warnings(self) -> list:
        return list(self.lowered.spec.warnings)

    @property
    def train_config(self):
        return self.graph.spec.train

    def defaults(self) -> dict[str, np.ndarray]:
        """The inputs declared with a default value (``input rate: f32[] = 0.5``) and those
        values: a run that does not feed such an input uses its default."""
        if self._defaults is None:
            self._defaults = {}
            for name, nid in self.graph.inputs.items():
                node = self.graph.nodes[nid]
                if "default" in node.attrs:
                    self._defaults[name] = initialize(node.attrs["default"], node.type.shape,
                                                      node.type.dtype.numpy, None)
        return self._defaults

    def types(self) -> dict[str, TensorType]:
        """The type of every named value (inputs, parameters, assignments, outputs)."""
        out = {}
        for name in self.graph.known_names():
            out[name] = self.graph.nodes[self.graph.resolve(name)].type
        return out

    def __repr__(self) -> str:
        g = self.graph
        inputs = ", ".join(f"{n} {g.nodes[i].type}" for n, i in g.inputs.items()) or "none"
        parts = [f"inputs {inputs}", f"outputs {', '.join(g.outputs) or 'none'}"]
        if g.loss is not None:
            parts.append(f"loss {g.loss}")
        count = sum(g.nodes[i].type.numel() for i in g.params.values())
        parts.append(f"{count:,} trainable parameters in {len(g.params)} arrays")
        return f"<netlang.Model '{g.name}': {'; '.join(parts)}>"

    def _repr_svg_(self) -> str | None:
        """The network's layer diagram, as ``netlang render`` draws it (Jupyter shows it);
        None without Graphviz, and the text form shows instead."""
        from netlang import viz  # Graphviz is loaded only when a picture is wanted
        return viz.svg(self)

    def fit(self, epochs: int | None = None, out: str | Path | None = None, **options):
        """Train as the spec's train section says, as ``netlang train`` does (the same run
        folder, default ``runs/<network>``, progress lines, checkpoints and errors); returns
        the ``FitResult``, whose ``history`` maps each loss and metric to its per-epoch
        values.  ``options`` are ``train``'s: ``batch``, ``lr``, ``seed``, ``resume``,
        ``force``, ``init_from``, ``data_dir``, ``device``, ``kernels``, ``limit``,
        ``stop_after``, and ``say`` (where progress lines go, default print)."""
        from netlang.train.fit import train_model  # the trainer imports this module
        return train_model(self, epochs=epochs, out=out, **options)

    def session(self, device: str = "cpu", seed: int = 0, kernels: str = "default") -> Session:
        """A session on ``device``; ``kernels`` picks the CPU's kernel set (``default``:
        oneDNN and netlang's fast paths, ``builtin``: no library, ``numpy``: the reference
        kernels alone)."""
        return Session(self, device, seed, kernels)

    # -- the graphs a user can look at ---------------------------------------------------
    def training_graph(self) -> Graph:
        """The network plus ``grad/<param>`` outputs: d(loss)/d(param) for every parameter
        (``compiler.training_graph``; the training step adds the optimizer's updates)."""
        if self._training_graph is None:
            self._training_graph = compiler.training_graph(self.graph)
        return self._training_graph

    def trace(self, training: bool = False, graph: Graph | None = None,
              fed: frozenset[int] = frozenset(), fetches: tuple[int, ...] | None = None,
              updates: bool = True, device: str = "cpu") -> list[Step]:
        """Every optimization step for one program (``compiler.trace`` with this model's
        passes) on a session on ``device``, as ``(pass name, graph after, report)``."""
        return compiler.trace(graph or self.graph, training, fed, fetches, updates,
                              self.passes, device).steps

    def ir(self, after: str | None = None, training: bool = False,
           with_span: bool = True, step: Step | None = None) -> str:
        """The IR text: as compiled (``after=None``), or after any named pass (``lowered``,
        ``autodiff``, ``gradients`` with ``training``, ``bind_mode``, ``fold``, ...) of the
        program a run would execute (eval runs leave the state updates out).  With
        ``training``, ``step`` (e.g. ``("optimizer", train_step_graph, report)``) is one more
        stage after the gradients, and the default view."""
        return format_graph(self._graph_after(after, training, step), with_span)

    def _graph_after(self, after: str | None, training: bool, step: Step | None = None
                     ) -> Graph:
        if after in ("lowered", "lower"):
            return self.lowered
        base = self.training_graph() if training else self.graph
        if after == "gradients" and training:
            return base
        if training and step is not None:
            step = step if isinstance(step, Step) else Step(*step)
            base = step.graph
            if after == step.name:
                return base
        if after is None:
            return base
        if after in (step.name for step in self.steps):
            return self.graph  # PREPARE runs once; its last graph is the compiled one
        for stage in self.trace(training, base, updates=training):
            if stage.name == after:
                return stage.graph
        names = ["lowered", *(s.name for s in self.steps),
                 *(["gradients"] if training else []),
                 *([step.name] if training and step is not None else []), "bind_mode",
                 *(n for n, _ in self.passes)]
        raise UsageError(f"no pass named '{after}'",
                         hint=did_you_mean(str(after), names) or "passes: " + ", ".join(names))

    def explain(self, training: bool = False, batch: int | None = None,
                step: Step | tuple | None = None, fetches: list[str] | None = None,
                device: str = "cpu") -> str:
        """What each pass changed, in order, and the memory plan's peak at ``batch``.

        ``training`` explains the training graph (forward plus gradients); ``step`` adds one
        more stage that replaces it, e.g. ``("optimizer", train_step_graph, report)``, and
        ``fetches`` prunes to what a run fetches (default: every output).  Eval programs
        leave the state updates out, as eval runs do; training programs keep them.
        """
        batch = batch if batch is not None else _config_batch(self.train_config)
        steps = [Step("lowered", self.lowered, ""), *self.steps]
        if training:
            added = f"d({self.graph.loss})/d(param) for {len(self.graph.params)} parameters"
            steps.append(Step("gradients", self.training_graph(), added))
        if step is not None:
            steps.append(step if isinstance(step, Step) else Step(*step))
        base = steps[-1].graph
        ids = None if fetches is None else tuple(base.resolve(n) for n in fetches)
        steps += self.trace(training, base, fetches=ids, updates=training, device=device)
        memory = compiler.memory_report(steps[-1].graph, batch)
        moved = compiler.transfer_bytes(steps[-1].graph, batch)
        if moved is not None:
            memory = f"{memory}\n{moved}"
        what = "training" if training else "eval"
        return explain_text(f"explain {self.graph.name} ({what}, batch {batch})", steps, memory)

    # -- programs --------------------------------------------------------------------------
    def program(self, fetches: tuple[int, ...], fed: frozenset[int], training: bool,
                updates: bool, graph: Graph | None = None, device: str = "cpu") -> Compiled:
        """The cached program for these fetches and fed values (ids in ``graph``), with the
        map from those ids to the program graph's, for a session on ``device``."""
        base = graph or self.graph
        key = (id(base), fetches, fed, training, updates, device)
        cached = self._programs.get(key)
        if cached is None:
            cached = compiler.compile_program(base, fetches, fed, training, updates,
                                              self.passes, device)
            self._programs[key] = cached
        return cached


def _config_batch(config) -> int:
    """The train section's batch size, or 1 when the spec has none."""
    if config is None:
        return 1
    batch = config.get("batch") if isinstance(config, dict) else getattr(config, "batch", None)
    return int(batch) if batch else 1


class Session:
    """A model bound to a backend, holding the state its runs read and update."""

    def __init__(self, model: Model, device: str = "cpu", seed: int = 0,
                 kernels: str = "default"):
        self.model = model
        self.backend = get_backend(device, kernels)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.executor = Executor(self.backend, self.rng, kernels=kernels)
        self.state = State.initialize(model.graph, self.backend, seed,
                                      self.executor.backend_of)
        self._ids: dict[tuple[int, Any], int] = {}
        self._plans: dict[tuple, RunPlan] = {}

    def __repr__(self) -> str:
        return (f"<netlang.Session of '{self.model.graph.name}' on "
                f"{self.backend.describe()}, seed {self.seed}: "
                f"{len(self.state.arrays)} variables>")

    def run(self, fetches, feeds: dict | None = None, training: bool = False,
            updates: bool = False, to_host: bool = True) -> Any:
        """Compute ``fetches`` (a name, or a list of names) given ``feeds`` (name -> value).

        Only what the fetches need runs.  Any value may be fed, not only inputs; a fed
        value replaces whatever computed it; an input declared with a default value
        (``input rate: f32[] = 0.5``) gets it unless fed.  Fetching an ``assign`` stores
        its value into the variable when the run ends.  ``training`` picks the train program (batch
        statistics, dropout on).  State updates (batchnorm's moving averages, an optimizer's
        steps) run only when asked: ``updates=True``, or the name ``"update_ops"`` among the
        fetches, whose result is None (as in the seed's ``sess.run([y, update_ops])``).
        Gradient names of the training graph (``grad/fc1/W``) may be fetched too.
        ``to_host=False`` returns the backend's arrays as they are (on a GPU: no copy to
        the host, no synchronisation), for loops that read results only now and then.
        """
        single = isinstance(fetches, (str, int, np.integer))
        names = [fetches] if single else list(fetches)
        wanted = [n for n in names if not _is_update_ops(n)]
        updates = updates or len(wanted) < len(names)
        feeds = {**self.model.defaults(), **(feeds or {})}
        key = (tuple(names), tuple(feeds), training, updates)
        try:
            plan = self._plans.get(key)
        except TypeError:               # a list in the list of fetches, say
            bad = next(n for n in names if not _hashable(n))
            raise UsageError(f"a fetch is a value's name, got {bad!r}") from None
        if plan is None:
            plan = self._plans[key] = self._plan(wanted, feeds, training, updates)
        values = self._feed_values(plan, feeds)
        results = iter(self.executor.run(plan.compiled.program, values, self.state))
        convert = self.backend.to_numpy if to_host else (lambda value: value)
        out = [None if _is_update_ops(n) else convert(next(results)) for n in names]
        return out[0] if single else out

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        """Write every state array, the network's hash and ``metadata`` to ``path``,
        atomically (a kill leaves the previous file whole)."""
        meta = {"seed": self.seed, "metadata": dict(metadata or {})}
        return checkpoint.save(path, self.state.to_numpy(), self.model.graph, meta)

    def restore(self, path: str | Path) -> dict:
        """Load a checkpoint written by ``save``; returns its metadata.  A checkpoint of
        another network is refused, naming the variables that are missing, extra or of
        another shape; nothing is loaded then."""
        arrays, meta = checkpoint.read(path)
        checkpoint.check_compatible(path, self.model.graph, meta)
        checkpoint.check_complete(path, self.model.graph, arrays)
        self.state.load(arrays)
        return dict(meta.get("metadata", {}))

    # -- names and feeds -------------------------------------------------------------------
    def _plan(self, wanted: list, feeds: dict, training: bool, updates: bool) -> RunPlan:
        """The program for these fetches (no ``update_ops``) and feed names, resolved."""
        base = self._graph_for([*wanted, *feeds])
        ids = tuple(self._value_id(base, n) for n in wanted)
        fed = [(k, self._value_id(base, k)) for k in feeds]
        compiled = self.model.program(ids, frozenset(nid for _, nid in fed), training,
                                      updates, base, self.backend.name)
        return RunPlan(base, compiled, [(k, nid, compiled.mapping.get(nid),
                                         np.dtype(base.nodes[nid].type.dtype.numpy))
                                        for k, nid in fed])

    def _feed_values(self, plan: RunPlan, feeds: dict) -> dict[int, Any]:
        """The program's fed values (program id -> array on the backend), each checked
        against its declared type and converted to its dtype (``_feed_value``); feeds of
        the shapes and dtypes of feeds that passed before are only converted."""
        seen = tuple((v.shape, v.dtype) if isinstance(v, (np.ndarray, np.generic)) else None
                     for v in feeds.values())
        if None not in seen and seen in plan.checked:
            asarray, values = self.backend.asarray, {}
            for k, _, mapped, dtype in plan.fed:
                if mapped is not None:
                    value = feeds[k]
                    values[mapped] = asarray(value if value.dtype == dtype
                                             else value.astype(dtype))
            return values
        dims: dict[str, tuple[int, str]] = {}
        values = {mapped: self._feed_value(plan.base, nid, feeds[k], dims)
                  for k, nid, mapped, _ in plan.fed if mapped is not None}
        if None not in seen and len(plan.checked) < RunPlan.REMEMBERED:
            plan.checked.add(seen)
        return values

    def _graph_for(self, names: list) -> Graph:
        """The model's graph, or its training graph when a ``grad/`` name only exists there."""
        graph = self.model.graph
        for name in names:
            if (isinstance(name, str) and name.startswith(GRAD_PREFIX)
                    and (id(graph), name) not in self._ids and not _knows(graph, name)):
                return self.model.training_graph()
        return graph

    def _value_id(self, graph: Graph, name) -> int:
        key = (id(graph), name)
        nid = self._ids.get(key)
        if nid is None:
            try:
                nid = graph.resolve(name)
            except KeyError:
                raise UsageError(f"no value named '{name}'",
                                 hint=did_you_mean(str(name), graph.known_names())) from None
            self._ids[key] = nid
        return nid

    def _feed_value(self, graph: Graph, nid: int, value, dims: dict[str, tuple[int, str]]):
        """The fed array, checked against its declared type; ``dims`` (symbol -> (size, feed
        that fixed it)) keeps a symbolic dimension such as N the same across all feeds."""
        node = graph.nodes[nid]
        declared = node.type
        label = node.name or graph.name_of(nid) or f"%{nid}"
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf" and not is_float_dtype(arr.dtype):
            raise FeedError(f"feed '{label}' is not numeric ({arr.dtype})")
        if declared.dtype.is_float or declared.dtype is DType.bool or arr.dtype.kind in "biu":
            arr = arr.astype(declared.dtype.numpy, copy=False)
        elif is_float_dtype(arr.dtype):
            raise FeedError(f"feed '{label}' has float values but the spec declares "
                            f"{declared}", hint="feed integers (class labels) here")
        bound: dict[str, int] = {}
        if not bind_dims(declared.shape, arr.shape, bound):
            raise FeedError(f"feed '{label}' has shape {list(arr.shape)} but the spec "
                            f"declares {declared}")
        for symbol, size in bound.items():
            first, other = dims.setdefault(symbol, (size, label))
            if first != size:
                raise FeedError(
                    f"feed '{label}' has shape {list(arr.shape)}, so {symbol} = {size} in "
                    f"{declared}, but feed '{other}' gave {symbol} = {first}",
                    hint=f"feed the same {symbol} to every input declared with it")
        return self.backend.asarray(arr)


@dataclass
class RunPlan:
    """What ``Session.run`` resolves once per fetches, feed names and flags: the graph the
    names are in, the compiled program, and per feed (in order) its name, its id there,
    its id in the program (None: the program does not read it) and its declared dtype.
    ``checked``: the ``(shape, dtype)`` of every feed, for runs whose feeds passed the
    checks (a spiral step took 14 us in Session.run around the executor's 83 before)."""

    REMEMBERED = 64             # sets of feed shapes kept per plan

    base: Graph
    compiled: Compiled
    fed: list[tuple[Any, int, int | None, np.dtype]]
    checked: set = field(default_factory=set)


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _is_update_ops(name) -> bool:
    return isinstance(name, str) and name == UPDATE_OPS


def _knows(graph: Graph, name) -> bool:
    try:
        graph.resolve(name)
    except KeyError:
        return False
    return True
