"""Layer macros: each expands into parameters plus primitive ops (NHWC, as in the seeds).

A layer is a signature (``arguments.Param`` tuple) and a build function
``(lower, args) -> value`` where ``args`` holds the bound arguments and ``lower`` is the
lowering, which provides ``b`` (the ``Builder``, already inside the layer's scope and span),
``param``, ``state``, ``update``, ``mode`` and ``activation``.  Layers with weights also accept the weights as tensors:
``conv2d(x, W, padding=same)`` is the primitive convolution with ``W``.

Defaults follow tf.layers (the seeds' API): kernels start ``glorot_uniform`` (TensorFlow's
default initializer, which seed 004's network uses), biases at zero, batchnorm with
momentum 0.99 and epsilon 1e-3.  Pass ``init=glorot_normal`` for seed 000's Xavier-normal.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from netlang.errors import ArgumentError, ShapeError
from netlang.frontend.arguments import (
    Param,
    Tensor,
    Word,
    WrongType,
    boolean,
    choice,
    integer,
    number,
    optional_name,
    optional_pair,
    optional_tensor,
    pair,
    positive_int,
    rate,
    takes_word,
    tensor,
)
from netlang.frontend.initializers import init_spec
from netlang.ir.types import DType, TensorType
from netlang.ops.conv import Axis, explicit_padding
from netlang.ops.pool import pool_geometry

_PADDING_WORD = choice("valid", "same")


@takes_word
def PADDING(value):
    """``valid``, ``same``, or explicit padding: an int for every side, or ``((top, bottom),
    (left, right))`` (ONNX's and PyTorch's)."""
    expected = "valid, same, an int, or ((top, bottom), (left, right)) of non-negative ints"
    if isinstance(value, (int, tuple)) and not isinstance(value, bool):
        try:
            return explicit_padding("padding", value)
        except ArgumentError:
            raise WrongType(expected) from None
    return _PADDING_WORD(value)      # a misspelt word: "valid or same", and the near miss


def padding_attr(padding):
    """The op's ``padding``: ``"SAME"``/``"VALID"``, or the explicit pairs as they are."""
    return padding.upper() if isinstance(padding, str) else padding


@takes_word
def activation_name(value):
    """``activation=relu``: the name of a one-input op, or None."""
    if value is None:
        return None
    if isinstance(value, Word):
        return None if value.name in ("None", "none") else value.name
    raise WrongType("the name of an activation such as relu, tanh or sigmoid")


@dataclass(frozen=True)
class Layer:
    name: str
    prefix: str                           # auto scope names: prefix1, prefix2, ...
    signature: tuple[Param, ...]
    build: Callable
    weighted: tuple[Param, ...] | None = None    # signature when weights are given
    build_weighted: Callable | None = None
    has_params: bool = False


NAME = Param("name", optional_name, None, keyword_only=True)
SHARE = Param("share", optional_name, None, keyword_only=True)
TRAINABLE = Param("trainable", boolean, True, keyword_only=True)   # false: frozen parameters
COMMON_PARAMS = (NAME, SHARE, TRAINABLE)

LAYERS: dict[str, Layer] = {}


def layer(name: str, prefix: str, signature: tuple, *, has_params: bool = False,
          weighted: tuple | None = None, build_weighted: Callable | None = None):
    """Register a layer macro built by the decorated function."""
    def register(build: Callable) -> Callable:
        extra = COMMON_PARAMS if has_params else (NAME,)
        LAYERS[name] = Layer(name, prefix, signature + extra, build,
                             weighted and weighted + (NAME,), build_weighted, has_params)
        return build
    return register


# -- helpers -------------------------------------------------------------------------------

