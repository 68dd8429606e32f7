"""A network's inference graph as ONNX nodes (``netlang export``).

The graph exported is the eval program of the chosen outputs, optimized by the passes that
keep ops whole (fold, simplify, CSE, pruning; not conv_bias, batchnorm or fusion): dropout
is gone, batchnorm reads its moving statistics, and constants are folded.  Each IR node
then becomes one ONNX node or a few:

- Layout.  netlang computes images as NHWC; ONNX's Conv, pools and BatchNormalization take
  NCHW.  Every 4-D value is held in one of the two layouts, and a Transpose is inserted only
  where a value is needed in the other one, so a chain of convolutions, pools, batchnorms
  and elementwise ops runs NCHW between one Transpose at its input and one where it ends
  (at a flatten: netlang's features are in NHWC order, which the dense weights expect).
  Filters are re-laid as initializers (``[kh,kw,cin,cout]`` -> ``[cout,cin,kh,kw]``).
- Patterns.  ``conv2d`` or a 2-D ``matmul`` followed by the add of a per-channel vector
  becomes one Conv or Gemm with a bias; a batchnorm after a conv (its only user) is folded
  into the conv's weights and bias (``fold_batchnorm``; exact in real arithmetic, within
  float rounding here).
- Names.  Initializers keep the variables' names (``conv1/W``), values their spec names
  where they have one, graph inputs and outputs the spec's; a symbolic dim (``N``) is a
  dynamic ONNX dimension unless ``batch`` fixes it.

An op with no ONNX mapping (an ``assign``, a loss) is an ``ExportError`` at its spec line.
"""
from __future__ import annotations

import numpy as np

from netlang.compiler import trace
from netlang.errors import ExportError, UsageError, did_you_mean
from netlang.exchange.graph import (
    DEFAULT_OPSET,
    MIN_OPSET,
    OnnxGraph,
    OnnxNode,
    OnnxValue,
    unique_name,
)
from netlang.ir.graph import Graph, Node
from netlang.ir.types import DType, Sym, promote
from netlang.model import Model
from netlang.ops.conv import pair, transpose_geometry, window_geometry
from netlang.ops.image import interpolation_matrix, nearest_agrees, resize_modes
from netlang.ops.pool import pool_geometry
from netlang.ops.rules import axes_of, axis_of
from netlang.passes.pipeline import OPTIMIZE, without

# The optimizations an exported graph gets: those that keep every op an op a reader knows.
EXPORT_PASSES = without(OPTIMIZE, "conv_bias", "batchnorm", "fusion")

NHWC, NCHW = "nhwc", "nchw"
TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)
FILTER_TO_OIHW = (3, 2, 0, 1)         # [kh,kw,cin,cout] -> [cout,cin,kh,kw]
TRANSPOSED_FILTER_TO_IOHW = (3, 2, 0, 1)   # conv2d_transpose's [kh,kw,cout,cin] -> [cin,cout,kh,kw]
CONSTANTS = ("param", "state", "const")


def export_outputs(graph: Graph) -> list[str]:
    """The outputs an exported model computes by default: every output but the loss and
    the metrics (they need labels an inference model is not fed)."""
    return [name for name in graph.outputs if name != graph.loss and name not in graph.metrics]


def export_model(model: Model, arrays: dict[str, np.ndarray], outputs: list[str] | None = None,
                 opset: int = DEFAULT_OPSET, batch: int | None = None,
                 fold_batchnorm: bool = True, max_opset: int | None = None,
                 metadata: dict[str, str] | None = None) -> OnnxGraph:
    """The ONNX description of ``model``'s inference graph for ``outputs`` (default:
    ``export_outputs``), with the variables' values from ``arrays`` (name -> array)."""
    if opset < MIN_OPSET or (max_opset is not None and opset > max_opset):
        top = f" to {max_opset}" if max_opset is not None else " or newer"
        raise UsageError(f"--opset {opset} is not supported", hint=f"give {MIN_OPSET}{top}")
    graph = model.graph
    names = outputs or export_outputs(graph)
    if not names:
        raise UsageError(f"network '{graph.name}' has no output to export besides its loss "
                         "and metrics", hint="declare one with `output NAME` in the spec")
    ids = []
    for name in names:
        if name not in graph.known_names():
            raise UsageError(f"no value named '{name}' to export",
                             hint=did_you_mean(name, graph.known_names()))
        ids.append(graph.resolve(name))
    fed = frozenset(graph.inputs.values())
    program = trace(graph, False, fed, ids, False, EXPORT_PASSES).graph
    writer = _Writer(program, arrays, opset, batch, fold_batchnorm, model.defaults())
    out = writer.write(names)
    out.metadata.update({"netlang_network": graph.name, "layout": "NHWC",
                         **(metadata or {})})
    return out


