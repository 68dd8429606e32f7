"""Which data go to which network input, in which shape.

A data set has features and (usually) labels; a network declares its inputs in order.  The
first input takes the features, reshaped to the declared shape (MNIST's 28x28 images feed
``f32[N,28,28,1]`` or ``f32[N,784]`` alike); the second takes the labels: integer class ids feed an ``[N]`` input
as they are, or a float ``[N, classes]`` input as one-hot rows (seed 000's placeholders);
float targets (regression) are fed as values, reshaped to the input, never one-hot encoded.
A network with one input (SRCNN: the image is its own target) gets the features alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from netlang.errors import DataError
from netlang.ir.graph import Graph
from netlang.ir.types import TensorType
from netlang.train.data import Split

INTERNAL_PREFIX = "train/"


@dataclass(frozen=True)
class Feeder:
    x_name: str
    x_shape: tuple[int, ...] | None      # the declared dims after the batch, when static
    y_name: str | None = None
    y_classes: int | None = None         # one-hot width for a float label input
    y_shape: tuple[int, ...] | None = None   # target dims after the batch (float targets)
    y_dtype: str | None = None           # the target input's NumPy dtype (float targets)

    def prepare_x(self, x: np.ndarray) -> np.ndarray:
        if self.x_shape is None:
            return x
        return x.reshape((len(x), *self.x_shape))

    def prepare_y(self, y: np.ndarray) -> np.ndarray:
        if self.y_shape is not None:
            return np.asarray(y, self.y_dtype).reshape((len(y), *self.y_shape))
        if self.y_classes is None:
            return y
        out = np.zeros((len(y), self.y_classes), np.float32)
        out[np.arange(len(y)), y.astype(np.int64)] = 1.0
        return out

    def feeds(self, split: Split, index) -> dict[str, np.ndarray]:
        """The feed dict for the examples ``index`` (a slice or an index array)."""
        out = {self.x_name: self.prepare_x(split.x[index])}
        if self.y_name is not None:
            out[self.y_name] = self.prepare_y(split.y[index])
        return out


def user_inputs(graph: Graph) -> list[str]:
    """The inputs data feed: not the trainer's own (``train/lr``), and not those with a
    default value (a dropout rate: ``input rate: f32[] = 0.5``)."""
    return [name for name, nid in graph.inputs.items() if not name.startswith(INTERNAL_PREFIX)
            and "default" not in graph.nodes[nid].attrs]


def static_tail(t: TensorType) -> tuple[int, ...] | None:
    tail = t.shape[1:]
    return tail if all(isinstance(d, int) for d in tail) else None


def check_features(name: str, t: TensorType, example: np.ndarray, dataset: str) -> None:
    tail = static_tail(t)
    if tail is not None and math.prod(tail) != math.prod(example.shape[1:]):
        have = "x".join(str(d) for d in example.shape[1:])
        raise DataError(f"{dataset} examples are {have} ({math.prod(example.shape[1:])} "
                        f"values) but input '{name}' is {t} ({math.prod(tail)} per example)",
                        hint=f"declare '{name}' with {math.prod(example.shape[1:])} values "
                             f"per example")


def features_feeder(graph: Graph, x: np.ndarray, dataset: str) -> Feeder:
    """A feeder for the first input alone (``predict`` feeds examples without labels)."""
    names = user_inputs(graph)
    if not names:
        raise DataError(f"network '{graph.name}' has no input to feed {dataset} into")
    x_type = graph.nodes[graph.inputs[names[0]]].type
    check_features(names[0], x_type, x, dataset)
    return Feeder(names[0], static_tail(x_type))


def make_feeder(graph: Graph, split: Split, dataset: str) -> Feeder:
    """Bind a data set's features and labels to the network's inputs (see module doc)."""
    features = features_feeder(graph, split.x, dataset)
    names = user_inputs(graph)
    if len(names) < 2:
        return features
    y_name = names[1]
    if split.y is None:
        raise DataError(f"input '{y_name}' needs labels, but the {dataset} data have none")
    y_type = graph.nodes[graph.inputs[y_name]].type
    if y_type.rank == 0:
        raise DataError(f"input '{y_name}' is {y_type}; {dataset} labels feed an integer "
                        f"[N] input (class ids) or a float [N, classes] input (one-hot)")
    if y_type.rank == 1:
        return Feeder(features.x_name, features.x_shape, y_name)
    if y_type.rank == 2 and split.y.ndim == 1 and split.y.dtype.kind in "iu" and (
            y_type.dtype.is_float and isinstance(y_type.shape[1], int) and y_type.shape[1] > 1):
        return Feeder(features.x_name, features.x_shape, y_name,
                      one_hot_classes(y_name, y_type, split.y, dataset))
    return Feeder(features.x_name, features.x_shape, y_name,
                  y_shape=target_tail(y_name, y_type, split.y, dataset),
                  y_dtype=y_type.dtype.numpy.name)


def one_hot_classes(y_name: str, y_type: TensorType, y: np.ndarray, dataset: str) -> int:
    """The one-hot width for integer class ids fed to a float ``[N, classes]`` input."""
    classes = y_type.shape[1]
    top = int(y.max()) if len(y) else 0
    low = int(y.min()) if len(y) else 0
    if top >= classes or low < 0:
        bad = top if top >= classes else low
        raise DataError(f"{dataset} has label {bad} but input '{y_name}' is {y_type} "
                        f"({classes} classes)")
    return classes


def target_tail(y_name: str, y_type: TensorType, y: np.ndarray, dataset: str
                ) -> tuple[int, ...]:
    """The per-example shape to feed targets (float values, or already one-hot rows) in."""
    tail = static_tail(y_type)
    have = math.prod(y.shape[1:])
    if tail is None or math.prod(tail) != have:
        hint = ("store class ids as integers to have them one-hot encoded"
                if y.ndim == 1 and y.dtype.kind == "f" else
                f"declare '{y_name}' with {have} value{'s' * (have != 1)} per example")
        raise DataError(f"{dataset} targets are {y.dtype.name} with {have} "
                        f"value{'s' * (have != 1)} per example but input '{y_name}' is "
                        f"{y_type}", hint=hint)
    return tail
