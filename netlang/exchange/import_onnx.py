"""An ONNX model as a readable ``.net`` spec and the weights for it (``netlang import``).

Node patterns that are layers become layers, with their weights re-laid into the arrays the
layer's parameters take (``conv1/W`` is ``[kh,kw,cin,cout]``): Conv (with its bias) ->
``conv2d``, Gemm or MatMul (+ the Add of a bias) with constant weights -> ``dense``,
BatchNormalization -> ``batchnorm``; everything else maps to netlang's primitives, and a
constant that is not a layer's weight becomes a declared ``param``.  Chains of single-use
values are written with ``|>``.

Layout.  ONNX images are NCHW, netlang's NHWC.  Every ONNX value is held in netlang as
``transpose(value, perm)`` for some ``perm`` (none: the same layout; ``(0,2,3,1)``: channels
last).  Convolutions, pools and batchnorms ask for channels last, flatten and reshape for
ONNX's own order, and a ``transpose`` is written only where what is held differs from what
is asked; ONNX Transpose nodes only change the bookkeeping.  So a PyTorch model gets one
transpose after its NCHW input (and one before its flatten), and a model netlang exported
comes back without any.  Inputs and outputs keep the ONNX model's names, shapes and layout.

A model with nodes that do not map is refused with one error listing every such node.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from netlang.errors import NetlangError, UsageError
from netlang.exchange.graph import OnnxGraph, OnnxNode, unique_name
from netlang.frontend.layers import LAYERS
from netlang.ir.types import DType
from netlang.model import compile as compile_spec
from netlang.ops.conv import axis_geometry
from netlang.ops.image import COORDINATES, nearest_agrees
from netlang.ops.registry import all_ops

CL = (0, 2, 3, 1)                # netlang's NHWC = transpose(ONNX's NCHW, CL)
RESERVED = {"network", "block", "train", "input", "param", "output", "loss", "metric",
            "return", "true", "false"}


class Unmapped(Exception):
    """This node has no netlang form (the message says why)."""


@dataclass
class Held:
    name: str                    # a netlang name or literal
    perm: tuple | None = None    # netlang value = transpose(ONNX value, perm); None: same


@dataclass
class Statement:
    name: str
    call: str | None             # a function applied to args (first one pipeable) ...
    args: list[str] = field(default_factory=list)
    infix: str | None = None     # ... or an infix expression
    output: bool = False


@dataclass
class Imported:
    """What ``import_model`` made: the spec text and the checkpoint arrays (by variable
    name), and the ONNX names of the inputs and outputs."""

    spec: str
    arrays: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]
    names: dict[str, str]          # ONNX input/output name -> the spec's name


def _identity(rank: int) -> tuple:
    return tuple(range(rank))


def _inverse(perm: tuple) -> tuple:
    out = [0] * len(perm)
    for i, p in enumerate(perm):
        out[p] = i
    return tuple(out)


def _dtype_name(dtype) -> str:
    if dtype is None:
        raise Unmapped("a value that is not a tensor of numbers (a sequence, an optional, "
                       "float8)")
    try:
        return DType.of(np.dtype(dtype)).value
    except ValueError:
        raise Unmapped(f"netlang has no {np.dtype(dtype).name} tensors") from None


def _number(value) -> str:
    value = np.asarray(value).reshape(())[()]
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = str(value) if isinstance(value, np.float32) else repr(float(value))
    if text in ("inf", "-inf", "nan"):
        raise Unmapped(f"the constant {text} cannot be written in a spec")
    return text


def _tuple(values) -> str:
    values = [int(v) for v in values]
    return f"({values[0]},)" if len(values) == 1 else "(" + ", ".join(map(str, values)) + ")"


def _pair(values) -> str:
    a, b = (int(v) for v in values)
    return str(a) if a == b else f"({a}, {b})"


class _Importer:
    def __init__(self, og: OnnxGraph):
        self.og = og
        self.consts: dict[str, np.ndarray] = dict(og.initializers)
        self.held: dict[str, Held] = {}
        self.statements: list[Statement] = []
        self.params: list[str] = []            # param declarations
        self.arrays: dict[str, np.ndarray] = {}
        self.counters: Counter = Counter()
        self.taken = set(RESERVED) | set(LAYERS) | set(all_ops())
        self.views: dict[tuple, str] = {}
        self.const_names: dict[tuple, str] = {}
        self.users: dict[str, list[OnnxNode]] = {}
        for node in og.nodes:
            for name in node.inputs:
                if name:
                    self.users.setdefault(name, []).append(node)
        self.skip: set[int] = shape_only(og, self.users)   # and nodes a pattern absorbs
        self.problems: list[tuple[OnnxNode, str]] = []
        self.graph_outputs = {v.name for v in og.outputs}
        self.rename: dict[str, str] = {}       # ONNX input/output name -> netlang name
        self.count = 0

    # -- names ---------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        base = re.sub(r"\W", "_", base).strip("_") or "v"
        if base[0].isdigit():
            base = "v" + base
        return unique_name(base, self.taken)

    def layer_scope(self, prefix: str) -> str:
        """The scope netlang gives the next layer of this kind (``conv1``, ``conv2``, ...)."""
        self.counters[prefix] += 1
        return f"{prefix}{self.counters[prefix]}"

    # -- ONNX facts ------------------------------------------------------------------------------
    def shape(self, name: str) -> tuple:
        if name in self.consts:
            return tuple(self.consts[name].shape)
        v = self.og.types.get(name)
        if v is None:
            raise Unmapped(f"the shape of '{name}' is unknown (ONNX shape inference gave none)")
        return tuple(v.shape)

    def rank(self, name: str) -> int:
        return len(self.shape(name))

    def static(self, name: str, axes) -> list[int]:
        shape = self.shape(name)
        out = []
        for a in axes:
            if not isinstance(shape[a], int) or shape[a] < 0:
                raise Unmapped(f"dim {a} of '{name}' must be known, got {shape}")
            out.append(shape[a])
        return out

    def const(self, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise Unmapped(f"its {what} must be a constant")
        return self.consts[name]

    # -- values ---------------------------------------------------------------------------------
    def perm_of(self, name: str) -> tuple | None:
        held = self.held.get(name)
        return None if held is None else held.perm

    def get(self, name: str, perm: tuple | None = None) -> str:
        """The netlang expression of ONNX value ``name`` as ``transpose(value, perm)``."""
        if name in self.consts:
            array = self.consts[name]
            return self.constant(array if perm is None else array.transpose(perm), name,
                                 perm)
        if name not in self.held:
            raise Unmapped(f"its input '{name}' comes from a node that does not map")
        held = self.held[name]
        rank = self.rank(name) if (perm or held.perm) else 0
        have = held.perm or _identity(rank)
        want = perm or _identity(rank)
        step = tuple(_inverse(have)[w] for w in want)
        if step == _identity(len(step)):
            return held.name
        key = (held.name, step)
        if key not in self.views:
            self.views[key] = self.emit("transpose", [held.name, f"perm={_tuple(step)}"])
        return self.views[key]

    def constant(self, array: np.ndarray, onnx_name: str, perm) -> str:
        if array.size == 1 and array.ndim <= 1:
            return _number(array)
        key = (onnx_name, perm)
        if key not in self.const_names:
            name = self.fresh(onnx_name)
            dims = ", ".join(str(d) for d in array.shape)
            self.params.append(f"param {name}: {_dtype_name(array.dtype)}[{dims}] = zeros()")
            self.arrays[name] = np.ascontiguousarray(array)
            self.const_names[key] = name
        return self.const_names[key]

    def named(self, expression: str) -> str:
        """``expression`` as a name (a statement of its own unless it is one), for a formula
        that reads it several times."""
        return expression if expression.isidentifier() else self.emit(None, [], infix=expression)

    def emit(self, call: str | None, args: list[str], out: str | None = None,
             perm: tuple | None = None, infix: str | None = None) -> str:
        """A statement computing ``call(args)`` (or ``infix``); with ``out``, it is that ONNX
        value, held with ``perm``."""
        if out is not None and out in self.graph_outputs and perm is None:
            name = self.fresh(out)
            self.rename[out] = name
        else:
            self.count += 1
            name = self.fresh(f"h{self.count}")
        self.statements.append(Statement(name, call, list(args), infix))
        if out is not None:
            self.held[out] = Held(name, perm)
        return name

    def alias(self, out: str, source: str) -> None:
        if source in self.consts:
            self.consts[out] = self.consts[source]
        else:
            self.held[out] = self.held[source]

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> Imported:
        inputs = []
        for v in self.og.inputs:
            name = self.fresh(v.name)
            self.rename[v.name] = name
            dims = []
            for i, d in enumerate(v.shape):
                if isinstance(d, int) and d >= 0:
                    dims.append(str(d))
                else:
                    symbol = re.sub(r"\W", "_", str(d))
                    dims.append("N" if i == 0 or not symbol or symbol == "_" else symbol)
            try:
                inputs.append(f"input {name}: {_dtype_name(v.dtype)}[{', '.join(dims)}]")
            except Unmapped as err:
                self.problems.append((OnnxNode("input", [], [v.name], name=v.name), str(err)))
            self.held[v.name] = Held(name)
        for index, node in enumerate(self.og.nodes):
            if index in self.skip:
                continue
            handler = HANDLERS.get(node.op_type)
            try:
                if handler is None:
                    raise Unmapped("netlang has no such op")
                handler(self, node, index)
            except Unmapped as err:
                self.problems.append((node, str(err)))
            except (ArithmeticError, AttributeError, IndexError, KeyError, TypeError,
                    ValueError) as err:                                  # a form not foreseen
                self.problems.append((node, (f"netlang import cannot read this node ("
                                            f"{type(err).__name__}: {err})")))
            if node.outputs and node.outputs[0] not in self.held \
                    and node.outputs[0] not in self.consts:
                for out in node.outputs:
                    self.held.setdefault(out, Held("?"))
        outputs = []
        for v in self.og.outputs:
            try:
                value = self.get(v.name)
            except Unmapped as err:
                self.problems.append((OnnxNode("output", [v.name], [], name=v.name), str(err)))
                continue
            outputs.append(self.output(v.name, value))
        if self.problems:
            raise _refusal(self.og, self.problems)
        body = self.render(outputs)
        name = self.fresh(self.og.name or "imported")
        lines = [f"network {name} {{", *(f"  {line}" for line in inputs)]
        if self.params:
            lines += ["", *(f"  {p}" for p in self.params)]
        lines += ["", *body]
        extra = [f"  {o}" for o in outputs if o]
        lines += ["", *extra] if extra else []
        lines += ["}", ""]
        return Imported("\n".join(lines), self.arrays, [v.name for v in self.og.inputs],
                        [v.name for v in self.og.outputs], dict(self.rename))

    def output(self, onnx_name: str, value: str) -> str:
        """The output line for ONNX output ``onnx_name`` held as ``value``: none when a
        statement computes it under its name, which it gets if the statement's name was
        made up (``h7``)."""
        for stmt in self.statements:
            if stmt.name != value:
                continue
            if self.rename.get(onnx_name) == value:
                stmt.output = True
                return ""
            if re.fullmatch(r"h\d+", value) and not stmt.output:
                name = self.fresh(onnx_name)
                self.rename[onnx_name] = name
                self._rename(value, name)
                stmt.output = True
                return ""
        name = self.fresh(onnx_name)
        self.rename[onnx_name] = name
        return f"output {name} = {value}"

    def _rename(self, old: str, new: str) -> None:
        word = re.compile(rf"\b{re.escape(old)}\b")
        for stmt in self.statements:
            if stmt.name == old:
                stmt.name = new
            stmt.args = [word.sub(new, a) for a in stmt.args]
            if stmt.infix is not None:
                stmt.infix = word.sub(new, stmt.infix)
        for key, held in list(self.held.items()):
            if held.name == old:
                self.held[key] = Held(new, held.perm)

    # -- the spec text ------------------------------------------------------------------------------
    def render(self, outputs: list[str]) -> list[str]:
        """Statements as spec lines: a value used once, by the next statement as its first
        argument, is piped into it (``h = x |> conv2d(...) |> relu``)."""
        uses: Counter = Counter()
        for line in outputs:
            uses.update(re.findall(r"[A-Za-z_]\w*", line.partition("=")[2]))
        for stmt in self.statements:
            for text in ([stmt.infix] if stmt.infix else stmt.args):
                uses.update(re.findall(r"[A-Za-z_]\w*", text))
        lines: list[str] = []
        chain: list[Statement] = []

        def flush() -> None:
            if not chain:
                return
            head, *rest = chain
            last = chain[-1]
            keyword = "output " if last.output else ""
            if head.infix is not None:
                first, stages = head.infix, []
            elif rest:
                first, stages = head.args[0], [_stage(head)]
            else:
                first, stages = f"{head.call}({', '.join(head.args)})", []
            stages += [_stage(s) for s in rest]
            text = " |> ".join([first, *stages])
            if len(stages) <= 2 and len(text) + len(last.name) < 72:
                lines.append(f"  {keyword}{last.name} = {text}")
            else:
                lines.append(f"  {keyword}{last.name} = {first}")
                lines.extend(f"    |> {s}" for s in stages)
            chain.clear()

        for stmt in self.statements:
            prev = chain[-1] if chain else None
            if (prev is not None and stmt.call is not None and stmt.args
                    and stmt.args[0] == prev.name and uses[prev.name] == 1
                    and not prev.output):
                chain.append(stmt)
                continue
            flush()
            chain.append(stmt)
        flush()
        return lines


# Inputs that only say a shape: import reads those shapes from ONNX shape inference instead.
SHAPE_INPUTS = {"Resize": {1, 2, 3}, "Reshape": {1}, "ConstantOfShape": {0}}
# Ops that compute shapes (Shape(x)[:2] ++ [h, w] for a Resize's sizes) and nothing else.
SHAPE_OPS = {"Shape", "Slice", "Concat", "Gather", "Unsqueeze", "Squeeze", "Cast", "Constant"}


def shape_only(og: OnnxGraph, users: dict[str, list[OnnxNode]]) -> set[int]:
    """Indices of the nodes whose results only feed shape inputs (or other such nodes):
    import skips them."""
    index = {id(n): i for i, n in enumerate(og.nodes)}
    outputs = {v.name for v in og.outputs}
    found: set[int] = set()
    for i in range(len(og.nodes) - 1, -1, -1):
        node = og.nodes[i]
        if node.op_type not in SHAPE_OPS or any(o in outputs for o in node.outputs):
            continue
        uses = [(u, u.inputs.index(o)) for o in node.outputs for u in users.get(o, [])]
        if uses and all(index[id(u)] in found or k in SHAPE_INPUTS.get(u.op_type, ())
                        for u, k in uses):
            found.add(i)
    return found


def _stage(stmt: Statement) -> str:
    rest = stmt.args[1:]
    return f"{stmt.call}({', '.join(rest)})" if rest else stmt.call


def _refusal(og: OnnxGraph, problems) -> UsageError:
    lines = [f"{len(problems)} of the model's {len(og.nodes)} nodes do not map to netlang:"]
    for node, why in problems:
        label = f"'{node.name}' " if node.name else ""
        lines.append(f"  {label}({node.op_type}): {why}")
    kinds = sorted({n.op_type for n, _ in problems})
    return UsageError("\n".join(lines), hint="netlang import maps what netlang computes the "
                      f"same way; not yet: {', '.join(kinds)}")


# -- the handlers: one per ONNX op type ------------------------------------------------------

def _conv_padding(imp: _Importer, node: OnnxNode, x: str, kernel, strides, dilations) -> tuple:
    """(padding word, explicit pads or None) for a Conv or pool over ``x`` (NCHW)."""
    auto = node.attrs.get("auto_pad", "NOTSET")
    pads = [int(p) for p in node.attrs.get("pads", [0, 0, 0, 0])]
    if auto == "VALID" or (auto == "NOTSET" and not any(pads)):
        return "valid", None
    if auto == "SAME_UPPER":
        return "same", None
    if all(int(s) == 1 for s in strides):       # SAME's padding does not need the size
        totals = [(int(k) - 1) * int(d) for k, d in zip(kernel, dilations)]
        same = [(t // 2, t - t // 2) for t in totals]
    else:
        h, w = imp.static(x, (2, 3))
        axes = [axis_geometry(n, k, s, d, "SAME") for n, k, s, d in
                zip((h, w), kernel, strides, dilations)]
        same = [(a.before, a.after) for a in axes]
    same_pads = [same[0][0], same[1][0], same[0][1], same[1][1]]
    if auto == "SAME_LOWER":
        pads = [same[0][1], same[1][1], same[0][0], same[1][0]]
    if pads == same_pads:
        return "same", None
    return "valid", pads


def _explicit(pads) -> str:
    """ONNX's [top, left, bottom, right] as netlang's ``padding=((top, bottom), (left,
    right))``."""
    t, left, b, r = (int(p) for p in pads)
    return f"padding=(({t}, {b}), ({left}, {r}))"


def _same_pads(imp: _Importer, node: OnnxNode, x: str, kernel, strides, dilations
               ) -> list[int]:
    """TensorFlow's SAME padding of a pool as explicit [top, left, bottom, right]."""
    h, w = imp.static(x, (2, 3))
    gh, gw = (axis_geometry(n, int(k), int(s), int(d), "SAME")
              for n, k, s, d in zip((h, w), kernel, strides, dilations))
    return [gh.before, gw.before, gh.after, gw.after]


