"""Sizes the kernels cannot run are refused by the shape rules (issue 14, item 10)."""
from __future__ import annotations

import pytest

from netlang.errors import ArgumentError, ShapeError
from netlang.ir.graph import Graph
from netlang.ir.types import MAX_BYTES, MAX_INT32, DType, Sym, TensorType, sym, too_large
from netlang.ops.builder import Builder

IMAGE = TensorType(DType.f32, (sym("N"), 8, 8, 2))
FILTER = TensorType(DType.f32, (2, 2, 2, 4))
WINDOW_OPS = [  # (op, inputs, the attributes that are windows, strides or dilations)
    ("maxpool", (IMAGE,), ("window", "stride")),
    ("avgpool", (IMAGE,), ("window", "stride")),
    ("conv2d", (IMAGE, FILTER), ("stride", "dilation")),
    ("conv2d_transpose", (IMAGE, TensorType(DType.f32, (2, 2, 4, 2))), ("stride", "dilation")),
]
CASES = [(op, ins, attr, v) for op, ins, attrs in WINDOW_OPS for attr in attrs
         for v in (MAX_INT32 + 1, 10**20)]


def typed(op, *types, **attrs):
    b = Builder(Graph())
    ins = [b.input(f"x{i}", t) for i, t in enumerate(types)]
    return b.type_of(b.op(op, *ins, **attrs))


@pytest.mark.parametrize("op, inputs, attr, value", CASES,
                         ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in CASES])
def test_windows_strides_and_dilations_fit_32_bits(op, inputs, attr, value):
    """4 ops x 2 attributes x 2 values = 16 cases."""
    with pytest.raises(ArgumentError) as err:
        typed(op, *inputs, **{attr: value, "padding": "SAME"})
    assert err.value.message == (f"{op}: {attr} must be at most {MAX_INT32}, "
                                 f"got {(value, value)!r}")


@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
def test_same_padding_may_not_pad_past_what_a_kernel_indexes(op):
    """2 cases; the largest window that still fits is accepted."""
    with pytest.raises(ShapeError) as err:
        typed(op, IMAGE, window=46341, padding="SAME")
    assert err.value.message == (f"{op}: padding=SAME pads the 8x8 input to 46341x46341, "
                                 f"more than the {MAX_INT32} cells a kernel can index")
    assert typed(op, IMAGE, window=46340, padding="SAME").shape == (sym("N"), 1, 1, 2)


@pytest.mark.parametrize("shape, fits", [
    ((sym("N"), 2**61 - 1), True), ((sym("N"), 2**61), False), ((Sym(("N",), 3), 2**60), False),
    ((10**20,), False), ((3000000000,) * 3, False), ((), True)])
def test_a_value_fits_what_numpy_indexes(shape, fits):
    """6 cases: f32 values around MAX_BYTES (symbols count 1, times their coefficient)."""
    t = TensorType(DType.f32, shape)
    assert (too_large(t) is None) == fits
    if not fits:
        assert too_large(t).startswith(f"{t} is too large to compute: ")
        assert too_large(t).endswith(f"more than the {MAX_BYTES:.3g} NumPy can index")
