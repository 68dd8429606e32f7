"""Source ops (inputs, parameters, state, constants): the executor supplies their values."""
from __future__ import annotations

from netlang.errors import ShapeError
from netlang.ir.types import DType, TensorType
from netlang.ops.registry import REQUIRED, defop


def _no_shape(*_, **__):
    raise AssertionError("source nodes are typed by the builder, not by a shape rule")


for _name in ("input", "param", "state", "const"):
    defop(_name, arity=0, shape=_no_shape, kernel=None,
          attrs={"init": None, "value": None, "default": None},
          nondiff="a source value", pure=_name in ("const", "input"))

GRAD_OP = "grad"   # grad(y, x): a marker the autodiff pass expands
MODE_OP = "mode"   # the train/eval flag: a marker bind_mode replaces with a constant

defop(GRAD_OP, arity=2, shape=lambda y, x: x, kernel=None,
      nondiff="expanded by the autodiff pass before anything runs", marker=True,
      doc="grad(y, x): d(sum y)/dx, with x's type.  Replaced by autodiff.")

defop(MODE_OP, arity=0, shape=lambda: TensorType(DType.bool, ()), kernel=None, marker=True,
      nondiff="the train/eval flag",
      doc="True while training; bound to a constant before a program runs.")

ASSIGN_OP = "assign"   # assign(x, value): a variable's new value, stored when the run ends


def _assign_shape(var: TensorType, value: TensorType, variable: str) -> TensorType:
    if value != var:
        raise ShapeError(f"assign: the new value of '{variable}' is {value}, but '{variable}' "
                         f"is {var}", hint="an assignment keeps the variable's type; cast or "
                                           "reshape the value")
    return var


def _assign_kernel(xp, var, value, variable):
    return xp.array(value, copy=True)


defop(ASSIGN_OP, arity=2, shape=_assign_shape, kernel=_assign_kernel,
      attrs={"variable": REQUIRED}, pure=False,
      nondiff="assign stores a variable's new value; no gradient flows through a store",
      doc="assign(x, value): value, which becomes the variable x's value when the run that "
          "computed it ends (seed 002's x.assign(x - 1)).  Reads of x in the same run see the "
          "value x had when the run began.")
