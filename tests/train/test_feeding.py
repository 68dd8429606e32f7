"""Which labels become one-hot rows: integer class ids fed to a float [N, classes] input;
float targets (regression) are fed as values, never one-hot encoded (issue 14, item 6)."""
from __future__ import annotations

import numpy as np
import pytest

from netlang.errors import DataError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType
from netlang.ops.builder import Builder
from netlang.train.data import Split
from netlang.train.feeding import make_feeder
from tests.train.nets import N


def graph_with_target(dtype: DType, tail: tuple[int, ...]) -> Graph:
    b = Builder(Graph(name="g"))
    b.input("x", TensorType(DType.f32, (N, 2)))
    b.input("y", TensorType(dtype, (N, *tail)))
    return b.graph


X = np.zeros((3, 2), np.float32)
IDS = np.array([2, 0, 1])
VALUES = np.array([[0.5], [1.5], [-2.0]], np.float32)

FED = [  # (labels, target input, what is fed)
    (VALUES, (DType.f32, (1,)), VALUES),                               # regression target
    (VALUES[:, 0].astype(np.float64), (DType.f32, (1,)), VALUES),      # [N] floats -> [N,1]
    (IDS, (DType.f32, (3,)), np.eye(3, dtype=np.float32)[IDS]),        # class ids -> one-hot
    (np.eye(3)[IDS], (DType.f32, (3,)), np.eye(3, dtype=np.float32)[IDS]),  # already one-hot
    (IDS, (DType.f32, (1,)), IDS[:, None].astype(np.float32)),         # one column: values
    (IDS, (DType.i32, ()), IDS),                                       # class ids as they are
    (VALUES[:, 0], (DType.f32, ()), VALUES[:, 0]),                     # [N] float target
]


@pytest.mark.parametrize("labels, target, fed", FED)
def test_labels_are_fed_as_values_unless_they_are_class_ids_for_a_wider_float_input(
        labels, target, fed):
    """7 cases (the table above)."""
    feeder = make_feeder(graph_with_target(*target), Split(X, labels), "npz")
    out = feeder.feeds(Split(X, labels), slice(0, 3))["y"]
    np.testing.assert_array_equal(out, fed)
    assert out.dtype == fed.dtype


def test_float_labels_for_a_one_hot_input_are_refused_with_a_hint():
    """2 cases: [N] floats for f32[N,3]; [N,2] floats for f32[N,3]."""
    with pytest.raises(DataError) as info:
        make_feeder(graph_with_target(DType.f32, (3,)), Split(X, IDS.astype(np.float32)), "npz")
    assert str(info.value) == (
        "data error: npz targets are float32 with 1 value per example but input 'y' is "
        "f32[N,3]\nhint: store class ids as integers to have them one-hot encoded")
    with pytest.raises(DataError) as info:
        make_feeder(graph_with_target(DType.f32, (3,)), Split(X, np.zeros((3, 2))), "npz")
    assert str(info.value) == (
        "data error: npz targets are float64 with 2 values per example but input 'y' is "
        "f32[N,3]\nhint: declare 'y' with 2 values per example")


def test_class_ids_outside_the_one_hot_width_are_refused():
    """2 cases: a label too large, a negative label."""
    for bad, shown in ((np.array([0, 3, 1]), 3), (np.array([0, -1, 1]), -1)):
        with pytest.raises(DataError) as info:
            make_feeder(graph_with_target(DType.f32, (3,)), Split(X, bad), "npz")
        assert info.value.message == (f"npz has label {shown} but input 'y' is f32[N,3] "
                                      "(3 classes)")
