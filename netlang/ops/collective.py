"""Collective ops: ``allreduce`` (and ``allreduce_start`` / ``allreduce_wait``, the same in
two halves), a value summed over the ranks of a data-parallel run.

The train step of ``mpiexec -n R netlang train`` reduces its gradients in buckets: each
bucket is the flat concatenation of a few MB of gradients, reduced by ONE ``allreduce``
and cut back into the gradients (``train/step.py``).  The op does not know MPI: the
training run installs the reduction (``train/mpi.py``'s ``World.reduce``: the sum over
ranks of each rank's weighted share) before its first step.  It is impure, so no pass merges,
folds or reorders it away.

Its gradient is the same reduction of the cotangent.  That matters where a forward value is
reduced: ``sync_batchnorm`` (``train/step.py``) makes every batchnorm's batch mean and variance
the weighted sum over ranks of each rank's, so the whole global batch is normalized together;
each rank's loss then depends on every rank's examples, and the cotangent of a rank's moment is
the sum of all ranks' cotangents of the global one, as PyTorch's SyncBatchNorm computes.
"""
from __future__ import annotations

from collections.abc import Callable

from netlang.errors import ExecutionError, ShapeError
from netlang.ir.types import TensorType
from netlang.ops.registry import defop
from netlang.ops.rules import flops_per_input, no_flops

COMPRESSIONS = ("f16",)
_reduce: list[Callable] = []          # the installed reduction (one per process)
_split: list[tuple[Callable, Callable]] = []   # ... as a start and a finish


def install(reduce: Callable, start: Callable | None = None,
            finish: Callable | None = None) -> None:
    """The reduction ``allreduce`` runs, ``reduce(array, compress) -> array``, and the same
    split in two for ``allreduce_start`` / ``allreduce_wait``: ``start(array, compress) ->
    out`` begins it (out is filled later) and ``finish(out) -> out`` waits for it."""
    _reduce[:] = [reduce]
    _split[:] = [(start, finish)] if start is not None else []


def installed() -> bool:
    return bool(_reduce)


def _allreduce_rule(x: TensorType, compress) -> TensorType:
    if not x.dtype.is_float:
        raise ShapeError(f"allreduce sums floats, got {x}")
    if compress is not None and compress not in COMPRESSIONS:
        raise ShapeError(f"allreduce: compress must be f16 or none, got {compress!r}")
    return x


def _not_a_rank() -> ExecutionError:
    return ExecutionError("allreduce sums over the ranks of a run under mpiexec; this "
                          "process is not one", hint="mpiexec -n R netlang train FILE")


def _allreduce_kernel(xp, x, compress=None):
    if not _reduce:
        raise _not_a_rank()
    return xp.asarray(_reduce[0](x, compress))


def _start_kernel(xp, x, compress=None):
    if not _split:
        raise _not_a_rank()
    return _split[0][0](x, compress)


def _wait_kernel(xp, started):
    if not _split:
        raise _not_a_rank()
    return xp.asarray(_split[0][1](started))


defop("allreduce", arity=1, shape=_allreduce_rule, attrs={"compress": None}, pure=False,
      flops=flops_per_input(1), kernel=_allreduce_kernel,
      vjp=lambda b, n, g: (b.allreduce(g),),
      doc="The sum over the ranks of each rank's (weighted) x: data-parallel gradients, and "
          "sync_batchnorm's moments; its VJP reduces the cotangent the same way.")

# The gradients' reduction in two halves, so that it overlaps the rest of the backward pass:
# the executor's schedule (runtime/program.py, ``EARLY_OPS``) runs each ``allreduce_start``
# as soon as its bucket's gradients exist, and ``allreduce_wait`` stays where the optimizer
# first needs the sum.  Between the two the array ``allreduce_start`` returned is being
# written by MPI: nothing but ``allreduce_wait`` reads it.
defop("allreduce_start", arity=1, shape=_allreduce_rule, attrs={"compress": None},
      pure=False, flops=flops_per_input(1), kernel=_start_kernel,
      nondiff="allreduce_start sums gradients over ranks after the backward pass",
      doc="Begin the sum over ranks of each rank's (weighted) x; allreduce_wait gives it.")

def _wait_rule(started: TensorType) -> TensorType:
    return _allreduce_rule(started, None)


defop("allreduce_wait", arity=1, shape=_wait_rule, pure=False,
      flops=no_flops, kernel=_wait_kernel,
      nondiff="allreduce_wait ends a reduction of gradients",
      doc="The sum that allreduce_start began, once every rank's share has arrived.")
