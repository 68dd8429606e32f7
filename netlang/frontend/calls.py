"""Lowering calls: primitive ops, layer macros, blocks, ``repeat`` and ``grad``.

``f(args)`` is looked up in this order: ``grad`` and ``repeat``, the spec's blocks,
initializers (``glorot_uniform()``), layer macros, then the op registry.  Each call leaves a
``LayerRecord``; layers and blocks build under their own scope (``conv1``, ``residual1``),
named automatically per kind or with ``name=``, and ``share=SCOPE`` reuses the parameters an
earlier layer or block use created (their types must agree).  This class also gives layer
macros what they build with: ``param``, ``state``, ``update``, ``mode``, ``activation``.
"""
from __future__ import annotations

import contextlib

from netlang.errors import (
    ArgumentError,
    NetlangError,
    ShapeError,
    Span,
    SpecError,
    SpecNameError,
    did_you_mean,
)
from netlang.frontend import ast
from netlang.frontend.arguments import (
    Given,
    Param,
    Tensor,
    Word,
    WrongType,
    bind,
    describe,
    positive_int,
    tensor,
)
from netlang.frontend.diagnostics import BROKEN, Cascade
from netlang.frontend.initializers import INITIALIZERS, init_from_call
from netlang.frontend.layers import LAYERS, NAME, SHARE, TRAINABLE, Layer, is_weighted_call
from netlang.frontend.names import Env
from netlang.frontend.scopes import LayerRecord, Namer, ScopeInfo, join
from netlang.ir.types import DType, TensorType
from netlang.ops.registry import OPS, REQUIRED, get_op
from netlang.ops.state import ASSIGN_OP

NOT_CALLABLE = frozenset({"input", "param", "state", "const", "mode"})
MAX_REPEAT = 1000
# Exceptions an op's shape rule may raise on odd attributes (a wrong type, a bad value).
RULE_FAILURES = (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError,
                 OverflowError, AttributeError, AssertionError)


def _anything(value):
    return value


