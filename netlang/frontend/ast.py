"""The syntax tree of a .net spec: plain dataclasses, each carrying the ``Span`` it came from.

The parser builds these; the lowering reads them.  Pipelines are already desugared here:
``a |> f(k=1)`` is the call ``f(a, k=1)`` whose span is the stage ``f(k=1)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from netlang.errors import SourceFile, Span

# -- expressions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Name:
    """A bare identifier: a value, or an enum-like word (``padding=same``, ``dtype=f32``)."""

    id: str
    span: Span


@dataclass(frozen=True)
class Number:
    value: int | float
    span: Span


@dataclass(frozen=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True)
class Sequence:
    """A tuple ``(1, 2)`` or a list ``[1, 2]`` literal (both become tuples)."""

    items: tuple
    span: Span


@dataclass(frozen=True)
class BinOp:
    """``left op right`` with op one of ``+ - * / @ **``."""

    op: str
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class Neg:
    operand: Expr
    span: Span


@dataclass(frozen=True)
class Arg:
    """One call argument: positional when ``name`` is None, else ``name=value``."""

    name: str | None
    value: Expr
    span: Span


@dataclass(frozen=True)
class Call:
    """``func(args)``; ``piped`` is True when the first argument came from ``|>``."""

    func: str
    args: tuple[Arg, ...]
    span: Span
    func_span: Span
    piped: bool = False


Expr = Name | Number | String | Bool | Sequence | BinOp | Neg | Call

# -- statements ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TypeExpr:
    """``f32[N, 28, 28, 1]``: a dtype word and dims (ints or symbol names)."""

    dtype: str
    dims: tuple
    span: Span
    dtype_span: Span


@dataclass(frozen=True)
class InputDecl:
    """``input x: f32[N, 2]``; with ``= VALUE`` (``input rate: f32[] = 0.5``) a run that does
    not feed it uses VALUE (TensorFlow's placeholder_with_default)."""

    name: str
    type: TypeExpr
    span: Span
    name_span: Span
    default: Expr | None = None


@dataclass(frozen=True)
class ParamDecl:
    """``param W: f32[5,5,1,32] = glorot_uniform()``: an explicit trainable variable."""

    name: str
    type: TypeExpr
    init: Expr
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Assign:
    name: str
    value: Expr
    span: Span
    name_span: Span


@dataclass(frozen=True)
class RoleDecl:
    """``output``, ``loss`` or ``metric``, with a name, a value, or both."""

    role: str
    name: str | None
    value: Expr | None
    span: Span
    name_span: Span


@dataclass(frozen=True)
class Return:
    value: Expr
    span: Span


@dataclass(frozen=True)
class Placed:
    """A statement inside ``on DEVICE { ... }``: the ops it builds run on that device
    (TensorFlow's ``with tf.device(...)``).  The parser flattens each block into its
    statements, so names defined inside are defined in the enclosing body; a nested block
    wraps the statement again (the innermost device wins)."""

    device: str
    device_span: Span
    stmt: Statement

    @property
    def name(self) -> str | None:
        return getattr(self.stmt, "name", None)

    @property
    def name_span(self) -> Span | None:
        return getattr(self.stmt, "name_span", None)

    @property
    def value(self):
        return getattr(self.stmt, "value", True)

    @property
    def span(self) -> Span:
        return self.stmt.span

    def innermost(self) -> tuple[str, Span, Statement]:
        """(device, its span, the statement) of the innermost ``on`` around a statement."""
        device, span, stmt = self.device, self.device_span, self.stmt
        while isinstance(stmt, Placed):
            device, span, stmt = stmt.device, stmt.device_span, stmt.stmt
        return device, span, stmt


Statement = InputDecl | ParamDecl | Assign | RoleDecl | Return | Placed

# -- top-level items -----------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    name: str
    body: tuple
    span: Span


@dataclass(frozen=True)
class Block:
    """``block NAME(params) { ...; return expr }``: a sub-network inlined at each use."""

    name: str
    params: tuple[tuple[str, Span], ...]
    body: tuple
    span: Span
    end_line: int


@dataclass(frozen=True)
class TrainEntry:
    """One ``KEY VALUE`` line of a train section (``optimizer adam(lr=1e-4)``)."""

    key: str
    value: Expr
    span: Span
    key_span: Span


@dataclass(frozen=True)
class Train:
    name: str
    entries: tuple[TrainEntry, ...]
    span: Span


@dataclass
class Spec:
    source: SourceFile
    items: list = field(default_factory=list)

    def of_kind(self, kind: type) -> list:
        return [item for item in self.items if isinstance(item, kind)]