class _Writer:
    """Walks the program graph in order, emitting ONNX nodes; see the module doc."""

    def __init__(self, graph: Graph, arrays: dict[str, np.ndarray], opset: int,
                 batch: int | None, fold_batchnorm: bool, defaults: dict[str, np.ndarray]):
        self.g = graph
        self.arrays = arrays
        self.opset = opset
        self.batch = batch
        self.defaults = defaults
        self.out = OnnxGraph(graph.name, opset)
        self.views: dict[tuple[int, str], str] = {}     # (id, layout) -> ONNX value name
        self.home: dict[int, str] = {}                  # id -> layout it was computed in
        self.taken: set[str] = set()                    # value names
        self.node_names: set[str] = set()
        self.users = graph.users()
        self.output_of: dict[int, str] = {}
        for name, nid in graph.outputs.items():
            self.output_of.setdefault(nid, name)
        self.fused: dict[int, list[Node]] = {}          # conv/matmul -> the nodes it absorbs
        self.absorbed: set[int] = set()
        self._find_patterns(fold_batchnorm)

    # -- names -------------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        return unique_name(base, self.taken)

    def base_name(self, node: Node) -> str:
        name = self.g.name_of(node.id)
        if name is not None and not name.startswith("%"):
            return name
        return f"{node.scope}/{node.op}" if node.scope else node.op

    def result_name(self, node: Node, layout: str) -> str:
        """The name the value of ``node`` gets in ``layout``: a graph output's own name in
        netlang's layout (reserved in ``write``), else its spec name (or scope/op), unique."""
        if node.id in self.output_of and layout == NHWC:
            return self.output_of[node.id]
        base = self.base_name(node)
        return self.unique(f"{base}_nchw" if node.id in self.output_of else base)

    # -- emitting -----------------------------------------------------------------------------
    def emit(self, op_type: str, inputs: list[str], attrs: dict | None = None,
             out: str | None = None, scope: str = "") -> str:
        base = f"{scope}/{op_type}" if scope else op_type
        out = out or self.unique(base)
        self.out.nodes.append(OnnxNode(op_type, list(inputs), [out], dict(attrs or {}),
                                       unique_name(base, self.node_names)))
        return out

    def result(self, node: Node, op_type: str, inputs: list[str], attrs: dict | None = None,
               layout: str = NHWC) -> str:
        layout = layout if node.type.rank == 4 else NHWC
        name = self.emit(op_type, inputs, attrs, self.result_name(node, layout), node.scope)
        self.define(node.id, name, layout)
        return name

    def define(self, nid: int, name: str, layout: str) -> None:
        self.views[(nid, layout)] = name
        self.home.setdefault(nid, layout)

    def constant(self, array: np.ndarray, base: str) -> str:
        name = self.unique(base)
        self.out.initializers[name] = np.asarray(array)
        return name

    def ints(self, values, base: str) -> str:
        return self.constant(np.asarray(values, np.int64), base)

    # -- values --------------------------------------------------------------------------------
    def is_constant(self, nid: int) -> bool:
        return self.g.nodes[nid].op in CONSTANTS

    def array(self, nid: int) -> np.ndarray:
        node = self.g.nodes[nid]
        dtype = node.type.dtype.numpy
        if node.op == "const":
            value = np.asarray(node.attrs["value"], dtype)
            return np.broadcast_to(value, tuple(node.type.shape)).copy() \
                if node.type.is_static else value
        if node.name not in self.arrays:
            raise UsageError(f"no value for the variable '{node.name}'",
                             hint="give a checkpoint that holds it (--checkpoint)")
        return np.asarray(self.arrays[node.name], dtype)

    def layout_of(self, nid: int) -> str:
        if self.is_constant(nid) or self.g.nodes[nid].type.rank != 4:
            return NHWC
        return self.home[nid]

    def value(self, nid: int, layout: str = NHWC) -> str:
        """The ONNX name of node ``nid``'s value in ``layout`` (a Transpose, or a re-laid
        initializer, the first time another layout is asked for)."""
        node = self.g.nodes[nid]
        if node.type.rank != 4:
            layout = NHWC
        key = (nid, layout)
        if key in self.views:
            return self.views[key]
        if self.is_constant(nid):
            arr = self.array(nid)
            name = self.constant(arr if layout == NHWC else arr.transpose(TO_NCHW),
                                 node.name or self.base_name(node))
        else:
            other = self.views[(nid, NCHW if layout == NHWC else NHWC)]
            perm = TO_NCHW if layout == NCHW else TO_NHWC
            name = self.emit("Transpose", [other], {"perm": perm},
                             self.result_name(node, layout), node.scope)
        self.views[key] = name
        return name

    def operand(self, nid: int, layout: str, dtype: DType | None = None) -> str:
        """``nid`` as an operand of an elementwise op computed in ``layout`` (a lower-rank
        operand broadcast against NCHW values is re-laid to match), cast to ``dtype``."""
        node = self.g.nodes[nid]
        t = node.type
        if layout == NCHW and 0 < t.rank < 4:
            if self.is_constant(nid):
                arr = self.array(nid).reshape((1,) * (4 - t.rank) + tuple(t.shape))
                name = self.constant(arr.transpose(TO_NCHW), self.base_name(node) + "_nchw")
            else:
                axes = self.ints(list(range(4 - t.rank)), "axes")
                wide = self.emit("Unsqueeze", [self.value(nid), axes], scope=node.scope)
                name = self.emit("Transpose", [wide], {"perm": TO_NCHW}, scope=node.scope)
        else:
            name = self.value(nid, layout)
        if dtype is not None and t.dtype is not dtype:
            name = self.emit("Cast", [name], {"to": dtype.numpy}, scope=node.scope)
        return name

    # -- the walk --------------------------------------------------------------------------------
    def write(self, names: list[str]) -> OnnxGraph:
        for name in names:
            self.taken.add(name)
        g = self.g
        for node in g:
            if node.op == "input":
                self.graph_input(node)
        for node in g:
            if node.op in CONSTANTS or node.op == "input" or node.id in self.absorbed:
                continue
            handler = HANDLERS.get(node.op)
            if handler is None:
                raise _unmapped(node)
            handler(self, node)
        for name in names:
            nid = g.outputs[name]
            node = g.nodes[nid]
            value = self.value(nid, NHWC)
            if value != name:
                self.emit("Identity", [value], out=name, scope=node.scope)
            self.out.outputs.append(OnnxValue(name, node.type.dtype.numpy,
                                              self.dims(node.type.shape)))
        return self.out

    def dims(self, shape: tuple) -> tuple:
        out = []
        for d in shape:
            if isinstance(d, Sym):
                out.append(self.batch if self.batch is not None and str(d) == "N"
                           else str(d))
            else:
                out.append(int(d))
        return tuple(out)

    def graph_input(self, node: Node) -> None:
        self.taken.add(node.name)
        self.define(node.id, node.name, NHWC)
        self.out.inputs.append(OnnxValue(node.name, node.type.dtype.numpy,
                                         self.dims(node.type.shape)))
        if node.name in self.defaults:      # an input with a default value: ONNX's way is an
            self.out.initializers[node.name] = np.asarray(   # initializer of the same name
                self.defaults[node.name], node.type.dtype.numpy)

    # -- patterns --------------------------------------------------------------------------------
    def _only_user(self, nid: int, op: str) -> Node | None:
        users = self.users[nid]
        if len(users) != 1 or nid in self.output_of:
            return None
        user = self.g.nodes[users[0]]
        return user if user.op == op else None

    def _bias_add(self, producer: Node) -> Node | None:
        add = self._only_user(producer.id, "add")
        if add is None:
            return None
        other = [i for i in add.inputs if i != producer.id]
        if len(other) != 1 or not self.is_constant(other[0]):
            return None
        bias = self.g.nodes[other[0]].type
        channels = producer.type.shape[-1]
        ok = (bias.rank == 1 and bias.shape[0] == channels and bias.dtype is producer.type.dtype
              and add.type == producer.type)
        return add if ok else None

    def _find_patterns(self, fold_batchnorm: bool) -> None:
        for node in self.g:
            if node.op == "conv2d" and self.is_constant(node.inputs[1]):
                chain = []
                last = node
                add = self._bias_add(node)
                if add is not None:
                    chain.append(add)
                    last = add
                bn = self._only_user(last.id, "batchnorm_apply") if fold_batchnorm else None
                if (bn is not None and bn.inputs[0] == last.id
                        and axis_of("batchnorm", bn.attrs["axis"], bn.type) == 3
                        and all(self.is_constant(i) for i in bn.inputs[1:])):
                    chain.append(bn)
                if chain:
                    self.fused[node.id] = chain
                    self.absorbed.update(n.id for n in chain)
            elif node.op == "matmul" and node.type.rank == 2:
                add = self._bias_add(node)
                if add is not None and all(self.g.type_of(i).rank == 2 for i in node.inputs):
                    self.fused[node.id] = [add]
                    self.absorbed.add(add.id)