def _float_input(layer_name: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise ShapeError(f"{layer_name} needs a float input, got {t}",
                         hint=f"cast(x, dtype=f32) before {layer_name}")


def _image_input(layer_name: str, t: TensorType) -> None:
    if t.rank != 4:
        raise ShapeError(f"{layer_name} expects a 4-D input [N,H,W,C], got {t}",
                         hint="reshape to [N, H, W, C] first (NHWC)")
    _float_input(layer_name, t)


def _static(layer_name: str, what: str, dim, t: TensorType) -> int:
    if not isinstance(dim, int):
        raise ShapeError(f"{layer_name} needs a known number of {what}, got {t}",
                         hint="declare that dim as a number in the input's type")
    return dim


def _finish(lower, y: int, args: dict) -> int:
    """Add the bias (when the layer has one) and apply the activation."""
    if args.get("b") is not None:
        y = lower.b.add(y, args["b"])
    return lower.activation(args.get("activation"), y)


def _bias(lower, args: dict, units: int, dtype: DType) -> dict:
    if args["use_bias"]:
        args = dict(args, b=lower.param("b", TensorType(dtype, (units,)), args["bias_init"]))
    return args


WEIGHT_PARAMS = (
    Param("activation", activation_name, None),
    Param("use_bias", boolean, True),
    Param("init", init_spec, ("glorot_uniform",)),
    Param("bias_init", init_spec, ("zeros",)),
)

# -- dense ---------------------------------------------------------------------------------


def _dense_input(lower, x: int) -> TensorType:
    t = lower.b.type_of(x)
    if t.rank != 2:
        hint = "add flatten before dense?" if t.rank > 2 else "reshape to [N, features]"
        raise ShapeError(f"dense expects a 2-D input [N, features], got {t}", hint=hint)
    _float_input("dense", t)
    return t


def _dense_weighted(lower, args: dict) -> int:
    x, weights = args["x"].id, args["W"].id
    _dense_input(lower, x)
    bias = args["b"].id if args["b"] is not None else None
    return _finish(lower, lower.b.matmul(x, weights), dict(args, b=bias))


@layer("dense", "dense", (Param("x", tensor), Param("units", positive_int)) + WEIGHT_PARAMS,
       has_params=True,
       weighted=(Param("x", tensor), Param("W", tensor), Param("b", optional_tensor, None),
                 Param("activation", activation_name, None)),
       build_weighted=_dense_weighted)
def dense(lower, args: dict) -> int:
    """x @ W + b, then the activation: W [in, units], b [units]."""
    x = args["x"].id
    t = _dense_input(lower, x)
    features = _static("dense", "input features", t.shape[1], t)
    kernel = lower.param("W", TensorType(t.dtype, (features, args["units"])), args["init"])
    args = _bias(lower, args, args["units"], t.dtype)
    return _finish(lower, lower.b.matmul(x, kernel), args)


# -- embedding -----------------------------------------------------------------------------


@layer("embedding", "embedding",
       (Param("x", tensor), Param("vocab", positive_int), Param("units", positive_int),
        Param("init", init_spec, ("normal", 0.05))), has_params=True)
def embedding(lower, args: dict) -> int:
    """W[ids]: a [units] row of W [vocab, units] per integer id (gather along axis 0);
    ids outside [-vocab, vocab) are an error when the step runs."""
    x = args["x"].id
    t = lower.b.type_of(x)
    if not t.dtype.is_int:
        raise ShapeError(f"embedding takes integer ids, got {t}", hint="cast(x, dtype=i32)")
    table = lower.param("W", TensorType(DType.f32, (args["vocab"], args["units"])),
                        args["init"])
    return lower.b.gather(table, x, axis=0)


# -- convolutions --------------------------------------------------------------------------

CONV_ATTRS = (
    Param("stride", pair, 1),
    Param("padding", PADDING, "valid"),
    Param("dilation", pair, 1),
)


def _conv_attrs(args: dict) -> dict:
    return {"stride": pair(args["stride"]), "padding": padding_attr(args["padding"]),
            "dilation": pair(args["dilation"])}


def _check_kernel(name: str, x: TensorType, kernel: TensorType, in_axis: int) -> None:
    if kernel.rank != 4:
        raise ShapeError(f"{name}: the kernel must be 4-D [kh,kw,in,out], got {kernel}")
    if kernel.shape[in_axis] != x.shape[3]:
        order = "[kh, kw, in, out]" if in_axis == 2 else "[kh, kw, out, in]"
        raise ShapeError(
            f"{name}: the input has {x.shape[3]} channel(s) but the kernel {kernel} "
            f"expects {kernel.shape[in_axis]}",
            hint=f"a {name} kernel is {order}; its in-channels must match the input's last dim")


def _conv_weighted(name: str, in_axis: int):
    def build(lower, args: dict) -> int:
        x, kernel = args["x"].id, args["W"].id
        _image_input(name, lower.b.type_of(x))
        groups = args.get("groups", 1)
        if groups == 1:        # a grouped filter's shape is checked by the op's shape rule
            _check_kernel(name, lower.b.type_of(x), lower.b.type_of(kernel), in_axis)
        y = lower.b.op(name, x, kernel, **_conv_attrs(args), **_groups(groups))
        bias = args["b"].id if args["b"] is not None else None
        return _finish(lower, y, dict(args, b=bias))
    return build


def _groups(groups: int) -> dict:
    """The op's ``groups`` attribute: left out (None) for one group."""
    return {} if groups == 1 else {"groups": groups}


CONV_WEIGHTED = ((Param("x", tensor), Param("W", tensor), Param("b", optional_tensor, None))
                 + CONV_ATTRS + (Param("activation", activation_name, None),))
CONV_SIGNATURE = ((Param("x", tensor), Param("filters", positive_int), Param("kernel", pair))
                  + CONV_ATTRS + WEIGHT_PARAMS)
GROUPS = Param("groups", positive_int, 1)


def _grouped_conv(lower, args: dict, filters: int, groups: int, name: str) -> int:
    """conv2d with W [kh, kw, in/groups, filters] (+ b, activation)."""
    x = args["x"].id
    t = lower.b.type_of(x)
    _image_input(name, t)
    channels = _static(name, "input channels", t.shape[3], t)
    for what, count in (("input channels", channels), ("filters", filters)):
        if count % groups:
            raise ShapeError(f"{name}: {groups} groups do not divide the {count} {what}",
                             hint="groups must divide the input channels and the filters")
    kh, kw = args["kernel"]
    kernel = lower.param("W", TensorType(t.dtype, (kh, kw, channels // groups, filters)),
                         args["init"])
    args = _bias(lower, args, filters, t.dtype)
    return _finish(lower, lower.b.conv2d(x, kernel, **_conv_attrs(args), **_groups(groups)),
                   args)


@layer("conv2d", "conv", CONV_SIGNATURE + (GROUPS,), has_params=True,
       weighted=CONV_WEIGHTED + (GROUPS,), build_weighted=_conv_weighted("conv2d", 2))
def conv2d(lower, args: dict) -> int:
    """conv2d(x, W) + b with W [kh, kw, in/groups, filters]; TensorFlow's SAME/VALID padding;
    ``groups``: the channels split into independent convolutions (ResNeXt, ShuffleNet)."""
    return _grouped_conv(lower, args, args["filters"], args["groups"], "conv2d")


@takes_word
def _padding_1d(value):
    """conv1d's padding: valid, same, an int, or (before, after)."""
    if isinstance(value, tuple) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return ((0, 0), value)
    padding = PADDING(value)
    return padding if isinstance(padding, str) else ((0, 0), padding[1])


@layer("conv1d", "conv1d_",
       (Param("x", tensor), Param("filters", positive_int), Param("kernel", positive_int),
        Param("stride", positive_int, 1), Param("padding", _padding_1d, "valid"),
        Param("dilation", positive_int, 1), *WEIGHT_PARAMS, GROUPS), has_params=True)
def conv1d(lower, args: dict) -> int:
    """A convolution along the middle axis of [N, L, C] (seed 002's conv1d): conv2d over a
    height of 1 with W [kernel, in/groups, filters], padding valid, same, an int or (before,
    after)."""
    x = args["x"].id
    t = lower.b.type_of(x)
    if t.rank != 3 or not t.dtype.is_float:
        raise ShapeError(f"conv1d expects a float [N, length, channels] input, got {t}",
                         hint="reshape to [N, length, channels] first")
    channels = _static("conv1d", "input channels", t.shape[2], t)
    filters, groups, k = args["filters"], args["groups"], args["kernel"]
    for what, count in (("input channels", channels), ("filters", filters)):
        if count % groups:
            raise ShapeError(f"conv1d: {groups} groups do not divide the {count} {what}",
                             hint="groups must divide the input channels and the filters")
    kernel = lower.param("W", TensorType(t.dtype, (k, channels // groups, filters)),
                         args["init"])
    length = _static("conv1d", "length", t.shape[1], t)
    image = lower.b.reshape(x, shape=(-1, 1, length, channels))
    wide = lower.b.reshape(kernel, shape=(1, k, channels // groups, filters))
    y = lower.b.conv2d(image, wide, stride=(1, args["stride"]),
                       padding=padding_attr(args["padding"]), dilation=(1, args["dilation"]),
                       **_groups(groups))
    out = lower.b.type_of(y)
    y = lower.b.reshape(y, shape=(-1, out.shape[2], out.shape[3]))
    args = _bias(lower, args, filters, t.dtype)
    return _finish(lower, y, args)


@layer("depthwise_conv2d", "dwconv",
       (Param("x", tensor), Param("kernel", pair), *CONV_ATTRS,
        Param("multiplier", positive_int, 1), *WEIGHT_PARAMS), has_params=True)
def depthwise_conv2d(lower, args: dict) -> int:
    """One filter per input channel (``multiplier`` of them): conv2d with groups = the input
    channels and W [kh, kw, 1, in*multiplier] (MobileNet's depthwise convolution)."""
    t = lower.b.type_of(args["x"].id)
    _image_input("depthwise_conv2d", t)
    channels = _static("depthwise_conv2d", "input channels", t.shape[3], t)
    return _grouped_conv(lower, args, channels * args["multiplier"], channels,
                         "depthwise_conv2d")


@layer("conv2d_transpose", "deconv", CONV_SIGNATURE, has_params=True, weighted=CONV_WEIGHTED,
       build_weighted=_conv_weighted("conv2d_transpose", 3))
def conv2d_transpose(lower, args: dict) -> int:
    """The transposed convolution with W [kh, kw, filters, in] (TensorFlow's layout)."""
    x = args["x"].id
    t = lower.b.type_of(x)
    _image_input("conv2d_transpose", t)
    channels = _static("conv2d_transpose", "input channels", t.shape[3], t)
    kh, kw = args["kernel"]
    kernel = lower.param("W", TensorType(t.dtype, (kh, kw, args["filters"], channels)),
                         args["init"])
    args = _bias(lower, args, args["filters"], t.dtype)
    return _finish(lower, lower.b.conv2d_transpose(x, kernel, **_conv_attrs(args)), args)


# -- pooling and reshaping -----------------------------------------------------------------

POOL_SIGNATURE = (Param("x", tensor), Param("window", pair, 2),
                  Param("stride", optional_pair, None), Param("padding", PADDING, "valid"),
                  Param("ceil_mode", boolean, False, keyword_only=True),
                  Param("dilation", pair, 1, keyword_only=True))


def _pool(op: str):
    def build(lower, args: dict) -> int:
        x = args["x"].id
        t = lower.b.type_of(x)
        _image_input(op, t)
        window = args["window"]
        stride = args["stride"] or window  # TensorFlow layers: stride defaults to the window
        padding = padding_attr(args["padding"])
        dilation = None if pair(args["dilation"]) == (1, 1) else pair(args["dilation"])
        if not (args["ceil_mode"] or args.get("count_include_pad")):
            return lower.b.op(op, x, window=window, stride=stride, padding=padding,
                              dilation=dilation)
        hw = tuple(_static(op, what, d, t) for what, d in zip(("height", "width"),
                                                                t.shape[1:3]))
        axes = pool_geometry(op, hw, window, stride, padding, dilation)
        extra = [_ceil_extra(a) if args["ceil_mode"] else 0 for a in axes]
        if args.get("count_include_pad"):   # the pads count: zeros a valid pool sees
            pads = ((0, 0), *((a.before, a.after) for a in axes), (0, 0))
            if any(any(p) for p in pads):
                x = lower.b.pad(x, paddings=pads, value=0.0)
            padding = ((0, extra[0]), (0, extra[1]))
        else:
            padding = tuple((a.before, a.after + e) for a, e in zip(axes, extra))
        if padding == ((0, 0), (0, 0)):
            padding = "VALID"
        return lower.b.op(op, x, window=window, stride=stride, padding=padding,
                          dilation=dilation)
    build.__doc__ = (f"{op} over window x window cells (stride defaults to the window; "
                     "dilation spreads the taps apart); "
                     "ceil_mode=true counts a last, partial window (PyTorch's and ONNX's "
                     "rule: one that starts inside the input or its left padding)"
                     + ("; count_include_pad=true divides by the whole window, padding "
                        "included" if op == "avgpool" else ""))
    return build


def _ceil_extra(a: Axis) -> int:
    """How many cells past the padding ceil_mode's last window reaches on this axis."""
    span = a.padded - a.span
    out = -(-span // a.stride) + 1
    if (out - 1) * a.stride >= a.size + a.before:      # it would start in the right padding
        out -= 1
    return max(0, (out - 1) * a.stride + a.span - a.padded)


layer("maxpool", "maxpool", POOL_SIGNATURE)(_pool("maxpool"))
layer("avgpool", "avgpool",
      POOL_SIGNATURE + (Param("count_include_pad", boolean, False, keyword_only=True),)
      )(_pool("avgpool"))


@layer("global_avgpool", "global_avgpool", (Param("x", tensor),))
def global_avgpool(lower, args: dict) -> int:
    """The mean over height and width: [N,H,W,C] -> [N,C]."""
    x = args["x"].id
    _image_input("global_avgpool", lower.b.type_of(x))
    return lower.b.mean(x, axis=(1, 2), keepdims=False)


@layer("flatten", "flatten", (Param("x", tensor),))
def flatten(lower, args: dict) -> int:
    """[N, d1, d2, ...] -> [N, d1*d2*...]; the batch dim may stay symbolic."""
    x = args["x"].id
    t = lower.b.type_of(x)
    if t.rank < 2:
        raise ShapeError(f"flatten needs a batch dim and at least one more, got {t}")
    rest = t.shape[1:]
    if not all(isinstance(d, int) for d in rest):
        raise ShapeError(f"flatten needs known dims after the batch dim, got {t}",
                         hint="declare those dims as numbers in the input's type")
    return lower.b.reshape(x, shape=(-1, math.prod(rest)))


# -- batch norm and dropout ----------------------------------------------------------------


def rate_or_tensor(value):
    """``dropout(h, 0.5)``, or ``dropout(h, rate)`` with a scalar input fed at run time."""
    if isinstance(value, Tensor):
        return value
    try:
        return rate(value)
    except WrongType:
        raise WrongType("a number in [0, 1) or a scalar tensor") from None


@layer("dropout", "dropout", (Param("x", tensor), Param("rate", rate_or_tensor)))
def dropout(lower, args: dict) -> int:
    """Training: x * mask with mask 0 or 1/(1-rate); evaluation: x (inverted dropout).  A
    rate given as a tensor is read when the step runs (seed 004's keep_prob placeholder)."""
    x = args["x"].id
    _float_input("dropout", lower.b.type_of(x))
    if isinstance(args["rate"], Tensor):
        mask = lower.apply_primitive("dropout_mask_of", (x, args["rate"].id), {})
    else:
        mask = lower.b.dropout_mask(x, rate=args["rate"])
    dropped = lower.b.mul(x, mask)
    return lower.b.select(lower.mode(), dropped, x)


BATCHNORM_SIGNATURE = (
    Param("x", tensor), Param("axis", integer, -1), Param("momentum", rate, 0.99),
    Param("epsilon", number, 1e-3), Param("center", boolean, True),
    Param("scale", boolean, True),
)


@layer("batchnorm", "bn", BATCHNORM_SIGNATURE, has_params=True)
def batchnorm(lower, args: dict) -> int:
    """y = gamma * (x - mean) / sqrt(var + epsilon) + beta over all axes but ``axis``.

    Training normalizes with the batch mean and population variance and moves the moving
    statistics toward them (``moving = momentum * moving + (1 - momentum) * batch``);
    evaluation uses the moving statistics.  ``select(mode, ...)`` picks between them.
    """
    x = args["x"].id
    t = lower.b.type_of(x)
    _float_input("batchnorm", t)
    axis = _norm_axis(args["axis"], t)
    channels = _static("batchnorm", "channels", t.shape[axis], t)
    vec = TensorType(t.dtype, (channels,))
    mean_b, var_b = _moments(lower, x, axis, t)
    mean = _moving(lower, "moving_mean", vec, ("zeros",), mean_b, args["momentum"])
    var = _moving(lower, "moving_variance", vec, ("ones",), var_b, args["momentum"])
    gamma = lower.param("gamma", vec, ("ones",)) if args["scale"] else lower.b.const(
        np.ones(channels), t.dtype)
    beta = lower.param("beta", vec, ("zeros",)) if args["center"] else lower.b.const(
        np.zeros(channels), t.dtype)
    return lower.b.batchnorm_apply(x, mean, var, gamma, beta, axis=axis, epsilon=args["epsilon"])


def _norm_axis(axis: int, t: TensorType) -> int:
    if not -t.rank <= axis < t.rank:
        raise ShapeError(f"batchnorm: axis {axis} is out of range for {t}",
                         hint=f"use an axis in [{-t.rank}, {t.rank - 1}]")
    return axis % t.rank


def _moments(lower, x: int, axis: int, t: TensorType) -> tuple[int, int]:
    """The batch mean and population variance over every axis but ``axis``, each [C]."""
    mean = lower.b.mean(x, axis=tuple(i for i in range(t.rank) if i != axis), keepdims=False)
    return mean, lower.b.batch_variance(x, mean, axis=axis)


def _moving(lower, name: str, vec: TensorType, init: tuple, batch: int, momentum: float) -> int:
    """The statistic to normalize with: the batch's in training, the moving one otherwise."""
    moving = lower.state(name, vec, init)
    keep = lower.b.const(momentum, vec.dtype)
    blend = lower.b.const(1.0 - momentum, vec.dtype)
    blended = lower.b.add(lower.b.mul(moving, keep), lower.b.mul(batch, blend))
    # In eval mode the update folds to the state itself, and DCE drops it.
    lower.update(moving, lower.b.select(lower.mode(), blended, moving))
    return lower.b.select(lower.mode(), batch, moving)


def is_weighted_call(layer_def: Layer, args) -> bool:
    """True when the second positional argument is a tensor: use the given weights."""
    positional = [g for g in args if g.name is None]
    return (layer_def.weighted is not None and len(positional) >= 2
            and isinstance(positional[1].value, Tensor))
