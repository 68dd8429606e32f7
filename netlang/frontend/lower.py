"""Lowering: the syntax tree of one spec becomes a typed IR ``Graph``.

Statements are lowered in order through one ``Builder``; every node built for an expression
carries that expression's span, so shape errors (raised by the op rules while building) and
every later error point at the spec.  Calls (layers, ops, blocks) are in ``calls``.
The result records the user's names in ``graph.values``, outputs, the loss and metrics in
their tables, and ``graph.spec`` (``ir.graph.SpecInfo``): the layers for ``check``/``summary``,
the validated train section and warnings (an unused input).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from netlang.errors import (
    ArgumentError,
    ShapeError,
    Span,
    SpecError,
    SpecNameError,
    SpecSyntaxError,
    SpecWarning,
    did_you_mean,
)
from netlang.frontend import ast
from netlang.frontend.arguments import Init, Tensor, Word, WrongType, describe
from netlang.frontend.calls import CallLowering
from netlang.frontend.constants import fold_constants, is_number
from netlang.frontend.diagnostics import BROKEN, Cascade, ErrorList, TooManyErrors
from netlang.frontend.initializers import init_spec
from netlang.frontend.names import Env
from netlang.frontend.scopes import LayerRecord, join
from netlang.frontend.train_config import validate_train
from netlang.ir.graph import DEVICES, Graph, SpecInfo
from netlang.ir.types import DType, TensorType, sym, too_large
from netlang.ops.builder import Builder

OPERATOR_OPS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "@": "matmul"}
DTYPE_ALIASES = {"float32": "f32", "float": "f32", "float64": "f64", "double": "f64",
                 "float16": "f16", "half": "f16", "bfloat16": "bf16",
                 "int32": "i32", "int": "i32", "int64": "i64", "long": "i64", "bool_": "bool"}


def lower_spec(spec: ast.Spec) -> Graph:
    """The IR of the spec's one network (blocks inlined, train section validated)."""
    network = _the_network(spec)
    lowering = Lowering(spec, network.name)
    graph = lowering.network(network)
    train = lowering.checked(_the_train_section, spec, network.name)
    if train is not None:
        graph.spec = replace(graph.spec, train=lowering.checked(validate_train, train))
    lowering.errors.raise_if_any()
    return graph


def _the_network(spec: ast.Spec) -> ast.Network:
    networks = spec.of_kind(ast.Network)
    if not networks:
        raise SpecSyntaxError("the spec has no network", Span(spec.source, 1, 1),
                        hint="a spec holds one 'network NAME { ... }'")
    if len(networks) > 1:
        first = networks[0]
        raise SpecSyntaxError(f"a spec holds one network; '{first.name}' is already defined "
                        f"(line {first.span.line})", networks[1].span)
    return networks[0]


def _the_train_section(spec: ast.Spec, network: str) -> ast.Train | None:
    sections = spec.of_kind(ast.Train)
    if len(sections) > 1:
        raise SpecSyntaxError(f"a spec holds one train section; one is already defined "
                        f"(line {sections[0].span.line})", sections[1].span)
    if sections and sections[0].name != network:
        raise SpecNameError(f"train section '{sections[0].name}' names no network",
                      sections[0].span, hint=f"the network is '{network}': train {network} {{")
    return sections[0] if sections else None