def _unmapped(node: Node) -> ExportError:
    if node.op == "assign":
        return ExportError(f"'{node.attrs.get('variable')}' is assigned here; an ONNX model "
                           "holds no variables to store into", node.span,
                           hint="export the outputs that do not assign (--fetch NAME)")
    return ExportError(f"op '{node.op}' has no ONNX mapping", node.span,
                       hint="export other outputs with --fetch NAME, or write this part "
                            "with ops that map (netlang export --help lists them)")


# -- the handlers: one per IR op --------------------------------------------------------------

def _keep_layout(op_type: str, **attrs):
    """An elementwise op of one operand: computed in whatever layout its input has."""
    def handler(w: _Writer, n: Node) -> None:
        layout = w.layout_of(n.inputs[0])
        w.result(n, op_type, [w.operand(n.inputs[0], layout, n.type.dtype)],
                 {k: (n.attrs.get(k, v) if v is None else v) for k, v in attrs.items()}
                 if attrs else None, layout)
    return handler


def _with_alpha(op_type: str):
    def handler(w: _Writer, n: Node) -> None:
        layout = w.layout_of(n.inputs[0])
        w.result(n, op_type, [w.value(n.inputs[0], layout)],
                 {"alpha": float(n.attrs["alpha"])}, layout)
    return handler


