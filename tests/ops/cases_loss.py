"""Property cases for ops/loss.py: sparse and dense labels, broadcasting for mse."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tests.ops.cases_elementwise import broadcast_pair
from tests.ops.harness import array, op_case, shape


def logits_shape(draw) -> tuple:
    return shape(draw, 0, 2) + (draw(st.integers(1, 5)),)


def class_ids(draw, s: tuple) -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    dtype = draw(st.sampled_from([np.int32, np.int64]))
    return rng.integers(0, s[-1], s[:-1]).astype(dtype)


def probabilities(draw, s: tuple) -> np.ndarray:
    e = np.exp(array(draw, s, -2.0, 2.0))
    return e / e.sum(axis=-1, keepdims=True)


@op_case("softmax_cross_entropy")
def xent_class_ids(draw):
    s = logits_shape(draw)
    return [array(draw, s, -5.0, 5.0), class_ids(draw, s)], {}


@op_case("softmax_cross_entropy")
def xent_probabilities(draw):
    s = logits_shape(draw)
    return [array(draw, s, -5.0, 5.0), probabilities(draw, s)], {}


@op_case("softmax_cross_entropy")
def xent_unnormalized_rows(draw):
    """Rows that do not sum to 1: loss and gradients must still agree exactly."""
    s = logits_shape(draw)
    return [array(draw, s, -5.0, 5.0), array(draw, s, 0.0, 2.0)], {}


@op_case("softmax_cross_entropy_grad")
def xent_grad_class_ids(draw):
    s = logits_shape(draw)
    return [array(draw, s[:-1]), array(draw, s, -3.0, 3.0), class_ids(draw, s)], {}


@op_case("softmax_cross_entropy_grad")
def xent_grad_probabilities(draw):
    s = logits_shape(draw)
    return [array(draw, s[:-1]), array(draw, s, -3.0, 3.0), probabilities(draw, s)], {}


@op_case("softmax_cross_entropy_grad")
def xent_grad_unnormalized_rows(draw):
    s = logits_shape(draw)
    return [array(draw, s[:-1]), array(draw, s, -3.0, 3.0), array(draw, s, 0.0, 2.0)], {}


@op_case("sigmoid_cross_entropy")
def sigmoid_xent_values(draw):
    s = shape(draw)
    return [array(draw, s, -6.0, 6.0), array(draw, s, 0.0, 1.0)], {}


@op_case("mse")
def mse_broadcast(draw):
    sa, sb = broadcast_pair(draw)
    return [array(draw, sa), array(draw, sb)], {}


@op_case("l2_loss")
def l2_loss_values(draw):
    return [array(draw, shape(draw))], {}
