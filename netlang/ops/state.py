"""Source ops (inputs, parameters, state, constants): the executor supplies their values."""
from __future__ import annotations

from netlang.ops.registry import defop


def _no_shape(*_, **__):
    raise AssertionError("source nodes are typed by the builder, not by a shape rule")


for _name in ("input", "param", "state", "const"):
    defop(_name, arity=0, shape=_no_shape, kernel=None, attrs={"init": None, "value": None},
          nondiff="a source value", pure=_name in ("const", "input"))

defop("grad", arity=2, shape=lambda y, x: x, kernel=None,
      nondiff="expanded by the autodiff pass before anything runs",
      doc="grad(y, x): d(sum y)/dx, with x's type.  Replaced by autodiff.")

defop("mode", arity=0, shape=_no_shape, kernel=None, nondiff="the train/eval flag",
      doc="True while training; bound to a constant before a program runs.")
