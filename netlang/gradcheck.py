"""Checking a whole network's parameter gradients against central finite differences.

The network runs in float64 on a tiny random batch, in training mode with the random
generator reset before every evaluation (so dropout draws the same mask each time).  For each
parameter a few entries are perturbed; the report gives the worst relative error.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netlang.compiler import GRAD_PREFIX, training_graph
from netlang.errors import UsageError
from netlang.ir.types import Sym
from netlang.model import Model, Session
from netlang.passes.precision import to_float64


@dataclass
class ParamCheck:
    name: str
    shape: tuple
    checked: int
    worst_rel_error: float


def random_feeds(model: Model, batch: int, rng: np.random.Generator) -> dict:
    """Random values for every input, symbolic dims bound to ``batch``."""
    feeds = {}
    for name, nid in model.graph.inputs.items():
        t = model.graph.nodes[nid].type
        shape = tuple(batch if isinstance(d, Sym) else d for d in t.shape)
        if t.dtype.is_float:
            feeds[name] = rng.standard_normal(shape)
        elif t.dtype.is_int:
            feeds[name] = rng.integers(0, 2, shape)
        else:
            feeds[name] = rng.integers(0, 2, shape).astype(bool)
    return feeds


def float64_gradient_model(model: Model) -> tuple[Model, dict[str, str]]:
    """The model in float64 with its training graph's ``grad/<param>`` outputs, and the
    parameter -> gradient output names (parameters the loss cannot reach are skipped)."""
    graph, _ = to_float64(model.graph)
    if graph.loss is None:
        raise UsageError("gradcheck needs a spec with a loss")
    graph = training_graph(graph, require_all=False)
    fetch = {name: GRAD_PREFIX + name for name in graph.params
             if GRAD_PREFIX + name in graph.outputs}
    return Model(graph, passes=model.passes), fetch


def gradcheck(model: Model, batch: int = 2, per_param: int = 6, seed: int = 0,
              eps: float = 1e-6) -> list[ParamCheck]:
    checked_model, grad_names = float64_gradient_model(model)
    session = Session(checked_model, "cpu", seed)
    rng = np.random.default_rng(seed)
    feeds = random_feeds(checked_model, batch, rng)
    loss = checked_model.graph.loss

    def evaluate(fetches):
        session.executor.rng = np.random.default_rng(seed + 1)
        return session.run(fetches, feeds, training=True)

    results = []
    for name, grad_name in grad_names.items():
        analytic = evaluate(grad_name)
        value = session.state[name]
        flat = value.reshape(-1)
        picks = rng.choice(flat.size, size=min(per_param, flat.size), replace=False)
        worst = 0.0
        for index in picks:
            original = flat[index]
            flat[index] = original + eps
            up = float(evaluate(loss))
            flat[index] = original - eps
            down = float(evaluate(loss))
            flat[index] = original
            numeric = (up - down) / (2 * eps)
            got = float(analytic.reshape(-1)[index])
            scale = max(abs(numeric), abs(got), 1e-8)
            worst = max(worst, abs(numeric - got) / scale if scale > 1e-6 else abs(numeric - got))
        results.append(ParamCheck(name, tuple(value.shape), len(picks), worst))
    return results
