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

from dataclasses import replace

from netlang.compiler import GRAD_PREFIX
from netlang.errors import UsageError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType
from netlang.model import Model
from netlang.ops.builder import Builder
from netlang.train.optimizers import Optimizer

LR_INPUT = "train/lr"


def decays(graph: Graph, param: int) -> bool:
    """Weight decay applies to kernels and matrices (rank >= 2), not biases or scales."""
    return graph.nodes[param].type.rank >= 2


def build_train_graph(model: Model, optimizer: Optimizer, weight_decay: float = 0.0) -> Graph:
    """The network's graph plus gradients and the optimizer's updates (see module doc)."""
    if not model.graph.params:
        raise UsageError(f"network '{model.graph.name}' has no parameters to train")
    train = model.training_graph().copy()
    b = Builder(train)
    with b.tagged("optimizer"), b.in_scope(optimizer.name):
        lr = b.input(LR_INPUT, TensorType(DType.f32, ()))
        step_size = optimizer.prepare(b, lr)
        step_sizes = {DType.f32: step_size}   # a half (or f64) parameter steps in its dtype
        for name, param in list(train.params.items()):
            grad = train.outputs[GRAD_PREFIX + name]
            dtype = b.type_of(param).dtype
            if dtype not in step_sizes:
                step_sizes[dtype] = b.cast(step_size, dtype=str(dtype))
            with b.at(train.nodes[param].span):
                if weight_decay and decays(train, param):
                    decay = b.const(weight_decay, dtype)
                    grad = b.add(grad, b.mul(decay, param))
                train.updates[name] = optimizer.step(b, name, param, grad, step_sizes[dtype])
    train.spec = replace(train.spec, optimizer=optimizer.describe())
    return train
