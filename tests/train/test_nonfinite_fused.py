"""A NaN inside a fused group is reported as the op the user wrote, with that op's own
spec line, not as ``fused (%4)`` (issue 14 item 17)."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.errors import NonFiniteError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType, sym
from netlang.model import Model
from netlang.ops.builder import Builder
from netlang.train import nonfinite
from netlang.train.config import Call, TrainConfig
from netlang.train.data import load_dataset
from netlang.train.loop import Trainer

N = sym("N")

SPEC = """network lognet {
  input x: f32[N, 2]
  input y: i32[N]
  param w: f32[2] = ones()

  a = log(x * w)
  b = a + 1
  loss l = mean(exp(b))
}
"""

# log(x * w) + 1, then exp: one fused group [log, add, exp] whose line is exp's (the loss
# line); x * w stays outside (log's gradient reads it).  Half the spiral's x are negative.
FOUND = ("the first non-finite value: log (step 1 of 3 in the fused group %4: f32[N,2]"
         "{at}), in the forward pass: 17 nan of 32 values")


def first_error(model: Model) -> NonFiniteError:
    cfg = TrainConfig(data=Call("spiral", {"points": 40, "validation": 32}),
                      optimizer=Call("sgd", {"lr": 0.5}), batch=16, epochs=1, seed=7)
    t = Trainer(model, cfg, load_dataset(cfg.data.name, cfg.data.args))
    with pytest.raises(NonFiniteError) as err:
        t.run_epoch()
    return err.value


def built_log_net() -> Model:
    b = Builder(Graph(name="lognet"))
    x = b.input("x", TensorType(DType.f32, (N, 2)))
    b.input("y", TensorType(DType.i32, (N,)))
    w = b.param("w", TensorType(DType.f32, (2,)), init=("constant", 1.0))
    b.graph.outputs["loss"] = b.mean(b.exp(b.add(b.log(b.mul(x, w)), b.const(np.float32(1)))))
    b.graph.loss = "loss"
    return Model(b.graph)


def test_a_nan_in_a_fused_group_is_named_as_its_op_at_its_own_line(tmp_path):
    """2 cases: from a spec (the error points at log's line 6, not the group's 8) and from
    the Builder (no spans: the op alone)."""
    path = tmp_path / "lognet.net"
    path.write_text(SPEC)
    err = first_error(netlang.compile(str(path)))
    assert err.message == ("the loss 'l' became nan at step 0 (epoch 1); "
                           + FOUND.format(at=""))
    assert (err.span.line, err.span.col) == (6, 7)
    assert str(err).startswith(f"{path}:6:7: non-finite value: ")
    err = first_error(built_log_net())
    assert err.message == ("the loss 'loss' became nan at step 0 (epoch 1); "
                           + FOUND.format(at=""))
    assert err.span is None


def test_without_the_ops_own_line_the_groups_line_is_named(tmp_path, monkeypatch):
    """When the run without fusion does not meet the same op first, the step is named with
    the group's line (its last op's)."""
    path = tmp_path / "lognet.net"
    path.write_text(SPEC)
    monkeypatch.setattr(nonfinite, "_unfused_session", lambda session: session)
    err = first_error(netlang.compile(str(path)))
    assert err.message == ("the loss 'l' became nan at step 0 (epoch 1); "
                           + FOUND.format(at=", whose last op is at lognet.net:8:17"))
    assert (err.span.line, err.span.col) == (8, 17)


def test_the_first_bad_step_of_a_group_is_found_by_replaying_it():
    """3 cases: the first of two bad steps, a bad step after a good one, none bad."""
    expr = (("log", ("x0",), ()), ("sqrt", ("t0",), ()), ("add", ("t1", "x1"), ()))
    step = nonfinite.first_nonfinite_step(expr, [np.float32([-1.0, 2.0]), np.float32(1)])
    assert step[:2] == (0, "log") and np.isnan(step[2][0])
    step = nonfinite.first_nonfinite_step(expr, [np.float32([0.5, 2.0]), np.float32(1)])
    assert step[:2] == (1, "sqrt")
    assert nonfinite.first_nonfinite_step(expr, [np.float32([2.0]), np.float32(1)]) is None
