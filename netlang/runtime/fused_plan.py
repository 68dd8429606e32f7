"""Fused groups on NumPy (and CuPy's fallback): one generated function of in-place calls.

A fused group's sub-expression (ops/fused.py) becomes one generated Python function of
in-place ufunc calls (``out=`` buffers): a chain writes every step into its one output array,
a tree needs one scratch buffer per extra branch alive at once, and inputs are never written.
The plan is made once per program and input shapes (the CPU backend's ``fused`` kernel
factory), so a call costs what its ufunc calls cost.  The op's reference kernel in
``ops/fused.py`` stays the definition; tests compare the two.

``into``, the same plan taking ``out=`` and ``scratch=`` buffers, lets the executor's buffer
plan give the group its output and scratch buffers; ``make_plan(..., overwritten=i)`` plans a
group whose output may be its own input ``i`` (a variable's update written over the
variable): that input's buffer is written only from the step that reads it last.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from netlang.ir.types import DType, TensorType
from netlang.ops.fused import input_ref, step_ref, step_types
from netlang.ops.registry import get_op

# -- NumPy: in-place kernels ------------------------------------------------------------------
# INTO[op](xp) is a function ``fn(*args, out=buffer, **attrs)`` writing ``op(*args)`` into the
# buffer.  Each is safe when ``out`` is an operand that dies at this step (an elementwise
# ufunc reads each element before writing it); the few multi-pass forms check for that.

def _ufunc(name: str) -> Callable:
    return lambda xp: getattr(xp, name)


def _bound(fn: Callable) -> Callable:
    return lambda xp: functools.partial(fn, xp)


def _relu_into(xp, x, out):
    return xp.maximum(x, 0, out=out)


def _relu_grad_into(xp, g, y, out):
    if out is g:                 # heaviside would overwrite g before it is read
        return xp.multiply(g, y > 0, out=out)
    xp.heaviside(y, 0, out=out)  # exactly (y > 0) as a number, without a bool temporary
    return xp.multiply(out, g, out=out)


def _sigmoid_into(xp, x, out):
    # sigmoid(x) = (1 + tanh(x/2)) / 2: stable for any x and computable in place.
    xp.multiply(x, 0.5, out=out)
    xp.tanh(out, out=out)
    xp.multiply(out, 0.5, out=out)
    return xp.add(out, 0.5, out=out)


def _square_into(xp, x, out):
    return xp.multiply(x, x, out=out)


def _select_into(xp, cond, a, b, out):
    if out is cond:
        out[...] = xp.where(cond, a, b)
    elif out is b:
        xp.copyto(out, a, where=cond)
    elif out is a:
        xp.copyto(out, b, where=xp.logical_not(cond))
    else:
        xp.copyto(out, b)
        xp.copyto(out, a, where=cond)
    return out


def _pow_into(xp, x, out, exponent):
    return xp.power(x, exponent, out=out)


def _leaky_relu_into(xp, x, out, alpha):
    negative = x < 0             # a bool mask: a quarter of a float temporary
    if out is not x:
        xp.copyto(out, x)
    return xp.multiply(out, alpha, out=out, where=negative)


def _rsqrt_into(xp, x, out):
    xp.sqrt(x, out=out)
    return xp.divide(1, out, out=out)


INTO: dict[str, Callable] = {
    "add": _ufunc("add"), "sub": _ufunc("subtract"), "mul": _ufunc("multiply"),
    "div": _ufunc("true_divide"), "neg": _ufunc("negative"), "exp": _ufunc("exp"),
    "log": _ufunc("log"), "sqrt": _ufunc("sqrt"), "sin": _ufunc("sin"), "cos": _ufunc("cos"),
    "tanh": _ufunc("tanh"), "abs": _ufunc("abs"), "sign": _ufunc("sign"),
    "maximum": _ufunc("maximum"), "minimum": _ufunc("minimum"), "equal": _ufunc("equal"),
    "greater": _ufunc("greater"), "less": _ufunc("less"),
    "square": _bound(_square_into), "relu": _bound(_relu_into),
    "relu_grad": _bound(_relu_grad_into), "sigmoid": _bound(_sigmoid_into),
    "select": _bound(_select_into), "rsqrt": _bound(_rsqrt_into), "pow": _bound(_pow_into),
    "leaky_relu": _bound(_leaky_relu_into),
    "floor": _ufunc("floor"), "ceil": _ufunc("ceil"), "round": _ufunc("rint"),
}


def _generic_into(opdef) -> Callable:
    """Ops without an in-place form run their own kernel and copy into ``out``."""
    def bind(xp):
        def run(*args, out, **attrs):
            out[...] = opdef.kernel(xp, *args, **attrs)
            return out
        return run
    return bind


@dataclass(frozen=True)
class FusedPlan:
    """How one expression runs for given input dtypes and shapes on one array module.

    ``buffers`` lists (shape, dtype) of the arrays a call allocates: buffer 0 is the output,
    the rest are scratch.  ``steps`` are (in-place function, operand slots, output slot,
    attrs); slots index ``[*inputs, *buffers]``.  ``run(*inputs)`` is the plan as one
    generated Python function, one in-place call a line (so a call costs what the ufunc
    calls cost, not an interpreter loop); ``source`` is its text.  ``into(*inputs,
    out=None, scratch=None)`` is the same function writing into the buffers it is given
    (``out`` shaped as the output, ``scratch`` as ``buffers[1:]``), ``into_source`` its text.
    """

    buffers: tuple
    steps: tuple
    inputs: int
    run: Callable
    source: str
    into: Callable
    into_source: str

    @property
    def scratch(self) -> int:
        return len(self.buffers) - 1


def _last_uses(expr: tuple) -> dict[str, int]:
    last: dict[str, int] = {}
    for j, (_, args, _) in enumerate(expr):
        for a in args:
            last[a] = j
    return last


def _choose_buffer(want, free: list[int], buffers: list) -> int:
    """A free buffer of the wanted (shape, dtype), the output buffer first; else a new one."""
    matching = [k for k in free if buffers[k] == want]
    if not matching:
        buffers.append(want)
        return len(buffers) - 1
    choice = 0 if 0 in matching else matching[0]
    free.remove(choice)
    return choice


def assign_buffers(expr: tuple, n_inputs: int, wants: list,
                   overwritten: int | None = None) -> tuple[list, list]:
    """(buffers, per step (operand slots, output slot)): the output buffer when it is free,
    else a buffer of a dead operand, else a new scratch buffer; never an input.  With
    ``overwritten``, the output buffer may be that input: it is free only from the step that
    reads the input last (each in-place function reads an element before writing it)."""
    buffers: list = [wants[-1]]
    last = _last_uses(expr)
    free = [0] if overwritten is None or input_ref(overwritten) not in last else []
    where: dict[str, int] = {}       # step ref -> buffer index
    slots = []
    for j, (_, args, _) in enumerate(expr):
        free.extend(where[a] for a in dict.fromkeys(args) if a in where and last[a] == j)
        if overwritten is not None and last.get(input_ref(overwritten)) == j:
            free.append(0)
        if j == len(expr) - 1:       # every value still alive is an operand of the last step
            free.remove(0)
            k = 0
        else:
            k = _choose_buffer(wants[j], free, buffers)
        where[step_ref(j)] = k
        if step_ref(j) not in last and j < len(expr) - 1:
            free.append(k)           # a step nothing reads: its buffer is free again at once
        operands = tuple(n_inputs + where[a] if a in where else int(a[1:]) for a in args)
        slots.append((operands, n_inputs + k))
    return buffers, slots


MAX_TILED_CHANNELS, TILED_ROW = 32, 256


def row_tiling(out_shape: tuple, shapes: list[tuple]) -> int:
    """How many times to tile the per-channel vectors of a group (1: not at all).

    A bias add over ``[N, H, W, 4]`` broadcasts a 4-vector: NumPy's inner loop then runs 4
    elements at a time and costs 3.5x a plain add.  When every value of the group is either
    full-size, a vector along the last axis, or a single number, the group can run on 2-D
    views ``[rows, k*C]`` with the vectors tiled k times, so inner loops are k*C long
    (``[256, 28, 28, 4]``: 1.13 -> 0.32 ms; gains fade above 32 channels).
    """
    if not out_shape:
        return 1
    channels = out_shape[-1]
    if not 0 < channels <= MAX_TILED_CHANNELS:
        return 1
    kinds = {_kind(s, out_shape) for s in shapes}
    if None in kinds or "vector" not in kinds:
        return 1
    rows = math.prod(out_shape) // channels
    k = 1
    while 2 * k * channels <= TILED_ROW and rows % (2 * k) == 0:
        k *= 2
    return k


def _kind(shape: tuple, out_shape: tuple) -> str | None:
    if tuple(shape) == tuple(out_shape):
        return "full"
    if math.prod(shape) == 1:
        return "scalar"
    if shape and shape[-1] == out_shape[-1] and math.prod(shape[:-1]) == 1:
        return "vector"
    return None


def make_plan(xp, expr: tuple, in_dtypes: tuple, in_shapes: tuple,
              overwritten: int | None = None) -> FusedPlan:
    """The plan of ``expr`` for these inputs; ``overwritten``: the input its output may be
    (then without row tiling, so the in-place functions see that input as their ``out``)."""
    in_types = [TensorType(DType.of(d), tuple(s)) for d, s in zip(in_dtypes, in_shapes)]
    types = step_types(expr, in_types)
    out_shape = types[-1].shape
    tiles = 1
    if xp is np and overwritten is None:
        tiles = row_tiling(out_shape, [t.shape for t in in_types + types])
    wants = [(_tiled(t.shape, out_shape, tiles), t.dtype.numpy) for t in types]
    buffers, slots = assign_buffers(expr, len(in_types), wants, overwritten)
    steps = tuple(((INTO.get(op) or _generic_into(get_op(op)))(xp), operands, k, dict(attrs))
                  for (op, _, attrs), (operands, k) in zip(expr, slots))
    views = [_view_code(s, out_shape, tiles) for s in in_shapes] if tiles > 1 else None
    made = [generate_python(xp, buffers, steps, len(in_types), views,
                            out_shape if tiles > 1 else None, label=_group_label(expr),
                            into=into) for into in (False, True)]
    return FusedPlan(tuple(buffers), steps, len(in_types), *made[0], *made[1])


def _group_label(expr: tuple, shown: int = 6) -> str:
    """``fused group: mul, log, add``: the generated code's file name, as warnings show it."""
    ops = [op for op, _, _ in expr]
    more = f", ... ({len(ops)} ops)" if len(ops) > shown else ""
    return f"fused group: {', '.join(ops[:shown])}{more}"


