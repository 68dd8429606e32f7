"""gather and the embedding layer, top_k, tile and expand, as a user writes them (the ops'
own property cases are in tests/ops/cases_index.py)."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.errors import ExecutionError
from netlang.gradcheck import gradcheck

SPEC = """
network bag {
  input ids: i32[N, 6]
  input label: i32[N]
  e = embedding(ids, 20, 8)
  logits = e |> mean(axis=1) |> dense(3)
  loss xent = mean(softmax_cross_entropy(logits, label))
  output probs = softmax(logits)
  output best = top_k(probs, k=2)
  output where = top_k_indices(probs, k=2)
  output wide = tile(probs, reps=(1, 2))
  output big = expand(reshape(best, shape=(-1, 2, 1)), shape=(1, 2, 3))
}
"""


def test_an_embedding_is_a_gather_of_its_table_and_trains():
    model = netlang.compile(SPEC)
    assert str(model.graph.nodes[model.graph.params["embedding1/W"]].type) == "f32[20,8]"
    for check in gradcheck(model):
        assert check.worst_rel_error < 1e-6, check
    session = model.session(seed=2)
    ids = np.array([[1, 2, 2, -1, 0, 19]], np.int32)
    table = session.state.to_numpy()["embedding1/W"]
    grads = session.run(["e", "grad/embedding1/W"], {"ids": ids, "label": [1]},
                        training=True)
    np.testing.assert_array_equal(grads[0][0], table[[1, 2, 2, 19, 0, 19]])
    touched = np.flatnonzero(np.abs(grads[1]).sum(axis=1))
    assert touched.tolist() == [0, 1, 2, 19]      # a repeated id gets the sum of its rows


def test_an_id_outside_the_table_names_the_layer():
    session = netlang.compile(SPEC).session()
    with pytest.raises(ExecutionError) as err:
        session.run("probs", {"ids": np.array([[1, 2, 3, 4, 5, 40]], np.int32)})
    assert "index 40 is out of bounds for axis 0 with size 20" in err.value.message
    assert err.value.span.line == 5


def test_top_k_tile_and_expand_values():
    session = netlang.compile(SPEC).session(seed=1)
    ids = np.arange(12, dtype=np.int32).reshape(2, 6)
    probs, best, where, wide, big = session.run(["probs", "best", "where", "wide", "big"],
                                                {"ids": ids})
    order = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    np.testing.assert_array_equal(where, order)
    np.testing.assert_array_equal(best, np.take_along_axis(probs, order, axis=1))
    np.testing.assert_array_equal(wide, np.tile(probs, (1, 2)))
    np.testing.assert_array_equal(big, np.broadcast_to(best[:, :, None], (2, 2, 3)))


def test_top_k_takes_the_first_of_ties():
    spec = "network t {\n  input x: f32[4]\n  output i = top_k_indices(x, k=3)\n}\n"
    got = netlang.compile(spec).session().run("i", {"x": [1.0, 3.0, 3.0, 1.0]})
    assert got.tolist() == [1, 2, 0]
