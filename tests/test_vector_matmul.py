"""`@` and matmul with vectors, NumPy's promotion: a 1-D left operand is a row, a 1-D right
one a column, and the dim each added is dropped from the result."""
from __future__ import annotations

import numpy as np

import netlang
from netlang.gradcheck import gradcheck

SPEC = """
network mv {
  input x: f32[N, 4]
  input v: f32[4]
  param W: f32[4, 3] = glorot_uniform()
  param u: f32[3] = glorot_uniform()
  a = x @ v
  c = matmul(v, W)
  d = (W @ u) @ v
  loss l = mean(a) + sum(c) + d
  output a
  output c
  output d
}
"""


def test_vectors_promote_as_numpy_does():
    model = netlang.compile(SPEC)
    types = model.types()
    assert (str(types["a"]), str(types["c"]), str(types["d"])) == ("f32[N]", "f32[3]", "f32[]")
    session = model.session(seed=1)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    v = np.arange(4, dtype=np.float32)
    a, c, d = session.run(["a", "c", "d"], {"x": x, "v": v})
    state = session.state.to_numpy()
    np.testing.assert_allclose(a, x @ v, rtol=1e-6)
    np.testing.assert_allclose(c, v @ state["W"], rtol=1e-6)
    np.testing.assert_allclose(d, (state["W"] @ state["u"]) @ v, rtol=1e-5)


def test_gradients_through_vector_products():
    for check in gradcheck(netlang.compile(SPEC)):
        assert check.worst_rel_error < 1e-6, check
