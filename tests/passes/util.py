"""Helpers the pass tests share: tiny graphs, running them, and a test-only random op."""
from __future__ import annotations

import contextlib

import numpy as np

from netlang.ir.graph import Graph
from netlang.ir.printer import format_graph
from netlang.ir.types import DType, TensorType
from netlang.ops.builder import Builder
from netlang.ops.registry import OPS, defop
from netlang.ops.rules import same_type
from netlang.runtime.backend import CPU_REFERENCE
from netlang.runtime.executor import Executor
from netlang.runtime.program import plan
from netlang.runtime.state import State

F32 = TensorType(DType.f32, ())
F64 = TensorType(DType.f64, ())


def t(*shape, dtype=DType.f32) -> TensorType:
    return TensorType(dtype, tuple(shape))


def builder(name: str = "test") -> Builder:
    return Builder(Graph(name=name))


def mode_node(b: Builder) -> int:
    """The train/eval flag, as the lowering creates it (typed by hand: it has no rule)."""
    return b._add("mode", (), {}, TensorType(DType.bool, ()))


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph]


def text(graph: Graph) -> str:
    return format_graph(graph, with_span=False)


def run(graph: Graph, fetches: list[int], feeds: dict[int, np.ndarray] | None = None,
        state: State | None = None, seed: int = 0) -> list[np.ndarray]:
    feeds = feeds or {}
    program = plan(graph, fetches, set(feeds), graph.updates if state is not None else None)
    executor = Executor(CPU_REFERENCE, np.random.default_rng(seed))
    return executor.run(program, feeds, state if state is not None else State(CPU_REFERENCE))


def assert_same_training_bits(spec: str, dropped: str, kernels: str, seed: int = 0) -> None:
    """A train step of ``spec`` (its ``x`` [5,6,6,3] and ``label`` fed) gives the loss and
    every parameter's gradient bit for bit with and without the pass named ``dropped``, and
    so does an eval run of ``logits``."""
    import netlang
    from netlang.passes.pipeline import OPTIMIZE, without

    rng = np.random.default_rng(seed)
    feeds = {"x": rng.standard_normal((5, 6, 6, 3)).astype(np.float32),
             "label": np.array([0, 1, 1, 0, 1], np.int32)}
    full = netlang.compile(spec)
    plain = netlang.compile(spec, passes=without(OPTIMIZE, dropped))
    names = ["xent", *(f"grad/{p}" for p in full.graph.params)]
    got = full.session(seed=3, kernels=kernels).run(names, feeds, training=True)
    want = plain.session(seed=3, kernels=kernels).run(names, feeds, training=True)
    for name, a, b in zip(names, got, want):
        np.testing.assert_array_equal(a, b, err_msg=name)
    for a, b in zip(full.session(seed=3, kernels=kernels).run("logits", feeds),
                    plain.session(seed=3, kernels=kernels).run("logits", feeds)):
        np.testing.assert_array_equal(a, b)      # eval mode (moving statistics) too


@contextlib.contextmanager
def noise_op():
    """A random, impure op (like dropout_mask) that exists only inside the ``with``."""
    name = "test_noise"
    defop(name, arity=1, shape=same_type, pure=False, random=True,
          kernel=lambda xp, x, rng: x * rng.uniform(size=x.shape).astype(x.dtype),
          nondiff="test op")
    try:
        yield name
    finally:
        OPS.pop(name, None)