def _elementwise_layout(w: _Writer, n: Node) -> str:
    """NCHW when a 4-D result has a 4-D operand already held NCHW, else NHWC."""
    if n.type.rank == 4 and any(w.g.type_of(i).rank == 4 and w.layout_of(i) == NCHW
                                for i in n.inputs):
        return NCHW
    return NHWC


def _binary(op_type: str, compare: bool = False):
    def handler(w: _Writer, n: Node) -> None:
        layout = _elementwise_layout(w, n)
        if compare:
            a, b = (w.g.type_of(i).dtype for i in n.inputs)
            dtype = promote(a, b)
        else:
            dtype = n.type.dtype
        w.result(n, op_type, [w.operand(i, layout, dtype) for i in n.inputs], None, layout)
    return handler


def _select(w: _Writer, n: Node) -> None:
    layout = _elementwise_layout(w, n)
    c, a, b = n.inputs
    w.result(n, "Where", [w.operand(c, layout, DType.bool), w.operand(a, layout, n.type.dtype),
                          w.operand(b, layout, n.type.dtype)], None, layout)


def _square(w: _Writer, n: Node) -> None:
    layout = w.layout_of(n.inputs[0])
    x = w.value(n.inputs[0], layout)
    w.result(n, "Mul", [x, x], None, layout)


def _rsqrt(w: _Writer, n: Node) -> None:
    layout = w.layout_of(n.inputs[0])
    root = w.emit("Sqrt", [w.value(n.inputs[0], layout)], scope=n.scope)
    w.result(n, "Reciprocal", [root], None, layout)


def _gelu(w: _Writer, n: Node) -> None:
    """ONNX's Gelu from opset 20; before, its formula (erf form, or the tanh form)."""
    layout = w.layout_of(n.inputs[0])
    x = w.value(n.inputs[0], layout)
    approximate = bool(n.attrs.get("approximate"))
    if w.opset >= 20:
        w.result(n, "Gelu", [x], {"approximate": "tanh" if approximate else "none"}, layout)
        return
    dtype = n.type.dtype.numpy

    def c(value, base):
        return w.constant(np.asarray(value, dtype), base)

    if approximate:
        cube = w.emit("Mul", [w.emit("Mul", [x, x], scope=n.scope), x], scope=n.scope)
        inner = w.emit("Add", [x, w.emit("Mul", [cube, c(0.044715, "gelu_k")],
                                          scope=n.scope)], scope=n.scope)
        curve = w.emit("Tanh", [w.emit("Mul", [inner, c(0.7978845608028654, "gelu_s")],
                                       scope=n.scope)], scope=n.scope)
    else:
        curve = w.emit("Erf", [w.emit("Mul", [x, c(0.7071067811865476, "gelu_s")],
                                      scope=n.scope)], scope=n.scope)
    half = w.emit("Mul", [x, c(0.5, "half")], scope=n.scope)
    w.result(n, "Mul", [half, w.emit("Add", [curve, c(1.0, "one")], scope=n.scope)], None,
             layout)


def _pow(w: _Writer, n: Node) -> None:
    layout = w.layout_of(n.inputs[0])
    exponent = w.constant(np.asarray(n.attrs["exponent"], n.type.dtype.numpy), "exponent")
    w.result(n, "Pow", [w.value(n.inputs[0], layout), exponent], None, layout)


