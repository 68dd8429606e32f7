"""Tensor types: a dtype and a shape whose dims are ints or symbolic monomials (``N``, ``2*N``).

Symbolic dims are products of symbols with an integer coefficient.  That is exactly what
shape rules need: flatten multiplies (``[N,7,7,8] -> [N,392]``), reshape with ``-1`` divides
exactly, concatenating along the batch adds like terms (``N + N = 2*N``).  A window over a
symbolic image size derives a new symbol named by its formula (``(H-2)``, ``ceil(H/2)``,
``DERIVED``), computed from the feeds' sizes when a program runs.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

NUMPY_DTYPES = {"f16": np.dtype(np.float16), "f32": np.dtype(np.float32),
                "f64": np.dtype(np.float64), "i32": np.dtype(np.int32),
                "i64": np.dtype(np.int64), "bool": np.dtype(bool)}


def bfloat16() -> np.dtype:
    """ml_dtypes' bfloat16 (the NumPy dtype JAX and the GPU libraries share), imported the
    first time a bf16 tensor is made: importing ml_dtypes takes ~0.6 s, which every netlang
    command would otherwise pay."""
    if "bf16" not in NUMPY_DTYPES:
        import ml_dtypes
        NUMPY_DTYPES["bf16"] = np.dtype(ml_dtypes.bfloat16)
    return NUMPY_DTYPES["bf16"]


class DType(Enum):
    f32 = "f32"
    f64 = "f64"
    i32 = "i32"
    i64 = "i64"
    bool = "bool"
    f16 = "f16"     # IEEE half
    bf16 = "bf16"   # bfloat16: f32's exponent, 8 bits of mantissa

    @property
    def numpy(self) -> np.dtype:
        return bfloat16() if self is DType.bf16 else NUMPY_DTYPES[self.value]

    @property
    def is_float(self) -> bool:
        return self in (DType.f16, DType.bf16, DType.f32, DType.f64)

    @property
    def is_half(self) -> bool:
        return self in (DType.f16, DType.bf16)

    @property
    def is_int(self) -> bool:
        return self in (DType.i32, DType.i64)

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @staticmethod
    def of(array_dtype) -> DType:
        name = np.dtype(array_dtype).name
        table = {"float32": DType.f32, "float64": DType.f64, "int32": DType.i32,
                 "int64": DType.i64, "bool": DType.bool, "float16": DType.f16,
                 "bfloat16": DType.bf16}
        if name not in table:
            raise ValueError(f"unsupported dtype {name}")
        return table[name]

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Sym:
    """A symbolic dim: ``coef * s1 * s2 ...`` (symbols sorted, repeated for powers)."""

    symbols: tuple[str, ...]
    coef: int = 1

    def __str__(self) -> str:
        body = "*".join(self.symbols)
        return body if self.coef == 1 else f"{self.coef}*{body}"

    __repr__ = __str__


Dim = "int | Sym"


def sym(name: str) -> Sym:
    return Sym((name,), 1)


# Dims a sliding window derives from a symbolic one: ``(H-2)`` (a VALID 3x3 convolution over
# height H), ``ceil(H/2)`` (SAME with stride 2), ``((H-3)//2+1)`` (VALID 3x3, stride 2).  Each
# is a symbol named by its formula, so two windows that derive the same size give the same
# dim, and its value is computed from the dim it came from once the feeds bind the symbols:
# formula text -> (the dim it is computed from, the function of that dim's value).
DERIVED: dict[str, tuple[Any, Callable[[int], int]]] = {}


def derived_dim(text: str, base, value: Callable[[int], int]) -> Sym:
    """The dim named ``text`` whose size is ``value(size of base)``."""
    DERIVED.setdefault(text, (base, value))
    return Sym((text,), 1)


def is_static(d) -> bool:
    return isinstance(d, int)


def dim_mul(a, b):
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if isinstance(a, int):
        a, b = b, a
    if isinstance(b, int):
        return 0 if b == 0 else Sym(a.symbols, a.coef * b)
    return Sym(tuple(sorted(a.symbols + b.symbols)), a.coef * b.coef)


def dim_prod(dims) -> int | Sym:
    out = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


def dim_div(a, b):
    """Exact division ``a / b`` or None when it does not divide."""
    if isinstance(b, int):
        if b == 0:
            return None
        if isinstance(a, int):
            return a // b if a % b == 0 else None
        if a.coef % b:
            return None
        return Sym(a.symbols, a.coef // b)
    if isinstance(a, int):
        return None
    rest = list(a.symbols)
    for s in b.symbols:
        if s not in rest:
            return None
        rest.remove(s)
    if a.coef % b.coef:
        return None
    coef = a.coef // b.coef
    return Sym(tuple(rest), coef) if rest else coef


def dim_add(a, b):
    """``a + b`` when both are ints or like terms (``N + N``); None otherwise."""
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if isinstance(a, Sym) and isinstance(b, Sym) and a.symbols == b.symbols:
        return Sym(a.symbols, a.coef + b.coef)
    return None


def resolve_dim(d, bindings: dict[str, int]) -> int:
    """The size of ``d`` given the symbols' sizes (a KeyError names one no feed fixed)."""
    if isinstance(d, int):
        return d
    return d.coef * math.prod(_symbol_size(s, bindings) for s in d.symbols)


