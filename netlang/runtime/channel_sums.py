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

A batchnorm's forward reads its input twice the same way: ``mean(x)``, then
``batch_variance(x, mean)``.  Where the generated kernel writing ``x`` takes the mean's sum,
it also takes the sum of squares, and the variance is finished from the two moments
(``moments``); where ``x`` comes from a library kernel (a oneDNN convolution), the mean's
call sums x and x squared in one pass (``fuse_moments``, ``cpu_loops.channel_moments``) and
the variance's only finishes.  The variance about the given mean m (the batch mean, in the
dtype) is ``E[x^2] - 2 m E[x] + m^2`` in float64, never below 0: float64 sums of float32
values keep the cancellation far below float32's rounding unless a channel's mean is
thousands of times its spread.

Where nothing but the reductions a generated kernel takes reads its output, and no run
returns it (a batchnorm's relu gradient once the gradient of x's loop recomputes it:
passes/relu_mask.py), a planned run's kernel takes the sums and stores nothing: one pass over
the image fewer.

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
    """How a reduction reads its input: a plain sum (``"sum"``, divided by ``divisor`` for a
    mean), batchnorm's sum of g * (x - mean) over ``extras`` = (x, mean) (``"centered"``),
    or a batch variance's two moments, the sums of x and of x squared (``"moments"``)."""

    kind: str = "sum"
    divisor: int = 1
    extras: tuple[int, ...] = ()
    epsilon: float = 0.0

    @property
    def sums(self) -> tuple[str, ...]:
        """The sums the producer's loop takes for it (``generated.with_channel_sums``)."""
        return ("sum", "squares") if self.kind == "moments" else (self.kind,)


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
            return ChannelSum("centered", extras=(x, mean), epsilon=call.attrs["epsilon"])
    if (op == "batch_variance" and call.attrs["axis"] % rank == rank - 1
            and types(call.args[1]) == ((channels,), dtype)):
        return ChannelSum("moments", divisor=math.prod(shape[:-1]))
    return None


def fuse_channel_sums(program, bound, runs: list, views: dict, skip: set,
                      types: Callable, planned: bool = False) -> int:
    """Rewrite ``bound``'s calls so that each generated kernel whose output such reductions
    read computes their sums too (the module doc); ``views`` are the planned buffers, the
    calls in ``skip`` (in-place updates) keep theirs.  In a ``planned`` program (no hook
    sees the values), a kernel whose output nothing but those reductions reads, and no run
    returns, takes the sums without storing it.  Returns how many reductions moved."""
    from netlang.runtime import generated  # Numba, imported when a program is bound

    position = {c.out: i for i, c in enumerate(program.calls)}
    readers = defaultdict(list)
    for j, call in enumerate(program.calls):
        for arg in dict.fromkeys(call.args):
            readers[arg].append(j)
    moved, done = 0, set()
    returned = {*program.fetches, *program.updates.values()}
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
        store = not (planned and call.out not in returned
                     and set(readers[call.out]) <= {j for j, _ in taken})
        fused = taken and generated.with_channel_sums(
            runs[i], [kind for _, how in taken for kind in how.sums], store)
        if not fused:
            continue
        out, _, args, dead = bound.calls[i]
        run = (lambda *arrays, _f=fused, _o=views[out]: _f(*arrays, out=_o)) \
            if out in views else fused
        extras = tuple(a for _, how in taken for a in how.extras)
        bound.calls[i] = (out, run, (*args, *extras), dead)
        k = 0
        for j, how in taken:
            out_j, _, args_j, dead_j = bound.calls[j]
            finish = finish_sum(fused, k, how, views.get(out_j), types(out_j))
            bound.calls[j] = (out_j, finish, args_j, dead_j)
            k += len(how.sums)
        moved += len(taken)
        done.update(j for j, _ in taken)
    return moved + fuse_moments(program, bound, views, skip | done, types)


def fuse_moments(program, bound, views: dict, skip: set, types: Callable) -> int:
    """Each ``batch_variance(x, m)`` over all but the last axis whose ``x`` a ``mean(x)`` call
    before it also reads (a batchnorm's forward over a library kernel's output): the mean's
    call takes both moments of ``x`` in one pass and the variance's call finishes from them
    (the module doc).  Calls in ``skip`` keep their kernels.  Returns how many moved."""
    from netlang.runtime.cpu_loops import channel_moments

    moved = 0
    for j, call in enumerate(program.calls):
        x = call.args[0] if call.args else None
        x_type = types(x) if x is not None else None
        how = None if j in skip or x_type is None else channel_sum(call, x, x_type, types)
        if how is None or how.kind != "moments":
            continue
        mean_call = next((i for i in range(j) if i not in skip
                          and program.calls[i].opdef.name == "mean"
                          and program.calls[i].args == (x,)
                          and channel_sum(program.calls[i], x, x_type, types) is not None),
                         None)
        moments = channel_moments(*x_type) if mean_call is not None else None
        if moments is None:
            continue
        out_i, _, args_i, dead_i = bound.calls[mean_call]
        taking = _taking(moments, views.get(out_i), types(out_i), how.divisor)
        bound.calls[mean_call] = (out_i, taking, args_i, dead_i)
        out_j, _, args_j, dead_j = bound.calls[j]
        bound.calls[j] = (out_j, finish_sum(taking, 0, how, views.get(out_j), types(out_j)),
                          args_j, dead_j)
        skip = skip | {mean_call, j}
        moved += 1
    return moved


def _taking(moments: Callable, view, out_type: tuple, divisor: int) -> Callable:
    """The mean's call as one pass over x taking both moments (``run.totals``), its own
    result the first divided by ``divisor``, written into its planned buffer ``view``."""
    shape, dtype = out_type

    def run(x):
        run.totals = list(moments(x))
        result = np.empty(shape, dtype) if view is None else view
        np.copyto(result.reshape(-1), run.totals[0] / divisor, casting="unsafe")
        return result
    run.totals = []
    return run


def finish_sum(fused: Callable, k: int, how: ChannelSum, view, out_type: tuple) -> Callable:
    """The reduction's call once ``fused`` has summed for it: its result from sum ``k``,
    written into its planned buffer ``view`` where it has one."""
    shape, dtype = out_type

    def run(*arrays):
        result = np.empty(shape, dtype) if view is None else view
        total = fused.totals[k]
        if how.kind == "centered":          # * rsqrt(var + eps), in the dtype, as the reference
            var = arrays[3]
            np.multiply(total.astype(dtype), inverse_std(np, var, how.epsilon),
                        out=result.reshape(-1))
        elif how.kind == "moments":         # E[x^2] - 2 m E[x] + m^2 about the given mean
            m = arrays[1].reshape(-1).astype(np.float64)
            first, second = total / how.divisor, fused.totals[k + 1] / how.divisor
            np.copyto(result.reshape(-1), np.maximum(second - 2 * m * first + m * m, 0.0),
                      casting="unsafe")
        else:
            np.copyto(result.reshape(-1), total / how.divisor if how.divisor != 1 else total,
                      casting="unsafe")
        return result
    return run