def _cast(w: _Writer, n: Node) -> None:
    layout = w.layout_of(n.inputs[0])
    w.result(n, "Cast", [w.value(n.inputs[0], layout)], {"to": n.type.dtype.numpy}, layout)


def _matmul(w: _Writer, n: Node) -> None:
    a, b = n.inputs
    ta, tb = bool(n.attrs.get("transpose_a")), bool(n.attrs.get("transpose_b"))
    chain = w.fused.get(n.id)
    if chain:                                  # dense: x @ W + b as one Gemm
        add = chain[0]
        bias = next(i for i in add.inputs if i != n.id)
        w.result(add, "Gemm", [w.value(a), w.value(b), w.value(bias)],
                 {"transA": int(ta), "transB": int(tb)})
        return

    def side(nid: int, flip: bool) -> str:
        if not flip:
            return w.value(nid)
        rank = w.g.type_of(nid).rank
        perm = list(range(rank - 2)) + [rank - 1, rank - 2]
        if w.is_constant(nid):
            return w.constant(w.array(nid).transpose(perm), w.base_name(w.g.nodes[nid]) + "_T")
        return w.emit("Transpose", [w.value(nid)], {"perm": perm}, scope=n.scope)

    w.result(n, "MatMul", [side(a, ta), side(b, tb)])


def _padding(gh, gw) -> dict:
    """ONNX's pads; over a symbolic size with a stride (SAME's padding depends on the size)
    auto_pad=SAME_UPPER, which pads as TensorFlow's SAME does (the odd one at the end)."""
    if None in (gh.before, gh.after, gw.before, gw.after):
        return {"auto_pad": "SAME_UPPER"}
    return {"pads": [gh.before, gw.before, gh.after, gw.after]}


def _conv2d(w: _Writer, n: Node) -> None:
    x, f = n.inputs
    x_type, f_type = w.g.type_of(x), w.g.type_of(f)
    kh, kw = f_type.shape[:2]
    stride, dilation = pair("conv2d", "stride", n.attrs["stride"]), pair(
        "conv2d", "dilation", n.attrs["dilation"])
    gh, gw = window_geometry("conv2d", x_type.shape[1:3], (kh, kw), stride, dilation,
                             n.attrs["padding"], "kernel")
    attrs = {"kernel_shape": [kh, kw], "strides": list(stride), "dilations": list(dilation),
             **_padding(gh, gw)}
    if n.attrs.get("groups") not in (None, 1):
        attrs["group"] = int(n.attrs["groups"])     # the filter [cout, cin/group, kh, kw]
    chain = w.fused.get(n.id, [])
    last = chain[-1] if chain else n
    if w.is_constant(f):
        weights = w.array(f).transpose(FILTER_TO_OIHW)
        bias = None
        if chain and chain[0].op == "add":
            bias = w.array(next(i for i in chain[0].inputs if i != n.id))
        if chain and chain[-1].op == "batchnorm_apply":
            weights, bias = _fold_batchnorm(w, chain[-1], weights, bias)
        fname = w.g.nodes[f].name or w.base_name(w.g.nodes[f])
        inputs = [w.value(x, NCHW), w.constant(weights.astype(f_type.dtype.numpy), fname)]
        if bias is not None:
            bname = (w.g.nodes[next(i for i in chain[0].inputs if i != n.id)].name
                     if chain[0].op == "add" else None) or f"{n.scope or 'conv'}/b"
            inputs.append(w.constant(bias.astype(f_type.dtype.numpy), bname))
    else:
        weights = w.emit("Transpose", [w.value(f)], {"perm": FILTER_TO_OIHW}, scope=n.scope)
        inputs = [w.value(x, NCHW), weights]
    w.result(last, "Conv", inputs, attrs, NCHW)