class CallLowering:
    """The part of ``Lowering`` that expands calls; expects ``b``, ``graph``, ``env``."""

    def __init__(self, spec: ast.Spec):
        self.blocks = _collect_blocks(spec)
        self.namers: list[Namer] = [Namer()]
        self.scopes: dict[str, ScopeInfo] = {}
        self.block_stack: list[str] = []
        self.sharing: str | None = None         # the scope being shared, while lowering it
        self.frozen = False                     # inside a trainable=false use
        self.mode_id: int | None = None
        self.current: LayerRecord | None = None

    def callables(self) -> set[str]:
        ops = {name for name in OPS if name not in NOT_CALLABLE}
        return ops | set(LAYERS) | set(self.blocks) | set(INITIALIZERS) | {"grad", "repeat"}

    # -- dispatch -------------------------------------------------------------------------
    def call(self, expr: ast.Call):
        args = [self._argument(a) for a in expr.args]
        return self.apply(expr.func, args, expr.span, expr.func_span)

    def _argument(self, arg: ast.Arg) -> Given:
        """An evaluated argument; a bare name also keeps the word as written, since an
        enum value (``padding=same``) is not looked up among the spec's values."""
        if not isinstance(arg.value, ast.Name):
            return Given(self.eval(arg.value), arg.span, arg.name)
        word = Word(arg.value.id)
        value = self.env.lookup(word.name)   # a later definition is reported where used
        if value is BROKEN:
            raise Cascade
        return Given(word if value is None else value, arg.span, arg.name, word)

    def apply(self, func: str, args: list[Given], span: Span, func_span: Span):
        if func == "grad":
            return self._grad(args, span)
        if func == "repeat":
            return self._repeat(args, span)
        if func == ASSIGN_OP:
            return self._assign_call(args, span)
        if func in self.blocks:
            return self._block(self.blocks[func], args, span)
        if func in INITIALIZERS:
            return init_from_call(func, args, span)
        if func in LAYERS:
            return self._layer(LAYERS[func], args, span)
        if func in OPS and func not in NOT_CALLABLE:
            return self._primitive_call(func, args, span)
        raise SpecNameError(f"unknown op '{func}'", func_span,
                      hint=did_you_mean(func, self.callables()))

    # -- records and names ----------------------------------------------------------------
    @contextlib.contextmanager
    def recording(self, name: str | None, kind: str, span: Span | None,
                  shares: str | None = None):
        """Record the nodes built inside as one layer (auto-named ``kind1``, ...)."""
        if name is None:
            name = join(self.b.scope_name, self.namers[-1].next(kind))
        record = LayerRecord(name, kind, span, self.graph.next_id, shares=shares)
        outer, self.current = self.current, record
        try:
            with self.b.at(span):
                yield record
        except NetlangError as err:  # a macro's own check: point at the call
            raise err.with_span(span)
        finally:
            self.current = outer
        record.end_node = self.graph.next_id
        self.layers.append(record)

    def _scope_path(self, kind: str, prefix: str, name: str | None, share: str | None,
                    span: Span) -> str:
        """The scope a layer or block use builds under (new, named, or shared)."""
        if share is not None:
            return self._shared_scope(kind, share, span)
        if name is not None:
            path = join(self.b.scope_name, name)
            if path in self.scopes and self.sharing is None:
                first = self.scopes[path].span
                raise SpecNameError(f"a layer named '{name}' already exists (line {first.line})",
                              span, hint=f"use share={name} to reuse its parameters, or "
                                         "pick another name")
            self.namers[-1].claim(name)
        else:
            path = join(self.b.scope_name, self.namers[-1].next(prefix))
        if self.sharing is None:
            self.scopes[path] = ScopeInfo(path, kind, span)
        return path

    def _shared_scope(self, kind: str, share: str, span: Span) -> str:
        for path in (join(self.b.scope_name, share), share):
            info = self.scopes.get(path)
            if info is None:
                continue
            if info.kind != kind:
                raise ArgumentError(f"share={share}: '{path}' is {info.kind}, not {kind}",
                                    span)
            return path
        raise SpecNameError(f"share={share}: no earlier layer or block is named '{share}'", span,
                      hint=did_you_mean(share, self.scopes) or
                      "share names the scope of an earlier layer: conv1, dense2, or its name=")

    # -- what layer macros build with -----------------------------------------------------
    def param(self, local: str, type_: TensorType, init: tuple) -> int:
        """A trainable parameter ``scope/local`` (or the shared one of that name); inside a
        layer or block used with ``trainable=false``, a variable the optimizer leaves alone."""
        if self.sharing is not None:
            path = join(self.b.scope_name, local)
            frozen = path not in self.graph.params and path in self.graph.state
            return self._shared_variable(local, type_,
                                         self.graph.state if frozen else self.graph.params)
        if self.frozen:
            return self.state(local, type_, init)
        path = join(self.b.scope_name, local)
        if path in self.graph.params:
            raise SpecNameError(f"parameter '{path}' is defined twice", self.b.span)
        nid = self.b.param(local, type_, init=init)
        if self.current is not None:
            self.current.params.append(path)
        return nid

    def state(self, local: str, type_: TensorType, init: tuple) -> int:
        """A non-trainable variable (batchnorm's moving statistics)."""
        if self.sharing is not None:
            return self._shared_variable(local, type_, self.graph.state)
        nid = self.b.state(local, type_, init=init)
        if self.current is not None:
            self.current.params.append(join(self.b.scope_name, local))
        return nid

    def _shared_variable(self, local: str, type_: TensorType, table: dict) -> int:
        path = join(self.b.scope_name, local)
        if path not in table:
            raise SpecNameError(f"share={self.sharing}: '{self.sharing}' has no parameter "
                          f"'{path}' to share", self.b.span,
                          hint="a shared layer or block must be used the same way")
        have = self.graph.nodes[table[path]].type
        if have != type_:
            raise ShapeError(f"share={self.sharing}: '{path}' is {have} but this use needs "
                             f"{type_}", self.b.span,
                             hint="shared parameters need inputs of the same shape")
        return table[path]

    def update(self, state_id: int, new_id: int) -> None:
        name = self.graph.nodes[state_id].name
        if self.sharing is None or name not in self.graph.updates:
            self.b.update(state_id, new_id)

    def mode(self) -> int:
        """The one train/eval flag of the graph (bound to a constant per program)."""
        if self.mode_id is None:
            self.mode_id = self.graph.add("mode", (), {}, TensorType(DType.bool, ()),
                                          span=self.b.span)
        return self.mode_id

    def activation(self, name: str | None, x: int) -> int:
        if name is None or name.lower() == "none":
            return x
        if name not in OPS or name in NOT_CALLABLE or OPS[name].arity != 1:
            unary = [n for n, op in OPS.items() if op.arity == 1 and n not in NOT_CALLABLE]
            raise ArgumentError(f"unknown activation '{name}'", self.b.span,
                                hint=did_you_mean(name, unary) or "use a one-input op such as "
                                "relu, tanh, sigmoid, elu or leaky_relu")
        return self.apply_primitive(name, (x,), {})

    def apply_primitive(self, op: str, inputs: tuple[int, ...], attrs: dict) -> int:
        """``b.op`` with every failure turned into a spec error at the current span."""
        try:
            if op == "matmul" and any(self.b.type_of(i).rank == 1 for i in inputs):
                return self._vector_matmul(*inputs, **attrs)
            return self.b.op(op, *inputs, **attrs)
        except NetlangError as err:
            raise err.with_span(self.b.span)
        except RULE_FAILURES as err:
            shown = ", ".join(f"{k}={v}" for k, v in attrs.items())
            raise ArgumentError(f"{op} cannot take these arguments ({shown}): {err}",
                                self.b.span) from None

    def _vector_matmul(self, a: int, c: int, transpose_a: bool = False,
                       transpose_b: bool = False) -> int:
        """NumPy's promotion for ``@`` and ``matmul``: a 1-D left operand is a row [1, K], a
        1-D right one a column [K, 1], and the dim each added is dropped from the result (so
        vector @ vector is a scalar).  A transpose flag on a vector changes nothing."""
        b = self.b
        row, col = b.type_of(a).rank == 1, b.type_of(c).rank == 1
        if b.type_of(a).rank == 0 or b.type_of(c).rank == 0:
            return b.op("matmul", a, c)          # the op's own error names both operands
        left = b.reshape(a, shape=(1, -1)) if row else a
        right = b.reshape(c, shape=(-1, 1)) if col else c
        y = b.op("matmul", left, right, transpose_a=transpose_a and not row,
                 transpose_b=transpose_b and not col)
        shape = list(b.type_of(y).shape)
        if col:
            del shape[-1]
        if row:
            del shape[-1 if col else -2]
        unknown = [i for i, d in enumerate(shape) if not isinstance(d, int)]
        if len(unknown) > 1:
            raise ShapeError(f"matmul of a vector with {b.type_of(a if col else c)}: the "
                             "result has more than one symbolic dim", b.span,
                             hint="reshape the vector to a matrix yourself")
        return b.reshape(y, shape=tuple(-1 if i in unknown else d
                                        for i, d in enumerate(shape)))

    # -- primitive ops --------------------------------------------------------------------
    def _primitive_call(self, op: str, args: list[Given], span: Span) -> Tensor:
        """``softmax(x, axis=1)``: tensors by position, then attributes in declared order."""
        opdef = get_op(op)
        positional = [g for g in args if g.name is None]
        count = len(positional) if opdef.arity is None else opdef.arity
        inputs, extra = positional[:count], positional[count:]
        attrs = self._op_attrs(op, opdef.attrs, extra, [g for g in args if g.name], span)
        if len(inputs) < (opdef.arity or 1):
            raise ArgumentError(f"{op} takes {opdef.arity or 'at least 1'} tensor input(s), "
                                f"got {len(inputs)}", span, hint=_op_signature(op))
        with self.recording(None, op, span) as record:
            record.output = self.apply_primitive(op, self._op_inputs(inputs), attrs)
        return Tensor(record.output)

    def _op_inputs(self, inputs: list[Given]) -> tuple[int, ...]:
        tensors = [g.value for g in inputs if isinstance(g.value, Tensor)]
        like = self.b.type_of(tensors[0].id) if tensors else None
        return tuple(self.as_tensor(g.value, g.span, like=like) for g in inputs)

    def _op_attrs(self, op: str, schema: dict, extra: list[Given], keywords: list[Given],
                  span: Span) -> dict:
        names = list(schema)
        if len(extra) > len(names):
            raise ArgumentError(f"too many positional arguments for {op}",
                                extra[len(names)].span, hint=_op_signature(op))
        given = dict(zip(names, extra))
        for kw in keywords:
            if kw.name not in schema:
                raise ArgumentError(f"{op} has no argument '{kw.name}'", kw.span,
                                    hint=did_you_mean(kw.name, names) or _op_signature(op))
            if kw.name in given:
                raise ArgumentError(f"{op} got the argument '{kw.name}' twice", kw.span)
            given[kw.name] = kw
        for name, default in schema.items():
            if default is REQUIRED and name not in given:
                raise ArgumentError(f"{op} needs the argument '{name}'", span,
                                    hint=_op_signature(op))
        return {name: _attr_value(op, name, g) for name, g in given.items()}

    # -- layers ---------------------------------------------------------------------------
    def _layer(self, layer: Layer, args: list[Given], span: Span) -> Tensor:
        weighted = is_weighted_call(layer, args)
        signature = layer.weighted if weighted else layer.signature
        a = bind(layer.name, signature, args, span, self.unknown_name)
        name, share = a.pop("name"), a.pop("share", None)
        trainable = a.pop("trainable", True)
        build = layer.build_weighted if weighted else layer.build
        path = self._scope_path(f"a {layer.name} layer", layer.prefix, name, share, span)
        shared = path if share is not None else None
        with self.freezing(not trainable):
            return self._expand(layer.name, path, shared, lambda: build(self, a), span)

    @contextlib.contextmanager
    def freezing(self, frozen: bool):
        """Inside, parameters are made as variables the optimizer does not train
        (``trainable=false`` on a layer or block use; nested uses stay frozen)."""
        outer, self.frozen = self.frozen, self.frozen or frozen
        try:
            yield
        finally:
            self.frozen = outer

    def _expand(self, kind: str, path: str, shared: str | None, build, span: Span) -> Tensor:
        """Run a macro under scope ``path``, recorded as one layer."""
        outer_sharing, self.sharing = self.sharing, shared or self.sharing
        try:
            with self.b.in_scope(path), self.recording(path, kind, span, shared) as record:
                record.output = build()
        finally:
            self.sharing = outer_sharing
        return Tensor(record.output)

    # -- blocks, repeat, grad -------------------------------------------------------------
    def _block(self, block: ast.Block, args: list[Given], span: Span) -> Tensor:
        params = tuple(Param(name, _anything) for name, _ in block.params)
        for given in args:   # a value defined further down, not an enum word
            if isinstance(given.value, Word) and given.value.name in self.env.later:
                raise self.unknown_name(given.value.name, given.span)
        a = bind(block.name, params + (NAME, SHARE, TRAINABLE), args, span)
        if block.name in self.block_stack:
            raise SpecNameError(f"block '{block.name}' uses itself", span,
                          hint="blocks are inlined, so they cannot be recursive")
        kind = f"a use of block '{block.name}'"
        path = self._scope_path(kind, block.name, a.pop("name"), a["share"], span)
        env = Env(block.body, outer=self.env, owner=f"block '{block.name}'")
        for name, pspan in block.params:
            env.define(name, a[name], pspan, "block parameter")
        shared = path if a["share"] is not None else None
        with self.freezing(not a["trainable"]):
            return self._inline(block, env, path, shared, span)

    def _inline(self, block: ast.Block, env, path: str, shared: str | None,
                span: Span) -> Tensor:
        saved = (self.env, self.sharing)
        self.env, self.sharing = env, shared or self.sharing
        self.block_stack.append(block.name)
        self.namers.append(Namer())
        try:
            with self.b.in_scope(path):
                return self._block_body(block)
        except SpecError as err:
            _note_block_use(err, block, path, span)
            raise
        finally:
            self.env, self.sharing = saved
            self.block_stack.pop()
            self.namers.pop()

    def _block_body(self, block: ast.Block) -> Tensor:
        body = list(block.body)
        if body and isinstance(body[-1], ast.Placed) and isinstance(
                body[-1].innermost()[2], ast.Return):
            self.statement(body[-1])        # a return inside 'on': that error, at it
        if not body or not isinstance(body[-1], ast.Return):
            raise SpecError(f"block '{block.name}' must end with 'return EXPR'", block.span)
        for stmt in body[:-1]:
            if isinstance(stmt, ast.Return):
                raise SpecError("'return' must be the last statement of a block", stmt.span)
            self.statement(stmt)
        ret = body[-1]
        return Tensor(self.as_tensor(self.eval(ret.value), ret.value.span))

    def _repeat(self, args: list[Given], span: Span) -> Tensor:
        """``repeat(f, n, x, rest...)`` = f(... f(f(x, rest...), rest...) ...), n times."""
        if len(args) < 3 or any(g.name is not None for g in args[:3]):
            raise ArgumentError("repeat takes a block or layer, a count and its input",
                                span, hint="repeat(residual, 3, h, 16)")
        target, count, rest = args[0], args[1], args[2:]
        target = Given(target.word or target.value, target.span)
        if not isinstance(target.value, Word):
            raise ArgumentError(f"repeat: the first argument must name a block or layer, "
                                f"got {describe(target.value)}", target.span)
        n = _repeat_count(count)
        value = rest[0]
        for _ in range(n):
            out = self.apply(target.value.name, [value, *rest[1:]], span, target.span)
            value = Given(out, span)
        return value.value

    def _assign_call(self, args: list[Given], span: Span) -> Tensor:
        """``assign(x, x - 1)``: the new value of the variable x, stored when a run that
        computes it ends (``runtime/program.plan`` makes it one of the run's updates)."""
        a = bind(ASSIGN_OP, (Param("variable", tensor), Param("value", lambda v: v)), args,
                 span, self.unknown_name)
        node = self.graph.nodes[a["variable"].id]
        if not node.is_variable():
            what = (f"the input '{node.name}'" if node.is_source("input") else "a constant"
                    if node.is_source("const") else f"a computed value ({node.op})")
            raise ArgumentError("assign: the first argument must be a param (a variable), "
                                f"got {what}", args[0].span,
                                hint="declare it with param, e.g. param x: i32[] = 100")
        with self.recording(None, ASSIGN_OP, span) as record:
            value = self.as_tensor(a["value"], args[-1].span, like=node.type)
            record.output = self.apply_primitive(ASSIGN_OP, (node.id, value),
                                                 {"variable": node.name})
        return Tensor(record.output)

    def _grad(self, args: list[Given], span: Span) -> Tensor:
        """``grad(y, x)``: d(sum y)/dx, typed like x (expanded by the autodiff pass)."""
        a = bind("grad", (Param("y", tensor), Param("x", tensor)), args, span,
                 self.unknown_name)
        x_type = self.b.type_of(a["x"].id)
        if not x_type.dtype.is_float:
            raise ArgumentError(f"grad: x must be a float tensor, got {x_type}", span)
        with self.recording(None, "grad", span) as record:
            record.output = self.apply_primitive("grad", (a["y"].id, a["x"].id), {})
        return Tensor(record.output)


