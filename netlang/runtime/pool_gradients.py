"""A max pooling's gradient, the relu gradient after it and a bias's sum as one loop.

A conv -> relu -> maxpool block (mnist.net has two) differentiates as

    dr = maxpool_grad(r, p, g)     # r the relu's output, p the pool's, g the pool's gradient
    dc = relu_grad(dr, r)          # the convolution's output gradient
    db = sum_to_like(dc, b)        # its bias's, summed in relu_grad's loop (channel_sums)

and a conv -> batchnorm -> relu -> maxpool block (the Fashion-MNIST and augmented MNIST
recipes) the same way, dc then summed for beta's gradient and, times (xb - mean) with xb
the batchnorm's input, for gamma's (``batchnorm_grad_gamma``).

dr is as large as the image ([64,24,24,32] f32: 4.7 MB) and is written once, to be read
back once, a pass later, from memory.  Where maxpool_grad runs the loop over 2x2 windows
that tile the image (``cpu_loops._maxpool_grad_2x2``), a bound program's relu_grad call
runs that loop on (r, p, g) instead (``cpu_loops.maxpool_relu_grad``): the same picks, each
times ``r > 0`` as relu_grad multiplies, so dc is the two calls' bit for bit; and the loop
sums the rows of dc it has just written (still in cache) for each sum of dc over all axes
but the last (a bias's ``sum_to_like``, a ``sum`` or ``mean``; gamma's centered sum, reading
xb's rows), in float64, in blocks of rows the shape fixes.  Those sums differ from relu_grad's
loop's (float64 too) only in their order.  Where dc feeds another kind of sum, relu_grad's
generated loop, which takes them all, stays.

With the buffer plan the maxpool_grad call then computes nothing (dr is made nowhere).
Without it (a run whose ``on_step`` hook is shown every value: the non-finite search) that
call still runs, so the hook sees dr, and relu_grad's call computes dc as with the plan:
the same bits either way.  Nothing changes in the IR: ``ir`` and ``explain`` show the three
ops, as for the sums a generated loop takes (``channel_sums``).

mnist.net's two blocks inside the train step (``netlang bench --profile 40``, two
interleaved runs each, busy 2-core AMD EPYC, 2026-12-07), maxpool_grad + relu_grad ms per
step: batch 64 1.08 / 0.93 -> 0.68 / 0.74, batch 256 4.31 / 3.74 -> 2.67 / 2.70 (the one
loop moves ~38 MB at 256, near this machine's bandwidth).  Whole steps, three pairs,
samples/s: 4,870 / 5,448 / 5,268 -> 5,017 / 5,392 / 5,605 at 64, 5,427 / 5,904 / 6,078 ->
6,066 / 6,027 / 5,994 at 256 (within the host's noise).  fashion.net at batch 128 (three
blocks with batchnorm, two pooled: 32 and 64 channels): maxpool_grad + relu_grad 8.3 / 9.3
-> 3.8 / 3.7 ms of a ~38 ms step; whole steps, four pairs, 3,074 / 1,876 / 3,301 / 2,993
-> 3,383 / 3,222 / 3,165 / 3,325 samples/s.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from netlang.runtime.channel_sums import ChannelSum, channel_sum, finish_sum

# Images of fewer channels keep the two calls: the loop over a window's channels is then
# too short to hide the sums (median ms, the two calls in a step / the one loop alone,
# [64,28,28,4]: 0.10 + ~0.05 / 0.14-0.20; [256,28,28,4]: ~0.35 + ~0.12 / 0.55-0.92).
FROM_CHANNELS = 16


@dataclass(frozen=True)
class PooledRelu:
    """A relu_grad call (``index``) that runs ``run`` over its maxpool_grad's arguments, and
    the reductions whose sums ``run`` takes: (call index, how, its index in ``run.totals``)."""

    index: int
    run: Callable
    sums: tuple[tuple[int, ChannelSum, int], ...]


def fuse_pool_relu_grads(program, bound, runs: list, types: Callable,
                         made_nowhere: Callable | None) -> list[PooledRelu]:
    """Rewrite ``bound``'s calls and ``runs`` (before the buffer plan, which then sees the
    new arguments) as the module doc says.  ``types`` gives a value's concrete ``(shape,
    dtype)`` (None where the sizes do not fix it); ``made_nowhere``: the run of a call whose
    value nothing stores (the executor's), or None to keep the maxpool_grad calls running.
    Returns the fused calls, for ``finish_sums`` once the reductions' buffers are known."""
    from netlang.runtime.cpu_loops import maxpool_relu_grad

    readers = defaultdict(list)
    for j, call in enumerate(program.calls):
        for arg in dict.fromkeys(call.args):
            readers[arg].append(j)
    escaping = {*program.fetches, *program.updates.values()}
    updated = set(program.updates.values())
    position = {c.out: i for i, c in enumerate(program.calls)}
    fused = []
    for i, call in enumerate(program.calls):
        if call.opdef.name != "maxpool_grad" or not getattr(runs[i], "tiles_2x2", False):
            continue
        x = call.args[0]
        if call.out in escaping or len(readers[call.out]) != 1:
            continue
        j = readers[call.out][0]
        relu = program.calls[j]
        image = types(x)
        if (relu.opdef.name != "relu_grad" or relu.args != (call.out, x) or image is None
                or types(relu.out) != image or types(call.out) != image
                or image[0][-1] < FROM_CHANNELS or relu.out in updated):
            continue
        taken = _sums_of(program, relu.out, image, types, readers, updated, position, j)
        if taken is None:
            continue
        sums, extras = taken
        plain = any(how.kind == "sum" for _, how, _ in sums)
        run = maxpool_relu_grad(image[0], np.dtype(image[1]), plain, bool(extras))
        out, pool_run, args, dead = bound.calls[i]
        moved = tuple(d for d in dead if d in args)       # read by the fused call now
        kept = tuple(d for d in dead if d not in moved)
        bound.calls[i] = ((out, made_nowhere, (), kept) if made_nowhere is not None
                          else (out, pool_run, args, kept))
        if made_nowhere is not None:
            runs[i] = made_nowhere
        relu_out, _, _, relu_dead = bound.calls[j]
        bound.calls[j] = (relu_out, run, (*args, *extras), (*relu_dead, *moved))
        runs[j] = run
        fused.append(PooledRelu(j, run, sums))
    return fused


def _sums_of(program, value, image, types, readers, updated, position, at):
    """The reductions of ``value`` the pooled loop at call ``at`` can take, each ``(call
    index, how, index in run.totals)``, and the centered sums' ``(x, mean)`` (or ``()``);
    None where some reader sums it another way, or centered sums disagree on their x and
    mean, or those are not made before ``at``."""
    sums, extras = [], set()
    for k in readers[value]:
        if program.calls[k].out in updated:
            continue
        how = channel_sum(program.calls[k], value, image, types)
        if how is None:
            continue
        if how.kind not in ("sum", "centered"):
            return None
        sums.append((k, how))
        if how.kind == "centered":
            extras.add(how.extras)
    if len(extras) > 1 or any(position.get(a, -1) >= at for e in extras for a in e):
        return None
    plain = any(how.kind == "sum" for _, how in sums)
    return (tuple((k, how, int(plain) if how.kind == "centered" else 0) for k, how in sums),
            next(iter(extras), ()))


def finish_sums(bound, fused: list[PooledRelu], views: dict, types: Callable) -> None:
    """Each reduction a fused call sums for finishes from its ``run.totals`` into its
    planned buffer (``views``), where it has one."""
    for pooled in fused:
        for index, how, k in pooled.sums:
            out, _, args, dead = bound.calls[index]
            bound.calls[index] = (out, finish_sum(pooled.run, k, how, views.get(out),
                                                  types(out)), args, dead)