class Lowering(CallLowering):
    """Lowers one network; the call machinery (layers, ops, blocks) is in ``CallLowering``."""

    def __init__(self, spec: ast.Spec, name: str):
        self.spec = spec
        self.graph = Graph(name=name)
        self.b = Builder(self.graph)
        self.env = Env()
        self.layers: list[LayerRecord] = []
        self.warnings: list[SpecWarning] = []
        self.roles: dict[str, int] = {}          # output name -> line it was declared
        self.pending: list[ast.RoleDecl] = []    # bare 'output x', resolved at the end
        self.errors = ErrorList()
        super().__init__(spec)

    # -- the network ----------------------------------------------------------------------
    def network(self, net: ast.Network) -> Graph:
        self.env = Env(net.body)
        try:
            for stmt in net.body:
                self._independently(self.statement, stmt)
            for decl in self.pending:
                self._independently(self._resolve_role, decl)
        except TooManyErrors:
            pass
        self._warn_unused_inputs()
        self._warn_unreached_values()
        self.graph.spec = SpecInfo(layers=self.layers, warnings=self.warnings,
                                   source=self.spec.source)
        return self.graph

    def _independently(self, lower, stmt) -> None:
        """Lower one statement; a spec error is collected and its names marked broken, so
        the statements after it are still checked (and their own errors reported)."""
        try:
            first = self.graph.next_id
            lower(stmt)
            self._check_sizes(range(first, self.graph.next_id))
        except Cascade:
            self._mark_broken(stmt)
        except SpecError as err:
            self._mark_broken(stmt)
            self.errors.add(err)

    def _check_sizes(self, ids: range) -> None:
        """Every value a statement built must fit in what NumPy can index."""
        for nid in ids:
            node = self.graph.nodes.get(nid)
            problem = too_large(node.type) if node is not None else None
            if problem:
                raise ShapeError(problem, node.span,
                                 hint="check the sizes: a dim this large is most likely a typo")

    def _mark_broken(self, stmt) -> None:
        name = getattr(stmt, "name", None)
        if isinstance(stmt, ast.RoleDecl) and name is None:
            name = "loss"
        if name is not None and name not in self.env:
            self.env.define(name, BROKEN, getattr(stmt, "name_span", stmt.span))

    def checked(self, check, *args):
        """``check(*args)``, or None with its spec error collected."""
        if self.errors.truncated:
            return None
        try:
            return check(*args)
        except SpecError as err:
            try:
                self.errors.add(err)
            except TooManyErrors:
                pass
            return None

    def statement(self, stmt) -> None:
        if isinstance(stmt, ast.Placed):
            self._placed(stmt)
            return
        handler = {ast.InputDecl: self._input, ast.ParamDecl: self._param_decl,
                   ast.Assign: self._assign, ast.RoleDecl: self._role}.get(type(stmt))
        if handler is None:
            raise SpecSyntaxError("'return' belongs in a block", stmt.span)
        handler(stmt)

    def _placed(self, placed: ast.Placed) -> None:
        """A statement of ``on DEVICE { ... }``: its nodes are built tagged with the device."""
        device, span, stmt = placed.innermost()
        if device not in DEVICES:
            raise SpecError(f"unknown device '{device}'", span,
                            hint="write on cpu { ... } or on gpu { ... }")
        if isinstance(stmt, ast.InputDecl):
            raise SpecError(f"input '{stmt.name}' is fed on the session's device, so it "
                            f"cannot be declared inside 'on {device}'", stmt.span,
                            hint="declare the input before the block; its ops can be inside")
        if isinstance(stmt, ast.Return):
            raise SpecError(f"'return' cannot be inside 'on {device}'", stmt.span,
                            hint="return the value after the block's closing brace")
        with self.b.placed(device):
            self.statement(stmt)

    def _input(self, decl: ast.InputDecl) -> None:
        type_ = self.tensor_type(decl.type, empty=True)
        default = None
        if decl.default is not None:
            if not type_.is_static:
                raise ShapeError(f"an input with a default value needs a fixed shape, got "
                                 f"{type_}", decl.type.span,
                                 hint="use numbers for every dim, or feed it every run")
            default = literal_init(decl.name, self.eval(decl.default), type_,
                                   decl.default.span, what="input")
        self.env.ensure_new(decl.name, decl.name_span)
        with self.recording(decl.name, "input", decl.span) as record:
            record.output = self.b.input(decl.name, type_, default)
        self.env.define(decl.name, Tensor(record.output), decl.name_span, "input")

    def _param_decl(self, decl: ast.ParamDecl) -> None:
        type_ = self.tensor_type(decl.type)
        if not type_.is_static:
            raise ShapeError(f"a parameter needs a fixed shape, got {type_}", decl.type.span,
                             hint="use numbers for every dim of a param")
        value = self.eval(decl.init)
        if isinstance(value, tuple) or (not type_.dtype.is_float and is_number(value)):
            init = literal_init(decl.name, value, type_, decl.init.span)
        else:
            init = self._init(value, decl.init.span)
        self.env.ensure_new(decl.name, decl.name_span)
        path = join(self.b.scope_name, decl.name)
        with self.recording(path, "param", decl.span) as record:
            # an integer or bool param is a variable but not trained (no gradient exists)
            make = self.param if type_.dtype.is_float else self.state
            record.output = make(decl.name, type_, init)
        self.env.define(decl.name, Tensor(record.output), decl.name_span, "parameter")
        self.graph.values[path] = record.output

    def _init(self, value, span: Span) -> tuple:
        try:
            return init_spec(value)
        except WrongType as err:
            raise ArgumentError(f"a parameter's initial value must be {err.expected}, got "
                                f"{describe(value)}", span) from None

    def _assign(self, stmt: ast.Assign) -> None:
        self.env.ensure_new(stmt.name, stmt.name_span)
        nid = self.as_tensor(self.eval(stmt.value), stmt.value.span)
        self.env.define(stmt.name, Tensor(nid), stmt.name_span)
        self.graph.values[join(self.b.scope_name, stmt.name)] = nid

    # -- outputs, loss, metrics -----------------------------------------------------------
    def _role(self, decl: ast.RoleDecl) -> None:
        if decl.value is None:
            if decl.name is None:
                raise SpecSyntaxError("loss needs a value", decl.span,
                                hint="for example: loss = mean(softmax_cross_entropy(logits, "
                                     "label))")
            if decl.name in self.env:
                self._resolve_role(decl)
            else:
                self.pending.append(decl)  # may be defined further down
            return
        name = decl.name or "loss"
        self.env.ensure_new(name, decl.name_span)
        nid = self.as_tensor(self.eval(decl.value), decl.value.span)
        self.env.define(name, Tensor(nid), decl.name_span)
        self.graph.values[name] = nid
        self._set_role(decl, name, nid)

    def _resolve_role(self, decl: ast.RoleDecl) -> None:
        value = self.env.lookup(decl.name)
        if value is BROKEN:
            raise Cascade
        if not isinstance(value, Tensor):
            raise SpecNameError(f"{decl.role} '{decl.name}' is never defined", decl.name_span,
                          hint=did_you_mean(decl.name, self.env.names)
                          or f"define it: {decl.role} {decl.name} = ...")
        self._set_role(decl, decl.name, value.id)

    def _set_role(self, decl: ast.RoleDecl, name: str, nid: int) -> None:
        if name in self.roles:
            raise SpecNameError(f"'{name}' is already declared as an output (line "
                          f"{self.roles[name]})", decl.name_span)
        self.roles[name] = decl.span.line
        if decl.role == "loss":
            self._check_loss(decl, name, nid)
            self.graph.loss = name
        elif decl.role == "metric":
            self.graph.metrics.append(name)
        self.graph.outputs[name] = nid

    def _check_loss(self, decl: ast.RoleDecl, name: str, nid: int) -> None:
        if self.graph.loss is not None:
            line = self.roles[self.graph.loss]
            raise SpecSyntaxError(f"a network has one loss; '{self.graph.loss}' is declared on "
                            f"line {line}", decl.span,
                            hint="add the terms into one loss: loss = a + b")
        t = self.graph.nodes[nid].type
        if t.rank != 0 or not t.dtype.is_float:
            raise ShapeError(f"the loss must be a float scalar, got {t}",
                             decl.value.span if decl.value else decl.span,
                             hint="reduce it, for example with mean(...)")

    def _warn_unused_inputs(self) -> None:
        used = {i for node in self.graph for i in node.inputs}
        used |= set(self.graph.outputs.values())
        for name, nid in self.graph.inputs.items():
            if nid not in used:
                span = self.env.names[name].span if name in self.env.names else None
                self.warnings.append(SpecWarning(
                    f"input '{name}' is never used", span,
                    hint="remove it, or use it in an output, the loss or a metric"))

    def _warn_unreached_values(self) -> None:
        """A value the network computes that no output, loss, metric or update needs."""
        needed, todo = set(), list(self.graph.roots())
        while todo:
            nid = todo.pop()
            if nid not in needed:
                needed.add(nid)
                todo.extend(self.graph.nodes[nid].inputs)
        for name, binding in self.env.names.items():
            value = binding.value
            if binding.what == "name" and isinstance(value, Tensor) and value.id not in needed:
                self.warnings.append(SpecWarning(
                    f"'{name}' is computed but reaches no output, loss or metric",
                    binding.span, hint="remove it, or use it in an output, the loss or a "
                                       "metric"))

    # -- types ----------------------------------------------------------------------------
    def tensor_type(self, texpr: ast.TypeExpr, empty: bool = False) -> TensorType:
        """The declared type; ``empty`` allows a dim of 0 (an input may hold no elements, as
        a NumPy array may; a parameter must hold some)."""
        name = DTYPE_ALIASES.get(texpr.dtype, texpr.dtype)
        try:
            dtype = DType(name)
        except ValueError:
            hint = (f"write {name}" if texpr.dtype in DTYPE_ALIASES else
                    did_you_mean(texpr.dtype, [d.value for d in DType]))
            raise SpecNameError(f"unknown dtype '{texpr.dtype}'", texpr.dtype_span,
                          hint=hint or "use one of f32, f64, i32, i64, bool") from None
        if name != texpr.dtype:
            raise SpecNameError(f"unknown dtype '{texpr.dtype}'", texpr.dtype_span,
                          hint=f"write {name}")
        dims = []
        for dim, span in texpr.dims:
            if isinstance(dim, int) and (dim < 0 or (dim == 0 and not empty)):
                raise ShapeError(f"a dim must be positive, got {dim}", span,
                                 hint="only an input may have a dim of 0" if dim == 0
                                 else None)
            dims.append(dim if isinstance(dim, int) else sym(dim))
        return TensorType(dtype, tuple(dims))

    # -- expressions ----------------------------------------------------------------------
    def eval(self, expr):
        """The value of an expression: a ``Tensor``, a literal, a ``Word`` or an ``Init``."""
        kind = type(expr)
        if kind is ast.Name:
            value = self.env.lookup(expr.id)
            if value is BROKEN:
                raise Cascade
            if value is None and expr.id in self.env.later:
                raise self.unknown_name(expr.id, expr.span)
            return Word(expr.id) if value is None else value
        if kind in (ast.Number, ast.String, ast.Bool):
            return expr.value
        if kind is ast.Sequence:
            return tuple(self.eval(item) for item in expr.items)
        if kind is ast.Neg:
            return self._negate(expr)
        if kind is ast.BinOp:
            return self._binary(expr)
        return self.call(expr)

    def _negate(self, expr: ast.Neg):
        value = self.eval(expr.operand)
        if is_number(value):
            return -value
        x = self.as_tensor(value, expr.operand.span)
        with self.recording(None, "neg", expr.span) as record:
            record.output = self.b.neg(x)
        return Tensor(record.output)

    def _binary(self, expr: ast.BinOp):
        left, right = self.eval(expr.left), self.eval(expr.right)
        if is_number(left) and is_number(right):
            return fold_constants(expr.op, left, right, expr.span)
        if expr.op == "**":
            return self._power(left, right, expr)
        op = OPERATOR_OPS[expr.op]
        a, c = self._operands(left, right, expr)
        with self.recording(None, op, expr.span) as record:
            record.output = self.apply_primitive(op, (a, c), {})
        return Tensor(record.output)

    def _operands(self, left, right, expr: ast.BinOp) -> tuple[int, int]:
        """Both operands as tensors; a literal takes the other operand's dtype."""
        a = self.as_tensor(left, expr.left.span) if not is_number(left) else None
        c = self.as_tensor(right, expr.right.span) if not is_number(right) else None
        with self.b.at(expr.span):
            if a is None:
                a = self.as_tensor(left, expr.left.span, like=self.b.type_of(c))
            if c is None:
                c = self.as_tensor(right, expr.right.span, like=self.b.type_of(a))
        return a, c

    def _power(self, base, exponent, expr: ast.BinOp):
        if not is_number(exponent):
            raise ArgumentError("the exponent of ** must be a constant number",
                                expr.right.span, hint="use exp(y * log(x)) for a tensor power")
        x = self.as_tensor(base, expr.left.span)
        with self.recording(None, "pow", expr.span) as record:
            if exponent == 2:
                record.output = self.apply_primitive("square", (x,), {})
            else:
                record.output = self.apply_primitive("pow", (x,),
                                                     {"exponent": float(exponent)})
        return Tensor(record.output)

    def as_tensor(self, value, span: Span, like: TensorType | None = None) -> int:
        """The IR value for ``value``: tensors as they are, literals as ``const`` nodes."""
        if isinstance(value, Tensor):
            return value.id
        if isinstance(value, Word):
            raise self.unknown_name(value.name, span)
        if isinstance(value, Init):
            raise ArgumentError(f"{value} is an initializer, not a tensor", span,
                                hint=f"use it in a param declaration or as init={value}")
        if isinstance(value, str):
            raise ArgumentError(f"{describe(value)} is not a tensor", span)
        array = _literal_array(value, span)
        with self.b.at(span):
            return self.b.const(array, _literal_dtype(array, like))

    def unknown_name(self, name: str, span: Span) -> SpecError:
        return self.env.unknown(name, span, self.callables())