def _note_block_use(err: SpecError, block: ast.Block, path: str, span: Span) -> None:
    """An error inside a block (or inside a block it uses) also names this use of it."""
    inside = err.span is not None and (
        block.span.line <= err.span.line <= block.end_line
        and err.span.source.path == block.span.source.path)
    if not (inside or getattr(err, "block_uses", None)):
        return
    err.block_uses = [*getattr(err, "block_uses", []), path]
    note = f"in block '{block.name}', used at {span} as {path}"
    err.hint = f"{err.hint}; {note}" if err.hint else note


def _collect_blocks(spec: ast.Spec) -> dict[str, ast.Block]:
    blocks: dict[str, ast.Block] = {}
    builtin = set(LAYERS) | set(OPS) | set(INITIALIZERS) | {"grad", "repeat"}
    for block in spec.of_kind(ast.Block):
        if block.name in blocks:
            raise SpecNameError(f"block '{block.name}' is already defined (line "
                          f"{blocks[block.name].span.line})", block.span)
        if block.name in builtin:
            raise SpecNameError(f"block '{block.name}' would hide the built-in '{block.name}'",
                          block.span, hint="give the block another name")
        for param, span in block.params:
            if param in ("name", "share", "trainable"):
                raise SpecNameError(f"a block parameter cannot be called '{param}'", span,
                              hint=f"{param}= is how every block use is named, shared or "
                                   "frozen")
        blocks[block.name] = block
    return blocks


