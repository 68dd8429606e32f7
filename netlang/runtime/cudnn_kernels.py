"""Convolutions on the GPU through NVIDIA's cuDNN frontend (the ``cudnn`` Python module of
``nvidia-cudnn-frontend``; CuPy 14 dropped its own cuDNN wrappers).

Each conv call of a program gets one cuDNN graph, built when the executor binds the program
(``validate``, ``build_operation_graph``, heuristics A then FALLBACK, ``check_support``,
``build_plans``) and executed every step over the CuPy arrays' device pointers with a
workspace allocated once:

* ``conv2d`` / ``conv2d_bias`` (the conv_bias pass's op, relu flag included): ``conv_fprop``,
  then ``bias`` and ``relu`` nodes in the same graph, which cuDNN fuses into one kernel;
* ``conv2d_backprop_input``: ``conv_dgrad``; ``conv2d_backprop_filter``: ``conv_wgrad``;
* ``matmul`` of 2-D arrays (transposes by strides): cuDNN's matmul, which a CUDA graph can
  capture where CuPy's cuBLAS calls cannot (``run.capturable``).

cuDNN names every tensor's dims in NCHW order and gives its memory by strides, so netlang's
NHWC images are dims ``[N, C, H, W]`` with strides ``[H*W*C, 1, W*C, C]``, no copy.  Its
filters must be KRSC (or KCRS): netlang's ``[kh, kw, cin, cout]`` is copied into
``[cout, kh, kw, cin]`` per call, and a filter gradient back (both a few KB).  Padding is
TensorFlow's, asymmetric where SAME needs it (``pre_padding`` / ``post_padding``).
float32 and float16 are taken (compute in float32); float64, grouped convolutions and
shapes cuDNN does not support decline (the factory returns None: CuPy's GEMM path runs).
TF32 stays off unless asked (``NVIDIA_TF32_OVERRIDE=0`` at import; ``precision tf32`` is for
the GPU issue's follow-up).

``cudnn`` is imported by runtime/backend.py only (``import_cudnn``); this module gets it
from there, and the tests hand it a NumPy stand-in that reads the same dims and strides.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from netlang.errors import NetlangError
from netlang.ops.conv import CONV_ATTRS, Axis, window_geometry

DATA_TYPES = {"float32": "FLOAT", "float16": "HALF"}


def nhwc(shape: tuple) -> tuple[list[int], list[int]]:
    """cuDNN's (dims, strides) of a C-contiguous NHWC array."""
    n, h, w, c = shape
    return [n, c, h, w], [h * w * c, 1, w * c, c]


def krsc(w_shape: tuple) -> tuple[list[int], list[int]]:
    """cuDNN's (dims, strides) of netlang's filter ``[kh, kw, cin, cout]`` copied to KRSC."""
    kh, kw, cin, cout = w_shape
    return [cout, cin, kh, kw], [kh * kw * cin, 1, kw * cin, cin]


def built(cudnn, xp, graph) -> tuple:
    """``graph`` with its plans built (heuristics A, then FALLBACK), and its workspace."""
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    return graph, xp.empty(max(int(graph.get_workspace_size()), 1), dtype=np.uint8)