def _conv(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x, w = node.inputs[:2]
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    if imp.rank(x) == 3:
        _conv1d(imp, node, x, w, bias)
        return
    if imp.rank(x) != 4:
        raise Unmapped(f"a {imp.rank(x) - 2}-D convolution (netlang has conv1d and conv2d)")
    groups = int(node.attrs.get("group", 1))
    cout, _, kh, kw = imp.shape(w)
    strides = node.attrs.get("strides", [1, 1])
    dilations = node.attrs.get("dilations", [1, 1])
    padding, pads = _conv_padding(imp, node, x, (kh, kw), strides, dilations)
    source = imp.get(x, CL)
    attrs = [f"stride={_pair(strides)}"] if list(strides) != [1, 1] else []
    attrs += [f"padding={padding}"] if padding != "valid" else []
    attrs += [_explicit(pads)] if pads is not None else []
    attrs += [f"dilation={_pair(dilations)}"] if list(dilations) != [1, 1] else []
    attrs += [f"groups={groups}"] if groups != 1 else []
    if w in imp.consts and (bias is None or bias in imp.consts):
        scope = imp.layer_scope("conv")
        imp.arrays[f"{scope}/W"] = np.ascontiguousarray(imp.consts[w].transpose(2, 3, 1, 0))
        if bias is not None:
            imp.arrays[f"{scope}/b"] = np.asarray(imp.consts[bias]).reshape(cout)
        else:
            attrs.append("use_bias=false")
        imp.emit("conv2d", [source, str(cout), f"kernel={_pair((kh, kw))}", *attrs],
                 node.outputs[0], CL)
        return
    y = imp.emit("conv2d", [source, imp.get(w, (2, 3, 1, 0)), *attrs])
    if bias is None:
        imp.held[node.outputs[0]] = Held(y, CL)
    else:
        imp.emit(None, [], node.outputs[0], CL, infix=f"{y} + {imp.get(bias)}")


def _conv_transpose(imp: _Importer, node: OnnxNode, _index: int) -> None:
    """ConvTranspose over NCHW as netlang's conv2d_transpose layer (VALID: (in-1)*s + k),
    then ONNX's output_padding (zeros past the last input's reach) and pads (cropped)."""
    x, w = node.inputs[:2]
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    if imp.rank(x) != 4:
        raise Unmapped(f"a {imp.rank(x) - 2}-D transposed convolution (netlang's is 2-D)")
    if int(node.attrs.get("group", 1)) != 1:
        raise Unmapped("a grouped transposed convolution")
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") \
            or "output_shape" in node.attrs:
        raise Unmapped("auto_pad or output_shape (give pads and output_padding)")
    _, cout, kh, kw = imp.shape(w)
    strides = [int(v) for v in node.attrs.get("strides", [1, 1])]
    dilations = [int(v) for v in node.attrs.get("dilations", [1, 1])]
    pads = [int(v) for v in node.attrs.get("pads", [0, 0, 0, 0])]
    if node.attrs.get("auto_pad") == "VALID":
        pads = [0, 0, 0, 0]
    extra = [int(v) for v in node.attrs.get("output_padding", [0, 0])]
    attrs = [f"stride={_pair(strides)}"] if strides != [1, 1] else []
    attrs += [f"dilation={_pair(dilations)}"] if dilations != [1, 1] else []
    layer = w in imp.consts and (bias is None or bias in imp.consts)
    late_bias = bias is not None and (any(extra) or not layer)   # padded rows get it too
    if layer:
        scope = imp.layer_scope("deconv")
        imp.arrays[f"{scope}/W"] = np.ascontiguousarray(imp.consts[w].transpose(2, 3, 1, 0))
        if bias is not None and not late_bias:
            imp.arrays[f"{scope}/b"] = np.asarray(imp.consts[bias]).reshape(cout)
        else:
            attrs.append("use_bias=false")
        y = imp.emit("conv2d_transpose", [imp.get(x, CL), str(cout),
                                          f"kernel={_pair((kh, kw))}", *attrs])
    else:                                # weights computed in the graph: the op itself
        y = imp.emit("conv2d_transpose", [imp.get(x, CL), imp.get(w, (2, 3, 1, 0)), *attrs])
    if any(extra):
        grow = f"paddings=((0, 0), (0, {extra[0]}), (0, {extra[1]}), (0, 0))"
        y = imp.emit("pad", [y, grow, "value=0.0"])
    if any(pads):
        crop = f"paddings=((0, 0), ({pads[0]}, {pads[2]}), ({pads[1]}, {pads[3]}), (0, 0))"
        y = imp.emit("unpad", [y, crop])
    if late_bias:
        y = imp.emit(None, [], infix=f"{y} + {imp.get(bias)}")
    imp.held[node.outputs[0]] = Held(y, CL)


def _conv1d(imp: _Importer, node: OnnxNode, x: str, w: str, bias: str | None) -> None:
    """A 1-D Conv over [N, C, L]: netlang's conv1d over [N, L, C] (weights constant)."""
    if w not in imp.consts or (bias is not None and bias not in imp.consts):
        raise Unmapped("a 1-D convolution with computed weights")
    cout, _, k = imp.shape(w)
    stride = int(node.attrs.get("strides", [1])[0])
    dilation = int(node.attrs.get("dilations", [1])[0])
    groups = int(node.attrs.get("group", 1))
    auto = node.attrs.get("auto_pad", "NOTSET")
    pads = [int(p) for p in node.attrs.get("pads", [0, 0])]
    attrs = [f"stride={stride}"] if stride != 1 else []
    if auto == "SAME_UPPER":
        attrs.append("padding=same")
    elif auto == "SAME_LOWER" or (auto == "NOTSET" and any(pads)):
        if auto == "SAME_LOWER":
            raise Unmapped("auto_pad=SAME_LOWER on a 1-D convolution")
        attrs.append(f"padding=({pads[0]}, {pads[1]})")
    attrs += [f"dilation={dilation}"] if dilation != 1 else []
    attrs += [f"groups={groups}"] if groups != 1 else []
    scope = imp.layer_scope("conv1d_")
    imp.arrays[f"{scope}/W"] = np.ascontiguousarray(imp.consts[w].transpose(2, 1, 0))
    if bias is not None:
        imp.arrays[f"{scope}/b"] = np.asarray(imp.consts[bias]).reshape(cout)
    else:
        attrs.append("use_bias=false")
    imp.emit("conv1d", [imp.get(x, (0, 2, 1)), str(cout), f"kernel={k}", *attrs],
             node.outputs[0], (0, 2, 1))


def _bias_after(imp: _Importer, out: str, units: int) -> tuple[int, str] | None:
    """The index and bias constant of an Add right after ``out`` that adds a [units]
    vector (a dense layer's bias), when ``out`` has no other use."""
    users = imp.users.get(out, [])
    if len(users) != 1 or out in imp.graph_outputs or users[0].op_type != "Add":
        return None
    add = users[0]
    other = [i for i in add.inputs if i != out]
    if len(other) != 1 or other[0] not in imp.consts:
        return None
    b = imp.consts[other[0]]
    if b.size != units or b.ndim > 2:
        return None
    return imp.og.nodes.index(add), other[0]


def _dense(imp: _Importer, x: str, weights: np.ndarray, bias: np.ndarray | None,
           out: str) -> None:
    if imp.rank(x) != 2:
        raise Unmapped(f"dense weights over a rank-{imp.rank(x)} input")
    scope = imp.layer_scope("dense")
    imp.arrays[f"{scope}/W"] = np.ascontiguousarray(weights)
    attrs = []
    if bias is not None:
        imp.arrays[f"{scope}/b"] = np.asarray(bias).reshape(weights.shape[1])
    else:
        attrs.append("use_bias=false")
    imp.emit("dense", [imp.get(x), str(weights.shape[1]), *attrs], out)


def _gemm(imp: _Importer, node: OnnxNode, _index: int) -> None:
    a, b = node.inputs[:2]
    c = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    if (not ta and alpha == 1.0 and b in imp.consts and (c is None or (
            c in imp.consts and beta == 1.0))):
        weights = imp.consts[b].T if tb else imp.consts[b]
        units = weights.shape[1]
        if c is None or imp.consts[c].size == units:
            _dense(imp, a, weights, None if c is None else imp.consts[c], node.outputs[0])
            return
    attrs = [f"transpose_a={'true' if ta else 'false'}"] if ta else []
    attrs += ["transpose_b=true"] if tb else []
    y = imp.emit("matmul", [imp.get(a), imp.get(b), *attrs])
    if alpha != 1.0:
        y = imp.emit(None, [], infix=f"{y} * {_number(alpha)}")
    if c is None:
        imp.held[node.outputs[0]] = Held(y)
        return
    term = imp.get(c) if beta == 1.0 else f"{imp.get(c)} * {_number(beta)}"
    imp.emit(None, [], node.outputs[0], infix=f"{y} + {term}")


def _matmul(imp: _Importer, node: OnnxNode, _index: int) -> None:
    a, b = node.inputs
    if b in imp.consts and imp.consts[b].ndim == 2 and imp.rank(a) == 2:
        units = imp.consts[b].shape[1]
        add = _bias_after(imp, node.outputs[0], units)
        if add is not None:
            index, bias = add
            imp.skip.add(index)
            _dense(imp, a, imp.consts[b], imp.consts[bias], imp.og.nodes[index].outputs[0])
        else:
            _dense(imp, a, imp.consts[b], None, node.outputs[0])
        return
    ra, rb = imp.rank(a), imp.rank(b)
    if ra >= 2 and rb >= 2:
        imp.emit(None, [], node.outputs[0], infix=f"{imp.get(a)} @ {imp.get(b)}")
        return
    # NumPy's promotion: a 1-D left operand is a row, a 1-D right one a column, dropped after
    left = imp.get(a) if ra >= 2 else imp.emit("reshape", [imp.get(a), "shape=(1, -1)"])
    right = imp.get(b) if rb >= 2 else imp.emit("reshape", [imp.get(b), "shape=(-1, 1)"])
    y = imp.emit(None, [], infix=f"{left} @ {right}")
    out = [d if isinstance(d, int) and d >= 0 else -1 for d in imp.shape(node.outputs[0])]
    if out.count(-1) > 1:
        raise Unmapped("a 1-D operand with more than one unknown dim in the result")
    imp.emit("reshape", [y, f"shape={_tuple(out)}"], node.outputs[0])


def _channels_last(rank: int) -> tuple | None:
    """The perm that moves axis 1 (ONNX's channels) last, None for rank 2."""
    return None if rank == 2 else (0, *range(2, rank), 1)


def _batchnorm(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x, scale, bias, mean, var = node.inputs[:5]
    if int(node.attrs.get("training_mode", 0)):
        raise Unmapped("training_mode=1 (netlang batchnorm's training mode is its own)")
    rank = imp.rank(x)
    if rank < 2:
        raise Unmapped(f"batchnorm over a rank-{rank} value")
    perm = _channels_last(rank)
    eps = float(node.attrs.get("epsilon", 1e-5))
    if not all(name in imp.consts for name in (scale, bias, mean, var)):
        # computed statistics: the formula, with the [C] vectors along the channels last
        parts = [imp.get(x, perm), *(imp.get(n) for n in (mean, var, scale, bias))]
        value, m, v, g, b = parts
        imp.emit(None, [], node.outputs[0], perm,
                 infix=f"({value} - {m}) / sqrt({v} + {_number(np.float32(eps))}) * {g} + {b}")
        return
    scope = imp.layer_scope("bn")
    for key, name in (("gamma", scale), ("beta", bias), ("moving_mean", mean),
                      ("moving_variance", var)):
        imp.arrays[f"{scope}/{key}"] = np.asarray(imp.consts[name])
    imp.emit("batchnorm", [imp.get(x, perm), f"epsilon={_number(np.float32(eps))}"],
             node.outputs[0], perm)


def _lrn(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x = node.inputs[0]
    rank = imp.rank(x)
    if rank < 2:
        raise Unmapped(f"LRN over a rank-{rank} value")
    perm = _channels_last(rank)
    attrs = [f"size={int(node.attrs['size'])}"]
    for name, default in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)):
        value = float(node.attrs.get(name, default))
        if value != default:
            attrs.append(f"{name}={_number(np.float32(value))}")
    imp.emit("lrn", [imp.get(x, perm), *attrs], node.outputs[0], perm)


def _unary(call: str, **fixed):
    def handler(imp: _Importer, node: OnnxNode, _index: int) -> None:
        x = node.inputs[0]
        perm = imp.perm_of(x)
        attrs = [f"{k}={_number(node.attrs.get(k, v))}" for k, v in fixed.items()]
        imp.emit(call, [imp.get(x, perm), *attrs], node.outputs[0], perm)
    return handler


def _gelu(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x = node.inputs[0]
    perm = imp.perm_of(x)
    mode = node.attrs.get("approximate", "none")
    if mode not in ("none", "tanh"):
        raise Unmapped(f"approximate={mode}")
    attrs = ["approximate=true"] if mode == "tanh" else []
    imp.emit("gelu", [imp.get(x, perm), *attrs], node.outputs[0], perm)


SOFTPLUS = "relu({x}) + log(1.0 + exp(-abs({x})))"      # log(1 + e^x) without overflow


def _formula(template: str, **defaults):
    """An elementwise activation ONNX has and netlang writes as an expression: ``template``
    over ``{x}`` and the node's attributes (their ONNX defaults given here, as float32)."""
    def handler(imp: _Importer, node: OnnxNode, _index: int) -> None:
        x = node.inputs[0]
        perm = imp.perm_of(x)
        source = imp.named(imp.get(x, perm))       # a transpose: name it once, use it often
        values = {k: _number(np.float32(node.attrs.get(k, v))) for k, v in defaults.items()}
        imp.emit(None, [], node.outputs[0], perm, infix=template.format(x=source, **values))
    return handler


def _clip(imp: _Importer, node: OnnxNode, _index: int) -> None:
    """Clip (ReLU6 in PyTorch's exports of MobileNets) as maximum and minimum with its bounds:
    scalar inputs (opset 11 on; constants become numbers) or attributes (before)."""
    x = node.inputs[0]
    perm = imp.perm_of(x)
    value = imp.get(x, perm)
    for position, attr, call in ((1, "min", "maximum"), (2, "max", "minimum")):
        if len(node.inputs) > position and node.inputs[position]:
            name = node.inputs[position]
            if imp.rank(name) != 0:
                raise Unmapped(f"a {attr} bound that is not one number")
            bound = (_number(imp.consts[name]) if name in imp.consts else imp.get(name))
        elif attr in node.attrs:
            bound = _number(np.float32(node.attrs[attr]))
        else:
            continue
        value = f"{call}({value}, {bound})"
    imp.emit(None, [], node.outputs[0], perm, infix=value)


def _prelu(imp: _Importer, node: OnnxNode, _index: int) -> None:
    """max(x, 0) + slope * min(x, 0), the slope broadcast against x.  A slope of one value
    per channel ([C] against [N, C, ...], as PRelu before opset 7 and PyTorch's old exports
    wrote it) is read as [C, 1, ...]."""
    names = list(node.inputs)
    slope_name, x_name = names[1], names[0]
    if slope_name in imp.consts and imp.rank(x_name) >= 3:
        slope = imp.consts[slope_name]
        channels = imp.shape(x_name)[1]
        if slope.ndim == 1 and slope.size == channels != imp.shape(x_name)[-1]:
            names[1] = f"{slope_name}/per_channel"
            imp.consts[names[1]] = slope.reshape((channels,) + (1,) * (imp.rank(x_name) - 2))
    perm = _common_layout(imp, names, node.outputs[0])
    x, slope = (_operand(imp, n, perm) for n in names)
    x = imp.named(x)
    imp.emit(None, [], node.outputs[0], perm,
             infix=f"maximum({x}, 0.0) + {slope} * minimum({x}, 0.0)")


def _same(imp: _Importer, node: OnnxNode, _index: int) -> None:
    imp.alias(node.outputs[0], node.inputs[0])        # Identity, inference-time Dropout


def _reciprocal(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x = node.inputs[0]
    perm = imp.perm_of(x)
    imp.emit(None, [], node.outputs[0], perm, infix=f"1.0 / {imp.get(x, perm)}")


def _common_layout(imp: _Importer, names: list[str], out: str) -> tuple | None:
    """CL when the 4-D result has a 4-D operand held channels last, else None."""
    if imp.rank(out) == 4 and any(n not in imp.consts and imp.rank(n) == 4
                                  and imp.perm_of(n) == CL for n in names):
        return CL
    return None


def _operand(imp: _Importer, name: str, perm: tuple | None) -> str:
    rank = imp.rank(name)
    if perm is None or rank == 4:
        return imp.get(name, perm)
    if name in imp.consts:               # broadcast against NCHW: widen, then re-lay
        array = imp.consts[name]
        if array.size == 1:
            return _number(array)
        wide = array.reshape((1,) * (4 - array.ndim) + array.shape).transpose(CL)
        return imp.constant(wide, name, CL)
    shape = imp.static(name, range(rank))
    wide = imp.emit("reshape", [imp.get(name), f"shape={_tuple([1] * (4 - rank) + shape)}"])
    return imp.emit("transpose", [wide, f"perm={_tuple(CL)}"])


def _binary(infix: str | None = None, call: str | None = None):
    def handler(imp: _Importer, node: OnnxNode, _index: int) -> None:
        if len(node.inputs) != 2:
            raise Unmapped(f"{len(node.inputs)} operands (netlang's op takes 2)")
        perm = _common_layout(imp, node.inputs, node.outputs[0])
        a, b = (_operand(imp, n, perm) for n in node.inputs)
        if infix is not None:
            imp.emit(None, [], node.outputs[0], perm, infix=f"{a} {infix} {b}")
        else:
            imp.emit(call, [a, b], node.outputs[0], perm)
    return handler


def _div(imp: _Importer, node: OnnxNode, index: int) -> None:
    dtype = imp.og.types.get(node.outputs[0])
    if dtype is not None and dtype.dtype is not None and dtype.dtype.kind in "iu":
        raise Unmapped("integer division (ONNX truncates; netlang divides into floats)")
    _binary("/")(imp, node, index)


def _dropout(imp: _Importer, node: OnnxNode, _index: int) -> None:
    if len(node.inputs) > 2 and node.inputs[2]:
        training = imp.consts.get(node.inputs[2])
        if training is None or bool(np.asarray(training).reshape(-1)[0]):
            raise Unmapped("dropout in training mode (netlang draws its masks in training "
                           "steps)")
    mask = node.outputs[1] if len(node.outputs) > 1 else ""
    if mask and (imp.users.get(mask) or mask in imp.graph_outputs):
        raise Unmapped("dropout's mask output")
    imp.alias(node.outputs[0], node.inputs[0])


def _sum(imp: _Importer, node: OnnxNode, index: int) -> None:
    """Sum of any number of operands: ``a + b + c``."""
    if len(node.inputs) == 1:
        imp.alias(node.outputs[0], node.inputs[0])
        return
    if len(node.inputs) == 2:
        _binary("+")(imp, node, index)
        return
    perm = _common_layout(imp, node.inputs, node.outputs[0])
    terms = [_operand(imp, n, perm) for n in node.inputs]
    imp.emit(None, [], node.outputs[0], perm, infix=" + ".join(terms))


def _where(imp: _Importer, node: OnnxNode, _index: int) -> None:
    perm = _common_layout(imp, node.inputs, node.outputs[0])
    imp.emit("select", [_operand(imp, n, perm) for n in node.inputs], node.outputs[0], perm)


def _pow(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x, e = node.inputs
    exponent = imp.const(e, "exponent")
    if exponent.size != 1:
        raise Unmapped("an exponent that is not one number")
    perm = imp.perm_of(x)
    imp.emit("pow", [imp.get(x, perm), f"exponent={_number(exponent)}"], node.outputs[0],
             perm)


def _pool(call: str):
    def handler(imp: _Importer, node: OnnxNode, _index: int) -> None:
        x = node.inputs[0]
        if imp.rank(x) != 4:
            raise Unmapped(f"a {imp.rank(x) - 2}-D pool (netlang pools 2-D images)")
        kernel = [int(k) for k in node.attrs["kernel_shape"]]
        strides = [int(s) for s in node.attrs.get("strides", [1, 1])]
        dilations = [int(d) for d in node.attrs.get("dilations", [1, 1])]
        padding, pads = _conv_padding(imp, node, x, kernel, strides, dilations)
        attrs = [f"window={_pair(kernel)}"]
        attrs += [f"stride={_pair(strides)}"] if strides != kernel else []
        attrs += ["padding=same"] if padding == "same" else []
        attrs += [f"dilation={_pair(dilations)}"] if dilations != [1, 1] else []
        if pads is not None:
            spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
            if any(p >= k for p, k in zip(pads, spans + spans)):
                raise Unmapped(f"pads {pads} as large as the window")
            attrs.append(_explicit(pads))
        if int(node.attrs.get("ceil_mode", 0)):
            attrs.append("ceil_mode=true")
        if call == "avgpool" and int(node.attrs.get("count_include_pad", 0)) and (
                pads is not None or padding == "same"):
            if pads is None:              # SAME, counting the pads: give them explicitly
                attrs = [a for a in attrs if a != "padding=same"]
                attrs.append(_explicit(_same_pads(imp, node, x, kernel, strides, dilations)))
            attrs.append("count_include_pad=true")
        source = imp.get(x, CL)
        imp.emit(call, [source, *attrs], node.outputs[0], CL)
    return handler


def _global_pool(call: str):
    def handler(imp: _Importer, node: OnnxNode, _index: int) -> None:
        x = node.inputs[0]
        if imp.rank(x) != 4:
            raise Unmapped(f"a global pool over a rank-{imp.rank(x)} value")
        imp.emit(call, [imp.get(x, CL), "axis=(1, 2)", "keepdims=true"], node.outputs[0], CL)
    return handler


def _reshape_to(imp: _Importer, node: OnnxNode, target: tuple) -> None:
    """``reshape(x, shape)`` to an ONNX shape (ints, dynamic dims as strings)."""
    x = node.inputs[0]
    dims = []
    in_shape = imp.shape(x)
    for i, d in enumerate(target):
        if isinstance(d, int) and d >= 0:
            dims.append(d)
        elif i < len(in_shape) and in_shape[i] == d:
            dims.append(0)
        else:
            dims.append(-1)
    if dims.count(-1) > 1:
        raise Unmapped(f"the result shape {target} has more than one unknown dim")
    if 0 in dims:
        if dims.count(-1) or dims.index(0) != 0 or dims.count(0) > 1:
            raise Unmapped(f"the result shape {target} copies dims netlang cannot name")
        dims[0] = -1
    if (len(dims) == 2 and dims[0] == -1 and len(in_shape) > 2 and all(
            isinstance(d, int) and d >= 0 for d in in_shape[1:])
            and dims[1] == int(np.prod(in_shape[1:]))):
        imp.emit("flatten", [imp.get(x)], node.outputs[0])     # [N, ...] -> [N, features]
        return
    imp.emit("reshape", [imp.get(x), f"shape={_tuple(dims)}"], node.outputs[0])


def _reshape(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x = node.inputs[0]
    if x in imp.consts and node.op_type == "Reshape":
        shape = imp.shape(node.outputs[0])
        imp.consts[node.outputs[0]] = imp.consts[x].reshape(shape)
        return
    _reshape_to(imp, node, imp.shape(node.outputs[0]))


def _flatten(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x = node.inputs[0]
    rank = imp.rank(x)
    axis = int(node.attrs.get("axis", 1)) % max(rank, 1)
    tail = int(np.prod(imp.static(x, range(axis, rank)))) if axis < rank else 1
    if axis == 1 and rank == 2:
        imp.alias(node.outputs[0], x)
    elif axis == 1:
        imp.emit("flatten", [imp.get(x)], node.outputs[0])
    else:
        head = int(np.prod(imp.static(x, range(axis))))
        imp.emit("reshape", [imp.get(x), f"shape={_tuple([head, tail])}"], node.outputs[0])


def _transpose(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x = node.inputs[0]
    rank = imp.rank(x)
    p = tuple(int(i) for i in node.attrs.get("perm", reversed(range(rank))))
    if x in imp.consts:
        imp.consts[node.outputs[0]] = imp.consts[x].transpose(p)
        return
    held = imp.held.get(x)
    if held is None:
        raise Unmapped(f"its input '{x}' comes from a node that does not map")
    have = held.perm or _identity(rank)
    perm = tuple(_inverse(p)[q] for q in have)
    imp.held[node.outputs[0]] = Held(held.name, None if perm == _identity(rank) else perm)


def _axis_in(imp: _Importer, name: str, axis: int) -> tuple[int, tuple | None]:
    """ONNX ``axis`` of value ``name`` as the netlang axis of what is held, and the perm."""
    rank = imp.rank(name)
    perm = imp.perm_of(name)
    axis %= rank
    return (axis if perm is None else perm.index(axis)), perm


def _softmax(call: str):
    def handler(imp: _Importer, node: OnnxNode, _index: int) -> None:
        x = node.inputs[0]
        rank = imp.rank(x)
        default = -1 if imp.og.opset >= 13 else 1
        axis = int(node.attrs.get("axis", default)) % rank
        shape = imp.shape(x)
        if imp.og.opset < 13 and any(d != 1 for d in shape[axis + 1:]):
            raise Unmapped(f"opset {imp.og.opset} {node.op_type} over the axes from {axis} on")
        held_axis, perm = _axis_in(imp, x, axis)
        attrs = [] if held_axis == rank - 1 else [f"axis={held_axis}"]
        imp.emit(call, [imp.get(x, perm), *attrs], node.outputs[0], perm)
    return handler


def _arg(call: str):
    def handler(imp: _Importer, node: OnnxNode, _index: int) -> None:
        x = node.inputs[0]
        axis = int(node.attrs.get("axis", 0)) % imp.rank(x)
        attrs = [] if axis == imp.rank(x) - 1 else [f"axis={axis}"]
        if int(node.attrs.get("select_last_index", 0)):
            attrs.append("select_last_index=true")
        if not int(node.attrs.get("keepdims", 1)):
            imp.emit(call, [imp.get(x), *attrs], node.outputs[0])
            return
        out_shape = imp.shape(node.outputs[0])
        y = imp.emit(call, [imp.get(x), *attrs])
        dims = [d if isinstance(d, int) and d >= 0 else -1 for d in out_shape]
        if dims.count(-1) > 1:
            raise Unmapped("keepdims=1 with more than one unknown dim")
        imp.emit("reshape", [y, f"shape={_tuple(dims)}"], node.outputs[0])
    return handler


def _reduce(call: str, inside: str | None = None, outside: str | None = None):
    """A Reduce* node as netlang's ``call`` over the axes, of ``inside`` (a formula of
    ``{x}``, e.g. ``abs({x})`` for ReduceL1) and then ``outside`` of the result ``{y}``."""
    def handler(imp: _Importer, node: OnnxNode, _index: int) -> None:
        x = node.inputs[0]
        rank = imp.rank(x)
        if len(node.inputs) > 1 and node.inputs[1]:
            axes = [int(a) for a in imp.const(node.inputs[1], "axes")]
        else:
            axes = [int(a) for a in node.attrs.get("axes", [])]
        if not axes and int(node.attrs.get("noop_with_empty_axes", 0)):
            imp.alias(node.outputs[0], x)
            return
        axes = sorted(a % rank for a in axes) or list(range(rank))
        keep = bool(int(node.attrs.get("keepdims", 1)))
        perm = imp.perm_of(x)
        if perm is not None and not keep:     # the kept axes must stay in ONNX's order
            kept = [perm.index(a) for a in range(rank) if a not in axes]
            perm = perm if kept == sorted(kept) else None
        held = sorted(perm.index(a) for a in axes) if perm else axes
        source = imp.get(x, perm)
        if inside is not None:
            source = inside.format(x=imp.named(source))
        args = [source, f"axis={_tuple(held)}", f"keepdims={'true' if keep else 'false'}"]
        out_perm = perm if keep else None
        if outside is None:
            imp.emit(call, args, node.outputs[0], out_perm)
            return
        reduced = imp.emit(call, args)
        imp.emit(None, [], node.outputs[0], out_perm, infix=outside.format(y=reduced))
    return handler


def _concat(imp: _Importer, node: OnnxNode, _index: int) -> None:
    out = node.outputs[0]
    rank = imp.rank(out)
    axis = int(node.attrs["axis"]) % rank
    perm = _common_layout(imp, node.inputs, out)
    held_axis = perm.index(axis) if perm else axis
    imp.emit("concat", [*(imp.get(n, perm) for n in node.inputs), f"axis={held_axis}"], out,
             perm)


def _split(imp: _Importer, node: OnnxNode, _index: int) -> None:
    """Each output an ``unpad`` of x along the axis: the cells before and after its part."""
    x = node.inputs[0]
    rank = imp.rank(x)
    axis = int(node.attrs.get("axis", 0)) % rank
    (size,) = imp.static(x, [axis])
    count = len(node.outputs)
    if len(node.inputs) > 1 and node.inputs[1]:
        sizes = [int(v) for v in imp.const(node.inputs[1], "split")]
    elif "split" in node.attrs:                       # before opset 13: an attribute
        sizes = [int(v) for v in node.attrs["split"]]
    else:                                             # equal parts, the last one smaller
        part = -(-size // count)
        sizes = [min(part, size - i * part) for i in range(count)]
    if len(sizes) != count or sum(sizes) != size or min(sizes) < 0:
        raise Unmapped(f"split sizes {sizes} for {count} outputs of {size} cells")
    perm = imp.perm_of(x)
    held_axis = perm.index(axis) if perm else axis
    source = imp.named(imp.get(x, perm))
    start = 0
    for out, part in zip(node.outputs, sizes):
        cut = ", ".join(f"({start}, {size - start - part})" if a == held_axis else "(0, 0)"
                        for a in range(rank))
        imp.emit("unpad", [source, f"paddings=({cut}{',' if rank == 1 else ''})"], out, perm)
        start += part


def _cast(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x = node.inputs[0]
    dtype = imp.og.types.get(node.outputs[0])
    if dtype is None:
        raise Unmapped("the type it casts to is unknown")
    perm = imp.perm_of(x)
    imp.emit("cast", [imp.get(x, perm), f"dtype={_dtype_name(dtype.dtype)}"], node.outputs[0],
             perm)


def _pad(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x = node.inputs[0]
    if node.attrs.get("mode", "constant") != "constant":
        raise Unmapped(f"mode={node.attrs['mode']} (netlang pads with a constant)")
    if len(node.inputs) > 3 and node.inputs[3]:
        raise Unmapped("padding only some axes (the axes input)")
    if len(node.inputs) > 1:
        pads = [int(p) for p in imp.const(node.inputs[1], "pads")]
    else:                                   # before opset 11: attributes
        pads = [int(p) for p in node.attrs["pads"]]
    value = node.attrs.get("value", 0.0)
    if len(node.inputs) > 2 and node.inputs[2]:
        value = imp.const(node.inputs[2], "constant value")
    rank = len(pads) // 2
    pairs = ", ".join(f"({pads[i]}, {pads[i + rank]})" for i in range(rank))
    imp.emit("pad", [imp.get(x), f"paddings=({pairs}{',' if rank == 1 else ''})",
                     f"value={_number(value)}"], node.outputs[0])


def _resize(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x = node.inputs[0]
    mode = node.attrs.get("mode", "nearest")
    ctm = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    rounding = node.attrs.get("nearest_mode", "round_prefer_floor")
    if imp.rank(x) != 4:
        raise Unmapped("resizing a value that is not a 4-D image")
    if ctm not in COORDINATES or mode not in ("nearest", "linear"):
        raise Unmapped(f"mode={mode} with coordinate_transformation_mode={ctm} (netlang "
                       f"resizes nearest or linear with {', '.join(COORDINATES)} coordinates)")
    if int(node.attrs.get("antialias", 0)):
        raise Unmapped("antialias=1")
    h, w = imp.static(x, (2, 3))
    oh, ow = imp.static(node.outputs[0], (2, 3))
    out_shape = imp.shape(node.outputs[0])
    if out_shape[1] != imp.shape(x)[1]:
        raise Unmapped("resizing the channel axis")
    scales = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    given = [None, None]
    if scales is not None:         # ONNX samples at o / scale; netlang at o * (in / out)
        given = [float(v) for v in imp.const(scales, "scales")[2:]]
        exact = [np.float32(oh) / np.float32(h), np.float32(ow) / np.float32(w)]
        if not np.allclose(given, exact, rtol=1e-6, atol=0):
            raise Unmapped(f"scales {given} that are not output / input size")
    if mode == "nearest" and not all(
            nearest_agrees(a, b, ctm, rounding, s) for a, b, s in ((h, oh, given[0]),
                                                                   (w, ow, given[1]))):
        raise Unmapped(f"nearest {h}x{w} -> {oh}x{ow}, where ONNX's positions and netlang's "
                       "round to other pixels")
    attrs = [f"size={_tuple((oh, ow))}",
             f"method={'bilinear' if mode == 'linear' else 'nearest'}"]
    attrs += [f"coordinates={ctm}"] if ctm != "asymmetric" else []
    attrs += [f"nearest_mode={rounding}"] if mode == "nearest" and rounding != "floor" else []
    imp.emit("resize", [imp.get(x, CL), *attrs], node.outputs[0], CL)


def _squeeze(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x = node.inputs[0]
    if x in imp.consts:
        imp.consts[node.outputs[0]] = imp.consts[x].reshape(imp.shape(node.outputs[0]))
        return
    _reshape_to(imp, node, imp.shape(node.outputs[0]))


def _constant(imp: _Importer, node: OnnxNode, _index: int) -> None:
    attrs = node.attrs
    if "value" in attrs:
        value = np.asarray(attrs["value"])
    elif "value_float" in attrs or "value_int" in attrs:
        value = np.asarray(attrs.get("value_float", attrs.get("value_int")),
                           np.float32 if "value_float" in attrs else np.int64)
    elif "value_floats" in attrs or "value_ints" in attrs:
        value = np.asarray(attrs.get("value_floats", attrs.get("value_ints")),
                           np.float32 if "value_floats" in attrs else np.int64)
    else:
        raise Unmapped(f"a constant given as {', '.join(attrs)}")
    imp.consts[node.outputs[0]] = value


def _gather(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x, indices = node.inputs
    axis = int(node.attrs.get("axis", 0)) % imp.rank(x)
    if x in imp.consts and indices in imp.consts:
        imp.consts[node.outputs[0]] = np.take(imp.consts[x], imp.consts[indices], axis=axis)
        return
    attrs = [f"axis={axis}"] if axis else []
    imp.emit("gather", [imp.get(x), imp.get(indices), *attrs], node.outputs[0])


def _top_k(imp: _Importer, node: OnnxNode, _index: int) -> None:
    x = node.inputs[0]
    if not int(node.attrs.get("largest", 1)) or not int(node.attrs.get("sorted", 1)):
        raise Unmapped("largest=0 or sorted=0 (netlang's top_k gives the largest, sorted)")
    k = int(np.asarray(imp.const(node.inputs[1], "k")).reshape(-1)[0])
    axis = int(node.attrs.get("axis", -1)) % imp.rank(x)
    attrs = [f"k={k}"] + ([] if axis == imp.rank(x) - 1 else [f"axis={axis}"])
    for out, call in zip(node.outputs, ("top_k", "top_k_indices")):
        if out:
            imp.emit(call, [imp.get(x), *attrs], out)


def _tile(imp: _Importer, node: OnnxNode, _index: int) -> None:
    reps = [int(r) for r in imp.const(node.inputs[1], "repeats")]
    imp.emit("tile", [imp.get(node.inputs[0]), f"reps={_tuple(reps)}"], node.outputs[0])


def _expand(imp: _Importer, node: OnnxNode, _index: int) -> None:
    """ONNX's Expand broadcasts both ways, as netlang's expand does: the shape as given."""
    shape = [int(d) for d in imp.const(node.inputs[1], "shape")]
    if not all(d > 0 for d in shape):
        raise Unmapped(f"expanding to the shape {shape} (netlang's dims are positive)")
    imp.emit("expand", [imp.get(node.inputs[0]), f"shape={_tuple(shape)}"], node.outputs[0])


def _constant_of_shape(imp: _Importer, node: OnnxNode, _index: int) -> None:
    shape = [int(d) for d in imp.const(node.inputs[0], "shape")]
    value = np.asarray(node.attrs.get("value", np.zeros(1, np.float32))).reshape(-1)
    imp.consts[node.outputs[0]] = np.full(shape, value[0], value.dtype)


HANDLERS = {
    "Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm, "MatMul": _matmul, "BatchNormalization": _batchnorm,
    "LRN": _lrn,
    "Relu": _unary("relu"), "Sigmoid": _unary("sigmoid"), "Tanh": _unary("tanh"),
    "Exp": _unary("exp"), "Log": _unary("log"), "Sqrt": _unary("sqrt"),
    "Neg": _unary("neg"), "Abs": _unary("abs"), "Sin": _unary("sin"), "Cos": _unary("cos"),
    "Sign": _unary("sign"), "Floor": _unary("floor"), "Ceil": _unary("ceil"),
    "Round": _unary("round"), "Erf": _unary("erf"), "Gelu": _gelu, "LeakyRelu": _unary("leaky_relu", alpha=0.01),
    "Elu": _unary("elu", alpha=1.0), "Reciprocal": _reciprocal,
    "Softplus": _formula(SOFTPLUS), "Softsign": _formula("{x} / (1.0 + abs({x}))"),
    "Selu": _formula("{gamma} * elu({x}, alpha={alpha})", alpha=1.67326319217681884765625,
                     gamma=1.05070102214813232421875),
    "Celu": _formula("maximum({x}, 0.0) + minimum(0.0, {alpha} * (exp({x} / {alpha}) - 1.0))",
                     alpha=1.0),
    "HardSigmoid": _formula("maximum(0.0, minimum(1.0, {alpha} * {x} + {beta}))", alpha=0.2,
                            beta=0.5),
    "HardSwish": _formula("{x} * maximum(0.0, minimum(1.0, {alpha} * {x} + {beta}))",
                          alpha=1 / 6, beta=0.5),
    "ThresholdedRelu": _formula("select(greater({x}, {alpha}), {x}, 0.0)", alpha=1.0),
    "Mish": _formula("{x} * tanh(" + SOFTPLUS + ")"), "PRelu": _prelu, "Clip": _clip,
    "Identity": _same, "Dropout": _dropout,
    "Add": _binary("+"), "Sum": _sum, "Sub": _binary("-"), "Mul": _binary("*"), "Div": _div,
    "Max": _binary(call="maximum"), "Min": _binary(call="minimum"),
    "Equal": _binary(call="equal"), "Greater": _binary(call="greater"),
    "Less": _binary(call="less"), "Where": _where, "Pow": _pow,
    "MaxPool": _pool("maxpool"), "AveragePool": _pool("avgpool"),
    "GlobalAveragePool": _global_pool("mean"), "GlobalMaxPool": _global_pool("max"),
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose,
    "Squeeze": _squeeze, "Unsqueeze": _squeeze,
    "Softmax": _softmax("softmax"), "LogSoftmax": _softmax("log_softmax"),
    "ArgMax": _arg("argmax"), "ArgMin": _arg("argmin"),
    "ReduceMean": _reduce("mean"), "ReduceSum": _reduce("sum"), "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"), "ReduceProd": _reduce("prod"),
    "ReduceL1": _reduce("sum", inside="abs({x})"),
    "ReduceL2": _reduce("sum", inside="{x} * {x}", outside="sqrt({y})"),
    "ReduceSumSquare": _reduce("sum", inside="{x} * {x}"),
    "ReduceLogSum": _reduce("sum", outside="log({y})"),
    "Concat": _concat, "Split": _split, "Cast": _cast, "Pad": _pad, "Resize": _resize, "Constant": _constant,
    "ConstantOfShape": _constant_of_shape, "Gather": _gather, "TopK": _top_k, "Tile": _tile,
    "Expand": _expand,
}


def import_model(og: OnnxGraph) -> Imported:
    """The spec text and weights of ``og``; a ``UsageError`` lists every node that does not
    map."""
    return _Importer(og).run()


def mapped_op_types() -> list[str]:
    return sorted(HANDLERS)


def build_session(imported: Imported, path: str):
    """Compile the imported spec (``path`` names it in errors) and a session holding the
    imported weights.  A spec that does not compile, or weights that do not fit it, are
    bugs of this importer, reported as such."""
    try:
        model = compile_spec(imported.spec, path=path)
    except NetlangError as err:
        raise UsageError(f"the spec written for this model does not compile (a bug in "
                         f"netlang import):\n{err}") from None
    session = model.session()
    have = session.state.to_numpy()
    wrong = sorted(set(have) ^ set(imported.arrays))
    wrong += [k for k in set(have) & set(imported.arrays)
              if have[k].shape != imported.arrays[k].shape]
    if wrong:
        raise UsageError("the imported weights do not fit the spec written for them (a bug "
                         f"in netlang import): {', '.join(wrong)}")
    session.state.load({k: v.astype(have[k].dtype) for k, v in imported.arrays.items()})
    return model, session


def random_feeds(og: OnnxGraph, seed: int = 0, size: int = 2) -> dict[str, np.ndarray]:
    """Random inputs for the model's inputs (dynamic dims get ``size``)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in og.inputs:
        shape = [d if isinstance(d, int) and d >= 0 else size for d in v.shape]
        if np.dtype(v.dtype).kind == "f":
            feeds[v.name] = rng.standard_normal(shape).astype(v.dtype)
        elif np.dtype(v.dtype).kind == "b":
            feeds[v.name] = rng.random(shape) < 0.5
        else:
            feeds[v.name] = rng.integers(0, 3, shape).astype(v.dtype)
    return feeds


def largest_difference(session, imported: Imported, reference: dict[str, np.ndarray],
                       feeds: dict[str, np.ndarray]) -> float:
    """The largest difference between the session's outputs and ``reference`` (ONNX output
    name -> array), relative to max(1, |reference|); inf for another shape or dtype kind."""
    ours = session.run([imported.names[o] for o in imported.outputs],
                       {imported.names[k]: v for k, v in feeds.items()})
    worst = 0.0
    for name, value in zip(imported.outputs, ours):
        want, got = np.asarray(reference[name]), np.asarray(value)
        if want.shape != got.shape or (want.dtype.kind == "f") != (got.dtype.kind == "f"):
            return float("inf")
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        scale = np.maximum(1.0, np.abs(want.astype(np.float64)))
        worst = max(worst, float(np.max(diff / scale, initial=0.0)))
    return worst
