"""A NumPy stand-in for NVIDIA's cuDNN frontend module ``cudnn``, enough of its graph API for
runtime/cudnn_kernels.py: tensors by NCHW dims and strides, conv_fprop / conv_dgrad /
conv_wgrad with pre/post padding, stride and dilation, bias, relu, the build steps (checked in
order), and ``execute`` over raw addresses.  It reads and writes every tensor through its own
dims and strides, as cuDNN does, so a wrong layout or padding in netlang's graphs gives wrong
numbers here too.  The convolutions are computed in float64, tap by tap (small test sizes)."""
from __future__ import annotations

import ctypes
import types

import numpy as np
from numpy.lib.stride_tricks import as_strided

BUILD_STEPS = ["validate", "build_operation_graph", "create_execution_plans", "check_support",
               "build_plans"]
DTYPES = {"FLOAT": np.float32, "HALF": np.float16}


class Tensor:
    def __init__(self, name, dim=None, stride=None, data_type=None, op=None, inputs=()):
        self.name, self.dim, self.stride, self.data_type = name, dim, stride, data_type
        self.op, self.inputs, self.output = op, inputs, False

    def set_output(self, flag):
        self.output = flag
        return self

    def set_data_type(self, data_type):
        self.data_type = data_type
        return self

    def set_dim(self, dim):
        self.dim = list(dim)
        return self

    def set_stride(self, stride):
        self.stride = list(stride)
        return self


def view(address: int, dims, strides, dtype) -> np.ndarray:
    """The array at ``address`` as cuDNN would see it (dims NCHW, strides in elements)."""
    dtype = np.dtype(dtype)
    extent = 1 + sum((d - 1) * s for d, s in zip(dims, strides))
    buffer = (ctypes.c_char * (extent * dtype.itemsize)).from_address(address)
    flat = np.frombuffer(buffer, dtype=dtype, count=extent)
    return as_strided(flat, shape=tuple(dims), strides=tuple(s * dtype.itemsize
                                                            for s in strides))


def padded(x, pre, post):
    return np.pad(x, ((0, 0), (0, 0), (pre[0], post[0]), (pre[1], post[1])))


def taps(attrs, kh, kw, oh, ow):
    """(r, s, rows, cols) for every filter tap: the padded image's rows and columns it reads."""
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    for r in range(kh):
        for s in range(kw):
            yield r, s, slice(r * dh, r * dh + (oh - 1) * sh + 1, sh), slice(
                s * dw, s * dw + (ow - 1) * sw + 1, sw)


def fprop(x, w, attrs, _dims):
    xp = padded(x, attrs["pre_padding"], attrs["post_padding"])
    (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
    n, k = x.shape[0], w.shape[0]
    oh = (xp.shape[2] - (w.shape[2] - 1) * dh - 1) // sh + 1
    ow = (xp.shape[3] - (w.shape[3] - 1) * dw - 1) // sw + 1
    y = np.zeros((n, k, oh, ow))
    for r, s, rows, cols in taps(attrs, w.shape[2], w.shape[3], oh, ow):
        y += np.einsum("nchw,kc->nkhw", xp[:, :, rows, cols], w[:, :, r, s])
    return y


def dgrad(dy, w, attrs, x_dims):
    pre, post = attrs["pre_padding"], attrs["post_padding"]
    n, c, h, wd = x_dims
    dxp = np.zeros((n, c, h + pre[0] + post[0], wd + pre[1] + post[1]))
    for r, s, rows, cols in taps(attrs, w.shape[2], w.shape[3], dy.shape[2], dy.shape[3]):
        dxp[:, :, rows, cols] += np.einsum("nkhw,kc->nchw", dy, w[:, :, r, s])
    return dxp[:, :, pre[0]:pre[0] + h, pre[1]:pre[1] + wd]


def wgrad(x, dy, attrs, w_dims):
    xp = padded(x, attrs["pre_padding"], attrs["post_padding"])
    dw = np.zeros(w_dims)
    for r, s, rows, cols in taps(attrs, w_dims[2], w_dims[3], dy.shape[2], dy.shape[3]):
        dw[:, :, r, s] = np.einsum("nchw,nkhw->kc", xp[:, :, rows, cols], dy)
    return dw


class Graph:
    def __init__(self, **options):
        self.options, self.steps, self.nodes = options, [], []

    def tensor(self, name, dim, stride, data_type):
        return Tensor(name, list(dim), list(stride), data_type)

    def _node(self, op, inputs, **attrs):
        node = Tensor(attrs.pop("name", op), op=op, inputs=inputs)
        node.attrs = attrs
        self.nodes.append(node)
        return node

    def conv_fprop(self, image, weight, **attrs):
        return self._node("fprop", (image, weight), **attrs)

    def conv_dgrad(self, loss, filter, **attrs):
        return self._node("dgrad", (loss, filter), **attrs)

    def conv_wgrad(self, image, loss, **attrs):
        return self._node("wgrad", (image, loss), **attrs)

    def matmul(self, name, A, B):
        return self._node("matmul", (A, B), name=name)

    def bias(self, name, input, bias):
        return self._node("bias", (input, bias), name=name)

    def relu(self, name, input):
        return self._node("relu", (input,), name=name)

    def __getattr__(self, step):
        if step not in BUILD_STEPS:
            raise AttributeError(step)
        return lambda *args: self.steps.append(step)

    def get_workspace_size(self):
        return 64

    def execute(self, pack, workspace, handle=None):
        assert self.steps == BUILD_STEPS, self.steps
        assert isinstance(workspace, int) and handle is not None
        FakeCudnn.executed += 1
        values = {}

        def value(t):
            if t in values:
                return values[t]
            if t.op is None:       # an input: read through its dims and strides
                values[t] = view(pack[t], t.dim, t.stride, DTYPES[t.data_type]).astype(
                    np.float64)
            elif t.op == "bias":
                values[t] = value(t.inputs[0]) + value(t.inputs[1])
            elif t.op == "matmul":
                values[t] = np.matmul(value(t.inputs[0]), value(t.inputs[1]))
            elif t.op == "relu":
                values[t] = np.maximum(value(t.inputs[0]), 0)
            else:
                run = {"fprop": fprop, "dgrad": dgrad, "wgrad": wgrad}[t.op]
                values[t] = run(value(t.inputs[0]), value(t.inputs[1]), t.attrs, t.dim)
            return values[t]

        (out,) = [t for t in pack if t.output]
        target = view(pack[out], out.dim, out.stride, DTYPES[out.data_type])
        target[...] = value(out)


class FakeCudnn(types.ModuleType):
    executed = 0

    def __init__(self):
        super().__init__("cudnn")
        self.data_type = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF")
        self.heur_mode = types.SimpleNamespace(A="A", FALLBACK="FALLBACK")
        self.graphs: list[Graph] = []

    def pygraph(self, **options):
        self.graphs.append(Graph(**options))
        return self.graphs[-1]

    def create_handle(self):
        return object()

    def set_stream(self, handle, stream):
        pass

    def backend_version(self):
        return 90000