def _symbol_size(symbol: str, bindings: dict[str, int]) -> int:
    try:
        return bindings[symbol]      # (a dict with __missing__ may size any symbol)
    except KeyError:
        if symbol not in DERIVED:
            raise
    base, value = DERIVED[symbol]
    return value(resolve_dim(base, bindings))


def bind_dims(pattern: tuple, actual: tuple, bindings: dict[str, int]) -> bool:
    """Match a concrete shape against a (possibly symbolic) one, extending ``bindings``.

    Returns False where they disagree.  Only single-symbol dims bind new symbols.
    """
    if len(pattern) != len(actual):
        return False
    for p, a in zip(pattern, actual):
        if isinstance(p, int):
            if p != a:
                return False
        elif (len(p.symbols) == 1 and p.symbols[0] not in bindings
              and p.symbols[0] not in DERIVED):
            if a % p.coef:
                return False
            bindings[p.symbols[0]] = a // p.coef
        else:
            try:
                if resolve_dim(p, bindings) != a:
                    return False
            except KeyError:          # a symbol of it not bound yet: nothing to check
                continue
    return True


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def numel(self):
        return dim_prod(self.shape)

    def with_shape(self, shape) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def shape_str(self, sep: str = ",") -> str:
        return sep.join(str(d) for d in self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{self.shape_str()}]"

    __repr__ = __str__

    def concrete(self, bindings: dict[str, int]) -> tuple[int, ...]:
        return tuple(resolve_dim(d, bindings) for d in self.shape)


# NumPy indexes with ``intp``: no array may hold more bytes than this.
MAX_BYTES = int(np.iinfo(np.intp).max)
# Sizes a kernel hands to BLAS or C loops are 32-bit ints in common builds (OpenBLAS without
# ILP64): windows, strides and a padded image's cells stay below this.
MAX_INT32 = 2**31 - 1


def bytes_per_example(t: TensorType) -> int:
    """The bytes of ``t`` with every symbolic dim (the batch ``N``) counted as 1."""
    count = 1
    for d in t.shape:
        count *= d if isinstance(d, int) else max(1, d.coef)
    return count * t.dtype.itemsize


def too_large(t: TensorType) -> str | None:
    """Why NumPy could not hold a value of type ``t`` even for one example, or None."""
    size = bytes_per_example(t)
    if size <= MAX_BYTES:
        return None
    return (f"{t} is too large to compute: {size:.3g} bytes per example, more than the "
            f"{MAX_BYTES:.3g} NumPy can index")


def scalar(dtype: DType = DType.f32) -> TensorType:
    return TensorType(dtype, ())


def broadcast_shapes(a: tuple, b: tuple) -> tuple | None:
    """NumPy broadcasting of two shapes, or None where they are incompatible."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            return None
    return tuple(reversed(out))


def is_float_dtype(dtype) -> bool:
    """Whether an array dtype holds floats: NumPy's kind "f", or ml_dtypes' bfloat16 (whose
    kind is "V")."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype.name == "bfloat16"


def promote(a: DType, b: DType) -> DType:
    """Result dtype of arithmetic on two dtypes (floats win, wider wins; the two halves
    meet in f32, which holds both exactly)."""
    if {a, b} == {DType.f16, DType.bf16}:
        return DType.f32
    order = [DType.bool, DType.i32, DType.i64, DType.f16, DType.bf16, DType.f32, DType.f64]
    return max(a, b, key=order.index)