class ConvGraph:
    """One convolution's cuDNN graph (``kind``: fprop, dgrad or wgrad), built now."""

    def __init__(self, cudnn, handle, xp, kind: str, x_shape: tuple, w_shape: tuple,
                 gh: Axis, gw: Axis, dtype: np.dtype, bias: bool = False, relu: bool = False):
        self.cudnn, self.handle, self.xp, self.kind = cudnn, handle, xp, kind
        self.x_shape, self.w_shape = tuple(x_shape), tuple(w_shape)
        self.y_shape = (x_shape[0], gh.out, gw.out, w_shape[3])
        io = getattr(cudnn.data_type, DATA_TYPES[np.dtype(dtype).name])
        graph = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                              compute_data_type=cudnn.data_type.FLOAT, handle=handle)
        geometry = {"pre_padding": [gh.before, gw.before], "post_padding": [gh.after, gw.after],
                    "stride": [gh.stride, gw.stride], "dilation": [gh.dilation, gw.dilation]}

        def tensor(name: str, layout: tuple) -> object:
            dims, strides = layout
            return graph.tensor(name=name, dim=dims, stride=strides, data_type=io)

        if kind == "fprop":
            self.x, self.w = tensor("x", nhwc(x_shape)), tensor("w", krsc(w_shape))
            out = graph.conv_fprop(image=self.x, weight=self.w, name="conv", **geometry)
            cout = w_shape[3]
            self.b = tensor("b", ([1, cout, 1, 1], [cout, 1, cout, cout])) if bias else None
            if bias:
                out = graph.bias(name="bias", input=out, bias=self.b)
            if relu:
                out = graph.relu(name="relu", input=out)
            layout = nhwc(self.y_shape)
        elif kind == "dgrad":
            self.dy, self.w = tensor("dy", nhwc(self.y_shape)), tensor("w", krsc(w_shape))
            out = graph.conv_dgrad(loss=self.dy, filter=self.w, name="dgrad", **geometry)
            layout = nhwc(self.x_shape)
        else:
            self.x, self.dy = tensor("x", nhwc(x_shape)), tensor("dy", nhwc(self.y_shape))
            out = graph.conv_wgrad(image=self.x, loss=self.dy, name="wgrad", **geometry)
            layout = krsc(w_shape)
        self.out = out.set_output(True).set_data_type(io).set_dim(layout[0]).set_stride(
            layout[1])
        self.graph, self.workspace = built(cudnn, xp, graph)

    def execute(self, pack: dict) -> None:
        """Run the graph on ``pack`` (graph tensor -> C-contiguous CuPy array), on the current
        stream (a step replayed as a CUDA graph captures its own)."""
        if hasattr(self.cudnn, "set_stream"):
            self.cudnn.set_stream(handle=self.handle,
                                  stream=self.xp.cuda.get_current_stream().ptr)
        self.graph.execute({t: device_pointer(a) for t, a in pack.items()},
                           device_pointer(self.workspace), handle=self.handle)


def device_pointer(array) -> int:
    """The address of an array's first element: CuPy's ``__cuda_array_interface__`` (NumPy's
    ``__array_interface__`` for the tests' stand-in)."""
    interface = getattr(array, "__cuda_array_interface__", None) or array.__array_interface__
    return int(interface["data"][0])


class MatmulGraph:
    """``a @ b`` of 2-D arrays (either transposed by its strides, no copy) as a cuDNN graph:
    unlike cuBLAS through CuPy, it can be captured into a step's CUDA graph."""

    def __init__(self, cudnn, handle, xp, a_shape: tuple, b_shape: tuple, transpose_a: bool,
                 transpose_b: bool, dtype: np.dtype):
        self.cudnn, self.handle, self.xp = cudnn, handle, xp
        m, k = a_shape[::-1] if transpose_a else a_shape
        n = b_shape[0] if transpose_b else b_shape[1]
        self.out_shape = (m, n)
        io = getattr(cudnn.data_type, DATA_TYPES[np.dtype(dtype).name])
        graph = cudnn.pygraph(io_data_type=io, intermediate_data_type=cudnn.data_type.FLOAT,
                              compute_data_type=cudnn.data_type.FLOAT, handle=handle)

        def operand(name: str, rows: int, cols: int, transposed: bool):
            strides = [rows * cols, 1, rows] if transposed else [rows * cols, cols, 1]
            return graph.tensor(name=name, dim=[1, rows, cols], stride=strides, data_type=io)

        self.a, self.b = operand("a", m, k, transpose_a), operand("b", k, n, transpose_b)
        out = graph.matmul(name="matmul", A=self.a, B=self.b)
        self.out = out.set_output(True).set_data_type(io).set_dim([1, m, n]).set_stride(
            [m * n, n, 1])
        self.graph, self.workspace = built(cudnn, xp, graph)

    execute = ConvGraph.execute


def to_krsc(xp, w):
    return xp.ascontiguousarray(xp.transpose(w, (3, 0, 1, 2)))


def _geometry(x_shape: tuple, w_shape: tuple, attrs: dict, dtypes) -> tuple | None:
    """(gh, gw) of a conv cuDNN can take here, else None (the factory declines)."""
    a = {**CONV_ATTRS, **attrs}
    if (any(np.dtype(d).name not in DATA_TYPES for d in dtypes)
            or len({np.dtype(d) for d in dtypes}) != 1 or a.get("groups") not in (None, 1)
            or len(x_shape) != 4 or len(w_shape) != 4 or x_shape[3] != w_shape[2]
            or 0 in x_shape or 0 in w_shape):
        return None
    try:
        return window_geometry("conv2d", tuple(x_shape[1:3]), tuple(w_shape[:2]),
                               a["stride"], a["dilation"], a["padding"])
    except NetlangError:
        return None