def _repeat_count(count: Given) -> int:
    try:
        n = positive_int(count.value)
    except WrongType:
        n = 0
    if not 1 <= n <= MAX_REPEAT:
        raise ArgumentError(f"repeat: the count must be an integer from 1 to {MAX_REPEAT}, "
                            f"got {describe(count.value)}", count.span)
    return n


def _op_signature(op: str) -> str:
    opdef = OPS[op]
    inputs = ", ".join(f"x{i + 1}" for i in range(opdef.arity or 1))
    if opdef.arity is None:
        inputs += ", ..."
    attrs = ", ".join(k if v is REQUIRED else f"{k}={v}" for k, v in opdef.attrs.items())
    return f"{op}({inputs}{', ' + attrs if attrs else ''})"


def _attr_value(op: str, name: str, given: Given):
    """An op attribute from a literal: bare names become strings, lists become tuples."""
    def convert(value):
        if isinstance(value, Word):
            return value.name.upper() if name == "padding" else value.name
        if isinstance(value, tuple):
            return tuple(convert(v) for v in value)
        if isinstance(value, (Tensor,)) or not isinstance(value, (int, float, str, bool)):
            raise ArgumentError(f"{op}: '{name}' must be a constant, got {describe(value)}",
                                given.span)
        return value
    return convert(given.word or given.value)