def _conv2d_transpose(w: _Writer, n: Node) -> None:
    """ConvTranspose: netlang's is the input gradient of the conv2d from its output back to
    its input, so that conv's pads are ONNX's, and output_padding makes up the rest of the
    output (a stride that steps past the last window)."""
    x, f = n.inputs
    x_type, f_type = w.g.type_of(x), w.g.type_of(f)
    _, gh, gw = transpose_geometry("conv2d_transpose", x_type.shape, f_type.shape,
                                   n.attrs["stride"], n.attrs["padding"], n.attrs["dilation"])
    extra = [a.size - (a.stride * (size - 1) + a.span - a.before - a.after)
             for a, size in zip((gh, gw), x_type.shape[1:3])]
    if any(not 0 <= e < max(a.stride, a.dilation) for e, a in zip(extra, (gh, gw))):
        raise ExportError(f"conv2d_transpose to {n.type} has no ONNX ConvTranspose "
                          f"(output_padding {extra} out of range)", n.span)
    attrs = {"kernel_shape": [gh.k, gw.k], "strides": [gh.stride, gw.stride],
             "dilations": [gh.dilation, gw.dilation],
             "pads": [gh.before, gw.before, gh.after, gw.after]}
    if any(extra):
        attrs["output_padding"] = extra
    if w.is_constant(f):                # [kh,kw,cout,cin] -> ONNX's [cin,cout,kh,kw]
        fname = w.g.nodes[f].name or w.base_name(w.g.nodes[f])
        weights = w.constant(w.array(f).transpose(TRANSPOSED_FILTER_TO_IOHW), fname)
    else:
        weights = w.emit("Transpose", [w.value(f)], {"perm": TRANSPOSED_FILTER_TO_IOHW},
                         scope=n.scope)
    w.result(n, "ConvTranspose", [w.value(x, NCHW), weights], attrs, NCHW)


def _fold_batchnorm(w: _Writer, bn: Node, weights: np.ndarray, bias: np.ndarray | None):
    """Conv weights [cout,cin,kh,kw] and bias with the batchnorm after them folded in:
    ``bn(conv(x) + b) = conv(x) * s + (b - mean) * s + beta`` with
    ``s = gamma / sqrt(var + eps)``, computed in float64."""
    mean, var, gamma, beta = (w.array(i).astype(np.float64) for i in bn.inputs[1:])
    scale = gamma / np.sqrt(var + float(bn.attrs["epsilon"]))
    folded = weights.astype(np.float64) * scale[:, None, None, None]
    b = np.zeros_like(mean) if bias is None else bias.astype(np.float64)
    return folded, (b - mean) * scale + beta


def _pool(op_type: str, **extra):
    def handler(w: _Writer, n: Node) -> None:
        x = n.inputs[0]
        window = pair(n.op, "window", n.attrs["window"])
        stride = window if n.attrs.get("stride") is None else pair(n.op, "stride",
                                                                  n.attrs["stride"])
        gh, gw = pool_geometry(n.op, w.g.type_of(x).shape[1:3], window, stride,
                               n.attrs["padding"], n.attrs.get("dilation"))
        attrs = {"kernel_shape": list(window), "strides": list(stride), **_padding(gh, gw),
                 **extra}
        if (gh.dilation, gw.dilation) != (1, 1):
            if op_type == "AveragePool" and w.opset < 19:
                raise ExportError(f"a dilated avgpool needs ONNX opset 19 or newer (AveragePool "
                                  f"takes dilations from 19), not {w.opset}", n.span,
                                  hint="export with --opset 19")
            attrs["dilations"] = [gh.dilation, gw.dilation]
        w.result(n, op_type, [w.value(x, NCHW)], attrs, NCHW)
    return handler


def _batchnorm(w: _Writer, n: Node) -> None:
    x, mean, var, gamma, beta = n.inputs
    rank = n.type.rank
    axis = axis_of("batchnorm", n.attrs["axis"], n.type)
    if not ((rank == 4 and axis == 3) or (rank == 2 and axis == 1)):
        raise ExportError(f"batchnorm over axis {axis} of a rank-{rank} value has no ONNX "
                          "mapping here (BatchNormalization normalizes channels)", n.span)
    w.result(n, "BatchNormalization",
             [w.value(x, NCHW), w.value(gamma), w.value(beta), w.value(mean), w.value(var)],
             {"epsilon": float(n.attrs["epsilon"])}, NCHW)


def _gather(w: _Writer, n: Node) -> None:
    x, indices = n.inputs
    axis = axis_of("gather", n.attrs["axis"], w.g.type_of(x))
    w.result(n, "Gather", [w.value(x), w.value(indices)], {"axis": axis})


def _top_k(index: int):
    """top_k (values, TopK's output 0) or top_k_indices (output 1): each its own TopK."""
    def handler(w: _Writer, n: Node) -> None:
        x = n.inputs[0]
        axis = axis_of("top_k", n.attrs["axis"], w.g.type_of(x))
        k = w.ints([int(n.attrs["k"])], "k")
        name = w.result_name(n, NHWC)
        other = w.unique(f"{name}_unused")
        outputs = [name, other] if index == 0 else [other, name]
        w.out.nodes.append(OnnxNode("TopK", [w.value(x), k], outputs,
                                    {"axis": axis, "largest": 1, "sorted": 1},
                                    unique_name(f"{n.scope}/TopK" if n.scope else "TopK",
                                                w.node_names)))
        w.define(n.id, name, NHWC)
    return handler


