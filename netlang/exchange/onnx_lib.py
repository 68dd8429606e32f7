"""The one module that imports ``onnx`` and ``onnxruntime`` (the extra ``netlang[onnx]``).

It turns an ``OnnxGraph`` into a checked ``ModelProto`` and bytes, reads a model file back
into an ``OnnxGraph``, and runs a model with onnxruntime (the tests' and tools' reference).
Without the packages, every entry point raises one ``UsageError`` saying what to install.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from netlang.errors import UsageError
from netlang.exchange.graph import OnnxGraph, OnnxNode, OnnxValue

INSTALL_HINT = "install the ONNX extra: pip install 'netlang[onnx]' (onnx and onnxruntime)"


def _missing(name: str) -> UsageError:
    return UsageError(f"this needs the '{name}' package, which is not installed",
                      hint=INSTALL_HINT)


def _onnx():
    """The onnx package, imported the first time it is needed (it takes ~0.7 s)."""
    try:
        import onnx
        import onnx.numpy_helper
        import onnx.shape_inference
    except ImportError:
        raise _missing("onnx") from None
    return onnx


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise _missing("onnxruntime") from None
    return onnxruntime


def available() -> bool:
    """Whether both packages of the ONNX extra are installed."""
    try:
        _onnx()
        _onnxruntime()
    except UsageError:
        return False
    return True


def max_opset() -> int:
    """The newest default-domain opset the installed onnx package knows."""
    return int(_onnx().defs.onnx_opset_version())


def _attr(value):
    """An attribute value as onnx.helper takes it: a NumPy dtype (Cast's ``to``) as the
    TensorProto type number, an array as a tensor."""
    if isinstance(value, np.dtype):
        return _onnx().helper.np_dtype_to_tensor_dtype(value)
    if isinstance(value, type) and issubclass(value, np.generic):
        return _onnx().helper.np_dtype_to_tensor_dtype(np.dtype(value))
    if isinstance(value, np.ndarray):
        return _onnx().numpy_helper.from_array(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def to_proto(graph: OnnxGraph):
    """The ``ModelProto`` of ``graph``, with the lowest IR version its opset needs (so older
    runtimes read it too)."""
    onnx = _onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper

    def value_info(v: OnnxValue):
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(v.dtype))
        return helper.make_tensor_value_info(v.name, elem, list(v.shape))

    nodes = [helper.make_node(n.op_type, n.inputs, n.outputs, name=n.name or None,
                              **{k: _attr(v) for k, v in n.attrs.items()})
             for n in graph.nodes]
    inits = [numpy_helper.from_array(np.ascontiguousarray(a), name)
             for name, a in graph.initializers.items()]
    body = helper.make_graph(nodes, graph.name, [value_info(v) for v in graph.inputs],
                             [value_info(v) for v in graph.outputs], inits,
                             doc_string=graph.doc or None)
    opsets = [helper.make_opsetid("", graph.opset)]
    model = helper.make_model(body, opset_imports=opsets, producer_name="netlang",
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(model, graph.metadata)
    return model


def checked_bytes(graph: OnnxGraph) -> bytes:
    """The serialized model after ``onnx.checker`` (full check) and strict shape inference
    pass; the inferred shapes are kept in it (Netron shows them on every edge).  A failure
    is a bug in the exporter, raised as ``ValueError`` with the checker's message."""
    onnx = _onnx()
    model = to_proto(graph)
    try:
        onnx.checker.check_model(model, full_check=True)
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                  data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ValueError(f"the exported ONNX model does not check: {err}") from err
    return model.SerializeToString()


def run(model: bytes | str | Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of the model for ``feeds``, computed by onnxruntime on the CPU."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = str(model) if isinstance(model, (str, Path)) else model
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def read(path: str | Path | bytes) -> OnnxGraph:
    """An ONNX file (or a serialized model) as an ``OnnxGraph``: default-domain opset,
    nodes, initializers with their values, inputs that are not initializers, outputs, and
    every value's type that shape inference finds."""
    onnx = _onnx()
    from google.protobuf.message import DecodeError  # onnx's protobuf: what a bad file raises
    if isinstance(path, bytes):
        model, path = onnx.load_from_string(path), Path("model.onnx")
    else:
        try:
            model = onnx.load(str(path))
        except OSError as err:
            raise UsageError(f"cannot read '{path}': {err.strerror or err}") from None
        except (DecodeError, ValueError) as err:
            raise UsageError(f"'{path}' is not an ONNX model ({type(err).__name__}: {err})"
                             ) from None
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except onnx.shape_inference.InferenceError:
        pass                       # shapes stay as declared; import says what it misses
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=1)
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    nodes = []
    for n in g.node:
        attrs = {}
        for a in n.attribute:
            v = helper.get_attribute_value(a)
            if isinstance(v, onnx.TensorProto):
                v = numpy_helper.to_array(v)
            elif isinstance(v, bytes):
                v = v.decode()
            elif isinstance(v, list) and v and isinstance(v[0], bytes):
                v = [s.decode() for s in v]
            attrs[a.name] = v
        domain = n.domain if n.domain not in ("", "ai.onnx") else ""
        op_type = f"{domain}.{n.op_type}" if domain else n.op_type
        nodes.append(OnnxNode(op_type, list(n.input), list(n.output), attrs, n.name))

    def value(v) -> OnnxValue:
        if v.type.WhichOneof("value") != "tensor_type":     # a sequence, map or optional
            return OnnxValue(v.name, None, ())
        t = v.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)) \
                if t.elem_type else np.dtype(np.float32)
        except (KeyError, TypeError):      # a type NumPy has no dtype for (float8, int4)
            dtype = None
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in t.shape.dim)
        return OnnxValue(v.name, dtype, dims)

    inputs = [value(v) for v in g.input if v.name not in inits]
    outputs = [value(v) for v in g.output]
    types = {v.name: v for v in [*map(value, g.value_info), *inputs, *outputs]}
    metadata = {p.key: p.value for p in model.metadata_props}
    return OnnxGraph(g.name or Path(path).stem, opset, nodes, inputs, outputs, inits,
                     g.doc_string, metadata, types)
