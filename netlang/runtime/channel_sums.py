"""Sums over the leading axes taken in the loop that writes what they sum.

A batchnorm's backward reads the image it differentiates again and again: ``relu_grad``
writes the gradient g, then ``sum(g)`` (beta's gradient) and ``batchnorm_grad_gamma(g, x,
mean, var)`` (gamma's) each read it back, and after the fused loop that writes the gradient
of x, the conv bias's ``sum_to_like`` reads that.  Every one of those reads is a pass over
an image that no cache holds ([256,28,28,16] f32 is 12.8 MB).  The value is in a register
when the loop before writes it, so when a program is bound, every ``sum``/``mean`` over
all axes but the last, ``sum_to_like`` down to the last axis, and ``batchnorm_grad_gamma``
over the last axis, reading the output of a generated kernel (runtime/generated.py), is
computed by that kernel (``generated.with_channel_sums``): the reduction's own call then
only finishes the ``[C]`` result (the mean's division; gamma's ``rsqrt(var + eps)``).

The IR is unchanged (``explain`` and ``ir`` show the reductions as before): this is a
choice of kernels, made with the static buffer plan, like the merged optimizer updates.
A ``centered`` sum needs ``x`` and ``mean`` when the producer runs, so it is taken only
where both exist by then.  Each column is summed in float64 (see ``with_channel_sums``):
the results differ from the reference's float32 sums by rounding, and are the same on
every run.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from netlang.ops.norm import inverse_std
from netlang.ops.rules import leading_axes


@dataclass(frozen=True)
class ChannelSum:
    """How a reduction reads its input: a plain sum (divided by ``divisor`` for a mean) or,
    ``centered``, batchnorm's sum of g * (x - mean) over ``extras`` = (x, mean)."""

    centered: bool = False
    divisor: int = 1
    extras: tuple[int, ...] = ()
    epsilon: float = 0.0


def channel_sum(call, source: int, source_type: tuple, types: Callable) -> ChannelSum | None:
    """What ``call`` sums of ``source`` over every axis but the last, or None.  ``types``
    gives a value's concrete ``(shape, dtype)`` (None where the sizes do not fix it)."""
    shape, dtype = source_type
    rank, op = len(shape), call.opdef.name
    if (rank < 2 or dtype.kind != "f" or call.args[0] != source or source in call.args[1:]
            or types(call.out) is None or types(call.out)[1] != dtype):
        return None
    channels = shape[-1]
    if op in ("sum", "mean") and leading_axes(call.attrs.get("axis"), rank) == rank - 1:
        return ChannelSum(divisor=math.prod(shape[:-1]) if op == "mean" else 1)
    if op == "sum_to_like":
        like = types(call.args[1])
        if like is not None and like[0] and like[0][-1] == channels and (
                math.prod(like[0]) == channels and len(like[0]) <= rank):
            return ChannelSum()
    if op == "batchnorm_grad_gamma" and call.attrs["axis"] % rank == rank - 1:
        x, mean, _var = call.args[1:]
        if types(x) == source_type and types(mean) == ((channels,), dtype):
            return ChannelSum(centered=True, extras=(x, mean), epsilon=call.attrs["epsilon"])
    return None


def fuse_channel_sums(program, bound, runs: list, views: dict, skip: set,
                      types: Callable) -> int:
    """Rewrite ``bound``'s calls so that each generated kernel whose output such reductions
    read computes their sums too (the module doc); ``views`` are the planned buffers, the
    calls in ``skip`` (in-place updates) keep theirs.  Returns how many reductions moved."""
    from netlang.runtime import generated  # Numba, imported when a program is bound

    position = {c.out: i for i, c in enumerate(program.calls)}
    readers = defaultdict(list)
    for j, call in enumerate(program.calls):
        for arg in dict.fromkeys(call.args):
            readers[arg].append(j)
    moved = 0
    for i, call in enumerate(program.calls):
        source_type = types(call.out)
        if i in skip or source_type is None or getattr(runs[i], "group", None) is None:
            continue
        taken = []
        for j in readers[call.out]:
            how = None if j in skip else channel_sum(program.calls[j], call.out, source_type,
                                                     types)
            if how is not None and all(position.get(a, -1) < i for a in how.extras):
                taken.append((j, how))
        fused = taken and generated.with_channel_sums(runs[i], [h.centered for _, h in taken])
        if not fused:
            continue
        out, _, args, dead = bound.calls[i]
        run = (lambda *arrays, _f=fused, _o=views[out]: _f(*arrays, out=_o)) \
            if out in views else fused
        extras = tuple(a for _, how in taken for a in how.extras)
        bound.calls[i] = (out, run, (*args, *extras), dead)
        for k, (j, how) in enumerate(taken):
            out_j, _, args_j, dead_j = bound.calls[j]
            finish = _finish(fused, k, how, views.get(out_j), types(out_j))
            bound.calls[j] = (out_j, finish, args_j, dead_j)
        moved += len(taken)
    return moved


def _finish(fused: Callable, k: int, how: ChannelSum, view, out_type: tuple) -> Callable:
    """The reduction's call once ``fused`` has summed for it: its result from sum ``k``,
    written into its planned buffer ``view`` where it has one."""
    shape, dtype = out_type

    def run(*arrays):
        result = np.empty(shape, dtype) if view is None else view
        total = fused.totals[k]
        if how.centered:          # * rsqrt(var + eps), in the dtype, as the reference
            var = arrays[3]
            np.multiply(total.astype(dtype), inverse_std(np, var, how.epsilon),
                        out=result.reshape(-1))
        else:
            np.copyto(result.reshape(-1), total / how.divisor if how.divisor != 1 else total,
                      casting="unsafe")
        return result
    return run