def _tiled(shape: tuple, out_shape: tuple, tiles: int) -> tuple:
    """A value's shape in the tiled 2-D layout (itself when there is no tiling)."""
    if tiles == 1:
        return shape
    kind = _kind(shape, out_shape)
    channels = out_shape[-1]
    if kind == "full":
        return (math.prod(out_shape) // (channels * tiles), channels * tiles)
    return (channels * tiles,) if kind == "vector" else ()


def _view_code(shape: tuple, out_shape: tuple, tiles: int) -> str:
    """How the generated function turns input ``{x}`` into its tiled 2-D form."""
    target = _tiled(shape, out_shape, tiles)
    if _kind(shape, out_shape) == "vector":
        return f"tile({{x}}.reshape(-1), {tiles})"
    return f"{{x}}.reshape({target!r})"


def generate_python(xp, buffers: list, steps: tuple, n: int, views: list[str] | None = None,
                    out_shape: tuple | None = None, label: str = "fused group",
                    into: bool = False) -> tuple[Callable, str]:
    """The plan as the text of one Python function, and that function.  With ``views`` (the
    row tiling), inputs are first reshaped or tiled by that code and the output buffer is
    allocated as ``out_shape`` and written through its 2-D view.  ``label`` is the code's
    file name, which a NumPy warning shows: the user's ops, not an internal name.  With
    ``into`` the function also takes ``out=`` and ``scratch=`` buffers (allocating those
    not given)."""
    def name(slot: int) -> str:
        return f"x{slot}" if slot < n else f"b{slot - n}"

    scope: dict[str, Any] = {"empty": xp.empty, "tile": xp.tile}
    params = [name(i) for i in range(n)] + (["out=None", "scratch=None"] if into else [])
    lines = [f"def fused({', '.join(params)}):"]
    for i, code in enumerate(views or []):
        lines.append(f"    x{i} = {code.format(x=f'x{i}')}")
    for k, (shape, dtype) in enumerate(buffers):
        scope[f"shape{k}"], scope[f"dtype{k}"] = shape, dtype
    lines += _buffer_lines(len(buffers), out_shape is not None, into)
    if out_shape is not None:
        scope["out_shape"] = out_shape
    for j, (fn, operands, k, attrs) in enumerate(steps):
        scope[f"f{j}"] = fn
        keywords = []
        for key, value in attrs.items():
            scope[f"a{j}_{key}"] = value
            keywords.append(f", {key}=a{j}_{key}")
        lines.append(f"    f{j}({', '.join(map(name, operands))}, out={name(k)}"
                     f"{''.join(keywords)})")
    lines.append("    return out" if out_shape is not None else "    return b0")
    source = "\n".join(lines) + "\n"
    exec(compile(source, f"<{label}>", "exec"), scope)  # noqa: S102  (text made above)
    return scope["fused"], source


def _buffer_lines(count: int, tiled: bool, into: bool) -> list[str]:
    """The lines that make the output buffer ``b0`` (``out`` too when tiled) and the scratch
    buffers ``b1...``: allocated, or with ``into`` taken from ``out`` and ``scratch``."""
    new = "empty(out_shape, dtype0)" if tiled else "empty(shape0, dtype0)"
    first = "out" if tiled else "b0"
    lines = [f"    {first} = {new} if out is None else out" if into else f"    {first} = {new}"]
    if tiled:
        lines.append("    b0 = out.reshape(shape0)")
    scratch = [f"b{k}" for k in range(1, count)]
    made = ", ".join(f"empty(shape{k}, dtype{k})" for k in range(1, count))
    if scratch and into:
        lines.append(f"    {', '.join(scratch)}, = ({made},) if scratch is None else scratch")
    elif scratch:
        lines += [f"    b{k} = empty(shape{k}, dtype{k})" for k in range(1, count)]
    return lines


def plan_for(expr: tuple, arrays, xp=np) -> FusedPlan:
    """The plan for these input arrays' dtypes and shapes on ``xp`` (made anew each call:
    callers keep it, as the CPU backend's factory does per program)."""
    return make_plan(xp, expr, tuple(a.dtype for a in arrays), tuple(a.shape for a in arrays))