def _literal_array(value, span: Span) -> np.ndarray:
    def check(v):
        if isinstance(v, tuple):
            return [check(i) for i in v]
        if isinstance(v, (bool, int, float)):
            return v
        raise ArgumentError(f"a tensor literal holds numbers, not {describe(v)}", span)
    try:
        array = np.asarray(check(value))
    except (ValueError, OverflowError):
        raise ArgumentError("a tensor literal must be a regular grid of numbers", span) from None
    if array.dtype.kind not in "bif":
        raise ArgumentError("a tensor literal must be a regular grid of numbers", span)
    return array


def _literal_dtype(array: np.ndarray, like: TensorType | None) -> DType:
    """Literals follow the tensor they meet: ``x * 2`` keeps x's dtype."""
    if array.dtype.kind == "b":
        return DType.bool
    if like is not None and (like.dtype.is_float or array.dtype.kind == "i"):
        return like.dtype if like.dtype is not DType.bool else DType.f32
    return DType.f32 if array.dtype.kind == "f" else DType.i32


def literal_init(name: str, value, type_: TensorType, span: Span, what: str = "param") -> tuple:
    """``param I: f32[2,2] = [[1,0],[0,1]]`` (or ``param x: i32[] = 100``): the init
    ``("value", rows)`` holding the literal, checked against the declared type."""
    def shape_of(v) -> tuple:
        if isinstance(v, tuple):
            inner = {shape_of(item) for item in v}
            if len(inner) > 1:
                raise ShapeError(f"the value of '{name}' has rows of different lengths", span,
                                 hint="every row of a literal has as many numbers")
            return (len(v), *(inner.pop() if inner else ()))
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ArgumentError(f"the value of '{name}' must be numbers, got {describe(v)}",
                                span, hint=f"e.g. {what} {name}: {type_} = 0")
        if not type_.dtype.is_float and v != int(v):
            raise ArgumentError(f"'{name}' is {type_} but its value holds {v}", span,
                                hint=f"an integer {what} takes whole numbers")
        return ()

    shape = shape_of(value)
    if shape == () and type_.rank:
        return ("constant", float(value))         # one number fills the param, as before
    if shape != tuple(type_.shape):
        got = "[" + ",".join(map(str, shape)) + "]"
        raise ShapeError(f"the value of '{name}' is shaped {got}, but '{name}' is {type_}",
                         span, hint="give one number, or a nested list of the declared shape")
    return ("value", value)
