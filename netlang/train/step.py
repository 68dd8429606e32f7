"""The train step as one graph: the network, its gradients and the optimizer's updates.

``build_train_graph`` starts from the model's training graph (the network plus
``grad/<param>`` outputs, d(loss)/d(param) emitted as IR by reverse-mode autodiff; a
parameter the loss cannot reach is a ``GradientError`` naming the op that blocks it) and
appends a scalar input ``train/lr``, L2 weight decay and the optimizer's update
expressions.  Every parameter's new value goes into ``graph.updates``, next to batchnorm's
moving statistics, so a single ``session.run(loss, feeds, training=True, updates=True)``
does forward, backward and update.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

from netlang.compiler import GRAD_PREFIX, training_graph
from netlang.errors import UsageError
from netlang.ir.graph import Graph, device_of
from netlang.ir.types import DType, TensorType
from netlang.model import Model
from netlang.ops.builder import Builder
from netlang.passes.autocast import autocast
from netlang.passes.rewrite import rebuild
from netlang.train.optimizers import Optimizer

LR_INPUT = "train/lr"


def decays(graph: Graph, param: int) -> bool:
    """Weight decay applies to kernels and matrices (rank >= 2), not biases or scales."""
    return graph.nodes[param].type.rank >= 2


BUCKET_BYTES = 4 << 20     # gradients reduced together over the ranks: one call per 4 MiB


def reduce_gradients(b: Builder, grads: dict[str, int], compress: str | None) -> dict[str, int]:
    """Each gradient summed over the ranks (the run weights each rank's share), in buckets of
    about ``BUCKET_BYTES``: one reduction of a bucket's gradients flattened and joined, then
    cut back into them.  Buckets take the parameters last to first, the order the backward
    pass finishes their gradients in, and each is an ``allreduce_start`` that the executor
    runs as soon as the bucket's gradients exist and an ``allreduce_wait`` where the
    optimizer needs the sum, so the reduction overlaps the rest of the backward pass."""
    buckets: list[list[str]] = [[]]
    size = 0
    for name, g in reversed(grads.items()):
        t = b.type_of(g)
        if buckets[-1] and size + t.numel() * t.dtype.itemsize > BUCKET_BYTES:
            buckets.append([])
            size = 0
        buckets[-1].append(name)
        size += t.numel() * t.dtype.itemsize
    out = {}
    for names in buckets:
        flat = [b.reshape(grads[n], shape=(-1,)) for n in names]
        joined = flat[0] if len(flat) == 1 else b.concat(*flat, axis=0)
        total = b.allreduce_wait(b.allreduce_start(joined, compress=compress))
        stops = [0]
        for n in names:
            stops.append(stops[-1] + int(b.type_of(grads[n]).numel()))
        for n, start, stop in zip(names, stops, stops[1:]):
            part = total if len(names) == 1 else b.concat_part(
                total, axis=0, start=start, stop=stop, parts=stops[-1])
            out[n] = b.reshape_like(part, grads[n])
    return out


def synchronize_batchnorm(graph: Graph) -> Graph:
    """``graph`` with every batchnorm's batch moments taken over the global batch: the batch
    mean and the variance about it each become the weighted sum over ranks of every rank's
    (``allreduce``; each rank's weight is its share of the batch), so the sum of a rank's
    variances about the GLOBAL mean is the global variance exactly.  The batchnorm layer
    builds them as ``mean(x)`` and ``batch_variance(x, mean)``; autodiff then reduces their
    cotangents the same way (the allreduce's VJP)."""
    means = {n.inputs[1] for n in graph.nodes.values() if n.op == "batch_variance"}

    def visit(b, node, inputs):
        if node.op == "batch_variance" or (node.op == "mean" and node.id in means):
            return b.allreduce(b.op(node.op, *inputs, **node.attrs))
        return None

    new, _ = rebuild(graph, visit)
    return new


def build_train_graph(model: Model, optimizer: Optimizer, weight_decay: float = 0.0,
                      mixed: DType | None = None, ranks: int = 1,
                      compress: str | None = None, sync_batchnorm: bool = False) -> Graph:
    """The network's graph plus gradients and the optimizer's updates (see module doc).

    ``mixed`` (f16 or bf16: the train section's ``precision mixed``) computes the network's
    convolutions and matmuls in that dtype with float32 master weights
    (``passes/autocast.py``); with f16, whose range is small, the loss is scaled
    dynamically (``LossScale``).  With ``ranks`` > 1 the gradients are summed over the
    ranks (``reduce_gradients``; ``compress="f16"`` sends halves) before the updates, and
    ``sync_batchnorm`` normalizes with the global batch's moments (``synchronize_batchnorm``)."""
    if not model.graph.params:
        raise UsageError(f"network '{model.graph.name}' has no parameters to train")
    network = model.graph
    if ranks > 1 and sync_batchnorm:
        network = synchronize_batchnorm(network)
    if mixed is None:
        train = (model.training_graph().copy() if network is model.graph
                 else training_graph(network))
        scaling = None
    else:
        train = autocast(network, mixed)
        scaling = LossScale.add_to(train) if mixed is DType.f16 else None
        train = training_graph(train, scale=scaling and scaling.scale)
    b = Builder(train)
    optimizer_updates = set(train.updates)
    with b.tagged("optimizer"), b.in_scope(optimizer.name):
        lr = b.input(LR_INPUT, TensorType(DType.f32, ()))
        step_size = optimizer.prepare(b, lr)
        step_sizes = {DType.f32: step_size}   # a half (or f64) parameter steps in its dtype
        grads = {name: train.outputs[GRAD_PREFIX + name] for name in train.params}
        if ranks > 1:
            with b.in_scope("allreduce"):
                grads = reduce_gradients(b, grads, compress)
        for name, param in list(train.params.items()):
            grad = grads[name]
            dtype = b.type_of(param).dtype
            if dtype not in step_sizes:
                step_sizes[dtype] = b.cast(step_size, dtype=str(dtype))
            device = device_of(train.nodes[param])     # an 'on' block's parameter: its
            colocated = b.placed(device) if device else contextlib.nullcontext()  # update
            with b.at(train.nodes[param].span), colocated:          # and slots live there too
                if weight_decay and decays(train, param):
                    decay = b.const(weight_decay, dtype)
                    grad = b.add(grad, b.mul(decay, param))
                train.updates[name] = optimizer.step(b, name, param, grad, step_sizes[dtype])
    if scaling is not None:
        with b.tagged("optimizer"):
            scaling.skip_overflowed_steps(b, train, set(train.updates) - optimizer_updates)
    train.spec = replace(train.spec, optimizer=optimizer.describe())
    return train


@dataclass(frozen=True)
class LossScale:
    """Dynamic loss scaling for f16 (the mixed-precision recipe): the backward pass starts
    from ``scale`` (2^16 at first) instead of 1; a step whose gradients hold an infinity or a
    NaN is skipped (no parameter or optimizer slot changes) and halves the scale, and after
    ``GROWTH_EVERY`` clean steps in a row the scale doubles.  Both are state variables
    (``train/loss_scale``, ``train/clean_steps``), saved in checkpoints, so resume is exact."""

    scale: int
    clean: int

    INITIAL = 2.0 ** 16
    GROWTH_EVERY = 2000

    @classmethod
    def add_to(cls, graph: Graph) -> LossScale:
        b = Builder(graph)
        scalar = TensorType(DType.f32, ())
        with b.in_scope("train"), b.tagged("optimizer"):
            scale = b.state("loss_scale", scalar, init=("constant", cls.INITIAL))
            clean = b.state("clean_steps", scalar, init=("zeros",))
        return cls(scale, clean)

    def skip_overflowed_steps(self, b: Builder, train: Graph, names: set[str]) -> None:
        """Make every update in ``names`` (the optimizer's) keep the old value when a
        gradient overflowed, and update the scale and the count of clean steps."""
        grads = [train.outputs[GRAD_PREFIX + p] for p in train.params]
        finite = b.all_finite(*grads)
        for name in sorted(names):
            old = train.params.get(name, train.state.get(name))
            train.updates[name] = b.select(finite, train.updates[name], old)
        one = b.const(1.0, DType.f32)
        steps = b.add(self.clean, one)
        grow = b.equal(steps, b.const(float(self.GROWTH_EVERY), DType.f32))
        grown = b.select(grow, b.mul(self.scale, b.const(2.0, DType.f32)), self.scale)
        b.update(self.scale, b.select(finite, grown, b.mul(self.scale,
                                                             b.const(0.5, DType.f32))))
        zero = b.const(0.0, DType.f32)
        b.update(self.clean, b.select(finite, b.select(grow, zero, steps), zero))
