"""The op table: every primitive declared once, with all its facets side by side.

An ``OpDef`` holds the op's name, its attribute schema (name -> default, ``REQUIRED`` when the
user must give it), its shape/dtype rule, its reference kernel over an array module ``xp``
(NumPy or CuPy), and its VJP rule, which *emits IR* through a ``Builder``.  An op that cannot
have a gradient says why in ``nondiff`` (autodiff quotes it when a parameter is cut off from
the loss).  The flags passes and backends read live here too, so nothing outside ``ops/``
asks an op's name: ``pure`` (CSE may merge it), ``foldable`` (constant folding may run it),
``commutative`` (CSE sorts its operands), ``marker`` (a placeholder a pass replaces before
anything runs: ``grad``, ``mode``), ``elementwise`` with ``expr``, the C expression of one
element that the code generators (CUDA today) compile fused groups from.  A missing rule fails
here, at registration, not at run time.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netlang.errors import ArgumentError, did_you_mean


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


@dataclass(frozen=True)
class OpDef:
    name: str
    arity: int | None                    # number of tensor inputs; None = variadic (>= 1)
    shape: Callable                      # (*input_types, **attrs) -> TensorType
    kernel: Callable | None              # (xp, *arrays, **attrs) -> array
    vjp: Callable | None = None          # (b, node, g) -> tuple[int | None, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    nondiff: str | None = None           # why there is no gradient, when there is none
    pure: bool = True                    # False for random and stateful ops: never merged
    random: bool = False                 # kernel takes an ``rng=`` keyword
    elementwise: bool = False            # same-shape map over its inputs (fusion candidate)
    flops: Callable | None = None        # (out_type, *input_types, **attrs) -> FLOPs per run
    doc: str = ""
    commutative: bool = False            # f(a, b) == f(b, a) bit for bit (CSE sorts operands)
    marker: bool = False                 # replaced by a pass before running (grad, mode)
    expr: str | None = None              # one element in C: {0}, {1} operands, {T} the type,
    #                                      attributes by name ({alpha}); for code generators
    shape_only: tuple[int, ...] = ()     # inputs read for their shape alone: the output is
    #                                      never a view of them (runtime/memory.may_alias)

    @property
    def foldable(self) -> bool:
        """Constant folding may compute it once at compile time with its kernel."""
        return self.pure and not self.random and not self.marker and self.kernel is not None


OPS: dict[str, OpDef] = {}


def defop(name: str, *, arity: int | None, shape: Callable, kernel: Callable | None,
          vjp: Callable | None = None, attrs: dict[str, Any] | None = None,
          nondiff: str | None = None, pure: bool = True, random: bool = False,
          elementwise: bool = False, flops: Callable | None = None, doc: str = "",
          commutative: bool = False, marker: bool = False, expr: str | None = None,
          shape_only: tuple[int, ...] = ()) -> OpDef:
    """Declare an op.  Exactly one of ``vjp`` and ``nondiff`` must be given; ``expr`` only
    for elementwise ops."""
    if name in OPS:
        raise ValueError(f"op {name!r} registered twice")
    if (vjp is None) == (nondiff is None):
        raise ValueError(f"op {name!r} needs exactly one of a VJP rule or a nondiff reason")
    if shape is None:
        raise ValueError(f"op {name!r} has no shape rule")
    if expr is not None and not elementwise:
        raise ValueError(f"op {name!r} has an element expression but is not elementwise")
    op = OpDef(name, arity, shape, kernel, vjp, dict(attrs or {}), nondiff, pure, random,
               elementwise, flops, doc, commutative, marker, expr, tuple(shape_only))
    OPS[name] = op
    return op


def get_op(name: str) -> OpDef:
    if name not in OPS:
        raise ArgumentError(f"unknown op '{name}'", hint=did_you_mean(name, OPS))
    return OPS[name]


def fill_attrs(op: OpDef, given: dict[str, Any]) -> dict[str, Any]:
    """The op's attributes with defaults filled in; unknown or missing ones are errors."""
    for key in given:
        if key not in op.attrs:
            hint = did_you_mean(key, op.attrs)
            known = ", ".join(op.attrs) or "none"
            raise ArgumentError(f"{op.name} has no argument '{key}'",
                                hint=hint or f"{op.name} takes: {known}")
    out = {}
    for key, default in op.attrs.items():
        value = given.get(key, default)
        if value is REQUIRED:
            raise ArgumentError(f"{op.name} needs the argument '{key}'")
        out[key] = value
    return out


def all_ops() -> dict[str, OpDef]:
    """Every registered op (importing the families registers them)."""
    import netlang.ops  # noqa: F401  (registers the families)

    return dict(OPS)