def _tile(w: _Writer, n: Node) -> None:
    w.result(n, "Tile", [w.value(n.inputs[0]), w.ints(list(n.attrs["reps"]), "repeats")])


def _expand(w: _Writer, n: Node) -> None:
    w.result(n, "Expand", [w.value(n.inputs[0]), w.ints(list(n.attrs["shape"]), "shape")])


def _lrn(w: _Writer, n: Node) -> None:
    """ONNX's LRN normalizes axis 1: netlang's last axis of an NHWC image (NCHW here)."""
    if n.type.rank != 4:
        raise ExportError(f"lrn over a rank-{n.type.rank} value has no ONNX mapping here "
                          "(LRN normalizes the channels of an image)", n.span)
    attrs = {"size": int(n.attrs["size"]), "alpha": float(n.attrs["alpha"]),
             "beta": float(n.attrs["beta"]), "bias": float(n.attrs["bias"])}
    w.result(n, "LRN", [w.value(n.inputs[0], NCHW)], attrs, NCHW)


def _reshape(w: _Writer, n: Node) -> None:
    x = n.inputs[0]
    in_shape, out_shape = w.g.type_of(x).shape, n.type.shape
    target = []
    for i, d in enumerate(out_shape):
        if isinstance(d, int):
            target.append(d)
        elif i < len(in_shape) and in_shape[i] == d:
            target.append(0)                            # copy this dim from the input
        else:
            target.append(-1)
    if target.count(-1) > 1:
        raise ExportError(f"reshape to {n.type} has more than one dimension ONNX cannot "
                          "tell from the input", n.span)
    w.result(n, "Reshape", [w.value(x), w.ints(target, "shape")])


def _transpose(w: _Writer, n: Node) -> None:
    rank = n.type.rank
    perm = n.attrs.get("perm")
    perm = list(reversed(range(rank))) if perm is None else [p % rank for p in perm]
    w.result(n, "Transpose", [w.value(n.inputs[0])], {"perm": perm})


def _axis_op(op_type: str):
    def handler(w: _Writer, n: Node) -> None:
        x = n.inputs[0]
        axis = axis_of(n.op, n.attrs["axis"], w.g.type_of(x))
        attrs = {"axis": axis}
        if op_type in ("ArgMax", "ArgMin"):
            attrs.update(keepdims=0, select_last_index=int(bool(
                n.attrs.get("select_last_index"))))
        w.result(n, op_type, [w.value(x)], attrs)
    return handler


def _reduce(op_type: str):
    def handler(w: _Writer, n: Node) -> None:
        x = n.inputs[0]
        t = w.g.type_of(x)
        axes = list(axes_of(n.op, n.attrs.get("axis"), t))
        keep = bool(n.attrs.get("keepdims"))
        layout = w.layout_of(x)
        if layout == NCHW:
            left = [a for a in range(4) if a not in axes]
            # without keepdims the kept axes must stay in netlang's order
            if not keep and 3 in left and (1 in left or 2 in left):
                layout = NHWC
            else:
                axes = sorted(TO_NCHW.index(a) for a in axes)
        name = w.operand(x, layout, n.type.dtype if n.op == "mean" else None)
        attrs = {"keepdims": int(keep)}
        inputs = [name]
        if op_type == "ReduceSum" or w.opset >= 18:
            inputs.append(w.ints(axes, "axes"))
        else:
            attrs["axes"] = axes
        w.result(n, op_type, inputs, attrs, layout if keep else NHWC)
    return handler


def _concat(w: _Writer, n: Node) -> None:
    axis = axis_of("concat", n.attrs["axis"], n.type)
    w.result(n, "Concat", [w.operand(i, NHWC, n.type.dtype) for i in n.inputs],
             {"axis": axis})


def _pad(w: _Writer, n: Node) -> None:
    paddings = [tuple(p) for p in n.attrs["paddings"]]
    pads = [p[0] for p in paddings] + [p[1] for p in paddings]
    value = w.constant(np.asarray(n.attrs.get("value", 0.0), n.type.dtype.numpy), "pad_value")
    w.result(n, "Pad", [w.value(n.inputs[0]), w.ints(pads, "pads"), value],
             {"mode": "constant"})


def _one_hot(w: _Writer, n: Node) -> None:
    depth = w.ints(int(n.attrs["depth"]), "depth")
    values = w.constant(np.asarray([0, 1], n.type.dtype.numpy), "one_hot_values")
    w.result(n, "OneHot", [w.value(n.inputs[0]), depth, values], {"axis": -1})


