"""Collective ops: ``allreduce``, a value summed over the ranks of a data-parallel run.

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
from netlang.ops.rules import flops_per_input

COMPRESSIONS = ("f16",)
_reduce: list[Callable] = []          # the installed reduction (one per process)


def install(reduce: Callable) -> None:
    """The reduction ``allreduce`` runs: ``reduce(array, compress) -> array``."""
    _reduce[:] = [reduce]


def installed() -> bool:
    return bool(_reduce)


def _allreduce_rule(x: TensorType, compress) -> TensorType:
    if not x.dtype.is_float:
        raise ShapeError(f"allreduce sums floats, got {x}")
    if compress is not None and compress not in COMPRESSIONS:
        raise ShapeError(f"allreduce: compress must be f16 or none, got {compress!r}")
    return x


def _allreduce_kernel(xp, x, compress=None):
    if not _reduce:
        raise ExecutionError("allreduce sums over the ranks of a run under mpiexec; this "
                             "process is not one", hint="mpiexec -n R netlang train FILE")
    return xp.asarray(_reduce[0](x, compress))


defop("allreduce", arity=1, shape=_allreduce_rule, attrs={"compress": None}, pure=False,
      flops=flops_per_input(1), kernel=_allreduce_kernel,
      vjp=lambda b, n, g: (b.allreduce(g),),
      doc="The sum over the ranks of each rank's (weighted) x: data-parallel gradients, and "
          "sync_batchnorm's moments; its VJP reduces the cotangent the same way.")
