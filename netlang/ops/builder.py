"""The one way IR gets built: the lowering, layer macros and VJP rules all use ``Builder``.

``b.op("conv2d", x, w, stride=(1, 1), padding="SAME")`` looks the op up, fills its attribute
defaults, runs its shape rule and appends a typed node.  ``b.conv2d(x, w, ...)`` is the same.
Shape errors raised by a rule get the span of the spec text being lowered attached.
"""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from netlang.errors import ShapeError, Span, SpecError
from netlang.ir.graph import DEVICE_TAG, Graph
from netlang.ir.types import DType, TensorType
from netlang.ops.registry import fill_attrs, get_op


class Builder:
    def __init__(self, graph: Graph | None = None):
        self.graph = graph if graph is not None else Graph()
        self.span: Span | None = None
        self._scopes: list[str] = []
        self._tags: frozenset = frozenset()

    # -- context ------------------------------------------------------------------------
    @property
    def scope_name(self) -> str:
        return "/".join(s for s in self._scopes if s)

    @contextlib.contextmanager
    def scope(self, name: str):
        self._scopes.append(name)
        try:
            yield self
        finally:
            self._scopes.pop()

    @contextlib.contextmanager
    def in_scope(self, path: str):
        """Build under exactly ``path`` (gradient nodes keep their forward node's scope)."""
        old, self._scopes = self._scopes, [path]
        try:
            yield self
        finally:
            self._scopes = old

    @contextlib.contextmanager
    def at(self, span: Span | None):
        old, self.span = self.span, (span or self.span)
        try:
            yield self
        finally:
            self.span = old

    @contextlib.contextmanager
    def tagged(self, *tags: str):
        old, self._tags = self._tags, self._tags | frozenset(tags)
        try:
            yield self
        finally:
            self._tags = old

    @contextlib.contextmanager
    def placed(self, device: str):
        """Build on ``device`` (an ``on:`` tag replacing any outer one: the innermost
        ``on DEVICE { ... }`` wins)."""
        old = self._tags
        self._tags = frozenset(t for t in old if not t.startswith(DEVICE_TAG)) | {
            DEVICE_TAG + device}
        try:
            yield self
        finally:
            self._tags = old

    @contextlib.contextmanager
    def like(self, node):
        """Build in ``node``'s scope, at its span, with its tags: the nodes a pass writes in
        place of ``node`` keep where it came from."""
        with self.in_scope(node.scope), self.at(node.span), self.tagged(*node.tags):
            yield self

    def type_of(self, value: int) -> TensorType:
        return self.graph.nodes[value].type

    # -- nodes --------------------------------------------------------------------------
    def op(self, name: str, *inputs: int, **attrs: Any) -> int:
        opdef = get_op(name)
        if opdef.arity is not None and len(inputs) != opdef.arity:
            raise ShapeError(f"{name} takes {opdef.arity} input(s), got {len(inputs)}",
                             self.span)
        types = [self.type_of(i) for i in inputs]
        try:
            attrs = fill_attrs(opdef, attrs)
            out_type = opdef.shape(*types, **attrs)
        except SpecError as err:
            raise err.with_span(self.span)
        return self._add(name, inputs, attrs, out_type)

    def _add(self, op: str, inputs, attrs, out_type: TensorType, name: str | None = None) -> int:
        return self.graph.add(op, inputs, attrs, out_type, scope=self.scope_name, name=name,
                              span=self.span, tags=self._tags)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        get_op(name)  # unknown names fail loudly
        return lambda *inputs, **attrs: self.op(name, *inputs, **attrs)

    # -- sources ------------------------------------------------------------------------
    def const(self, value, dtype: DType | None = None) -> int:
        arr = np.asarray(value)
        if dtype is None:
            dtype = DType.f32 if arr.dtype.kind == "f" else (
                DType.bool if arr.dtype.kind == "b" else DType.i32)
        arr = arr.astype(dtype.numpy)
        arr.setflags(write=False)
        return self._add("const", (), {"value": arr}, TensorType(dtype, arr.shape))

    def input(self, name: str, type: TensorType, default: tuple | None = None) -> int:
        """A placeholder; ``default`` (an init spec such as ``("constant", 0.5)``) is the
        value a run that does not feed it uses."""
        attrs = {} if default is None else {"default": default}
        nid = self._add("input", (), attrs, type, name=name)
        self.graph.inputs[name] = nid
        return nid

    def param(self, name: str, type: TensorType, init: tuple = ("glorot_normal",)) -> int:
        """A trainable variable named ``scope/name`` (``conv1/W``), created by ``init``."""
        full = f"{self.scope_name}/{name}" if self.scope_name else name
        nid = self._add("param", (), {"init": init}, type, name=full)
        self.graph.params[full] = nid
        return nid

    def state(self, name: str, type: TensorType, init: tuple = ("zeros",)) -> int:
        """A non-trainable variable (batchnorm's moving statistics)."""
        full = f"{self.scope_name}/{name}" if self.scope_name else name
        nid = self._add("state", (), {"init": init}, type, name=full)
        self.graph.state[full] = nid
        return nid

    def update(self, state_value: int, new_value: int) -> None:
        """Record that running the update ops sets the state to ``new_value``."""
        name = self.graph.nodes[state_value].name
        self.graph.updates[name] = new_value