def cudnn_factories(cudnn, xp) -> dict[str, tuple]:
    """op name -> the factory of its cuDNN run, for the GPU backend (``Backend.factories``):
    ``run(*arrays)`` for the executor, or None where cuDNN cannot take the call."""
    handle = cudnn.create_handle()

    def build(*args, **kwargs) -> ConvGraph | None:
        try:
            return ConvGraph(cudnn, handle, xp, *args, **kwargs)
        except Exception:  # noqa: BLE001 - cuDNN's "not supported" has several types
            return None

    def forward(shapes, dtypes, attrs, _state, bias: bool = False) -> Callable | None:
        geo = _geometry(shapes[0], shapes[1], attrs, dtypes)
        if geo is None or (bias and tuple(shapes[2]) != (shapes[1][3],)):
            return None
        plan = build("fprop", shapes[0], shapes[1], *geo, dtypes[0], bias=bias,
                     relu=bool(bias and attrs.get("relu")))
        if plan is None:
            return None

        def run(x, w, b=None):
            y = xp.empty(plan.y_shape, dtype=x.dtype)
            pack = {plan.x: xp.ascontiguousarray(x), plan.w: to_krsc(xp, w), plan.out: y}
            if plan.b is not None:
                pack[plan.b] = xp.ascontiguousarray(b)
            plan.execute(pack)
            return y
        return run

    def conv2d_bias(shapes, dtypes, attrs, state):
        return forward(shapes, dtypes, attrs, state, bias=True)

    def backprop_input(shapes, dtypes, attrs, _state) -> Callable | None:
        geo = _geometry(shapes[2], shapes[1], attrs, dtypes[:2])
        plan = None if geo is None else build("dgrad", shapes[2], shapes[1], *geo, dtypes[0])
        if plan is None or tuple(shapes[0]) != plan.y_shape:
            return None

        def run(g, w, _like):
            dx = xp.empty(plan.x_shape, dtype=g.dtype)
            plan.execute({plan.dy: xp.ascontiguousarray(g), plan.w: to_krsc(xp, w),
                          plan.out: dx})
            return dx
        return run

    def backprop_filter(shapes, dtypes, attrs, _state) -> Callable | None:
        geo = _geometry(shapes[0], shapes[2], attrs, dtypes[:2])
        plan = None if geo is None else build("wgrad", shapes[0], shapes[2], *geo, dtypes[0])
        if plan is None or tuple(shapes[1]) != plan.y_shape:
            return None
        kh, kw, cin, cout = plan.w_shape

        def run(x, g, _like):
            dw = xp.empty((cout, kh, kw, cin), dtype=x.dtype)
            plan.execute({plan.x: xp.ascontiguousarray(x), plan.dy: xp.ascontiguousarray(g),
                          plan.out: dw})
            return xp.ascontiguousarray(xp.transpose(dw, (1, 2, 3, 0)))
        return run

    def matmul(shapes, dtypes, attrs, _state) -> Callable | None:
        if (len(shapes) != 2 or any(len(s) != 2 or 0 in s for s in shapes)
                or any(np.dtype(d).name not in DATA_TYPES for d in dtypes)
                or np.dtype(dtypes[0]) != np.dtype(dtypes[1])):
            return None
        ta, tb = bool(attrs.get("transpose_a")), bool(attrs.get("transpose_b"))
        inner = (shapes[0][0] if ta else shapes[0][1], shapes[1][1] if tb else shapes[1][0])
        if inner[0] != inner[1]:
            return None
        try:
            plan = MatmulGraph(cudnn, handle, xp, tuple(shapes[0]), tuple(shapes[1]), ta, tb,
                               dtypes[0])
        except Exception:  # noqa: BLE001 - cuDNN's "not supported" has several types
            return None

        def run(a, b):
            c = xp.empty(plan.out_shape, dtype=a.dtype)
            plan.execute({plan.a: xp.ascontiguousarray(a), plan.b: xp.ascontiguousarray(b),
                          plan.out: c})
            return c
        run.capturable = True         # a CUDA graph may take it (runtime/capture.py)
        return run

    return {"conv2d": (forward,), "conv2d_bias": (conv2d_bias,),
            "conv2d_backprop_input": (backprop_input,),
            "conv2d_backprop_filter": (backprop_filter,), "matmul": (matmul,)}