def _resize(w: _Writer, n: Node) -> None:
    """Bilinear as ONNX Resize with the same coordinate mode (TF 1.x's is asymmetric); nearest
    as Resize too where ONNX's position (divided by out / in) picks the same pixels as
    netlang's (multiplied by in / out), and otherwise (and for TF's table-based bicubic) as
    netlang computes it: two MatMuls with the interpolation matrices, exact to rounding."""
    x = n.inputs[0]
    _, h, w_in, _ = w.g.type_of(x).shape
    _, oh, ow, _ = n.type.shape
    method = str(n.attrs.get("method", "bilinear")).lower()
    coords, rounding = resize_modes("resize", method, n.attrs.get("coordinates"),
                                    n.attrs.get("nearest_mode"))
    if method == "bilinear" or (method == "nearest" and all(
            nearest_agrees(a, b, coords, rounding) for a, b in ((h, oh), (w_in, ow)))):
        # sizes, not scales: ONNX's out = floor(in * scale) in float32 can lose one
        # (5 * 1.8 = 8.99...); N is dynamic, so sizes = Shape(x)[:2] ++ [oh, ow]
        image = w.value(x, NCHW)
        shape = w.emit("Shape", [image], scope=n.scope)
        lead = w.emit("Slice", [shape, w.ints([0], "starts"), w.ints([2], "ends")],
                      scope=n.scope)
        sizes = w.emit("Concat", [lead, w.ints([oh, ow], "size")], {"axis": 0},
                       scope=n.scope)
        attrs = {"mode": "linear" if method == "bilinear" else "nearest",
                 "coordinate_transformation_mode": coords}
        if method == "nearest":
            attrs["nearest_mode"] = rounding
        w.result(n, "Resize", [image, "", "", sizes], attrs, NCHW)
        return
    dtype = n.type.dtype.numpy
    rows = w.constant(interpolation_matrix(h, oh, method, coords, rounding).astype(dtype),
                      f"{method}_rows")
    cols = w.constant(interpolation_matrix(w_in, ow, method, coords, rounding).T.astype(dtype),
                      f"{method}_cols")
    tall = w.emit("MatMul", [rows, w.value(x, NCHW)], scope=n.scope)     # [N,C,OH,W]
    w.result(n, "MatMul", [tall, cols], None, NCHW)                      # [N,C,OH,OW]


HANDLERS = {
    "relu": _keep_layout("Relu"), "sigmoid": _keep_layout("Sigmoid"),
    "tanh": _keep_layout("Tanh"), "exp": _keep_layout("Exp"), "log": _keep_layout("Log"),
    "sqrt": _keep_layout("Sqrt"), "neg": _keep_layout("Neg"), "abs": _keep_layout("Abs"),
    "sign": _keep_layout("Sign"), "sin": _keep_layout("Sin"), "cos": _keep_layout("Cos"),
    "floor": _keep_layout("Floor"), "ceil": _keep_layout("Ceil"),
    "round": _keep_layout("Round"), "erf": _keep_layout("Erf"), "gelu": _gelu,
    "identity": _keep_layout("Identity"), "stop_gradient": _keep_layout("Identity"),
    "elu": _with_alpha("Elu"), "leaky_relu": _with_alpha("LeakyRelu"),
    "square": _square, "rsqrt": _rsqrt, "pow": _pow, "cast": _cast,
    "add": _binary("Add"), "sub": _binary("Sub"), "mul": _binary("Mul"),
    "div": _binary("Div"), "maximum": _binary("Max"), "minimum": _binary("Min"),
    "greater": _binary("Greater", True), "less": _binary("Less", True),
    "equal": _binary("Equal", True), "select": _select,
    "matmul": _matmul, "conv2d": _conv2d, "conv2d_transpose": _conv2d_transpose,
    "maxpool": _pool("MaxPool"), "avgpool": _pool("AveragePool", count_include_pad=0),
    "batchnorm_apply": _batchnorm, "lrn": _lrn,
    "gather": _gather, "top_k": _top_k(0), "top_k_indices": _top_k(1), "tile": _tile,
    "expand": _expand,
    "reshape": _reshape, "transpose": _transpose, "concat": _concat, "pad": _pad,
    "softmax": _axis_op("Softmax"), "log_softmax": _axis_op("LogSoftmax"),
    "argmax": _axis_op("ArgMax"), "argmin": _axis_op("ArgMin"),
    "sum": _reduce("ReduceSum"), "mean": _reduce("ReduceMean"), "max": _reduce("ReduceMax"),
    "min": _reduce("ReduceMin"), "prod": _reduce("ReduceProd"),
    "one_hot": _one_hot, "resize": _resize,
}


def mapped_ops() -> list[str]:
    """The IR ops ``export`` translates, for help texts and the README."""
    return sorted(HANDLERS)
