"""Data-parallel training over MPI: the one module that imports mpi4py (``netlang[mpi]``).

``mpiexec -n R netlang train FILE`` starts R processes (ranks) that train one model: the
spec's ``batch`` is the global batch, each rank takes its slice of every global batch (in
the single process's global order), and the train step sums each rank's share of the
gradient with ``Allreduce`` before the optimizer's update (``ops/collective.py``'s
``allreduce`` op, one call per bucket of a few MB of gradients), so every rank takes the
same step.  ``compress f16`` sends float16 and sums in float32.

Nothing here is imported by a one-process run.  ``world()`` tells from the environment
mpiexec sets whether this process is one of several ranks.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from netlang.errors import UsageError
from netlang.ops import collective

INSTALL_HINT = "install the MPI extra: pip install 'netlang[mpi]' (mpi4py and MPICH)"
TIMEOUT_VARIABLE = "NETLANG_MPI_TIMEOUT"
DEFAULT_TIMEOUT = 300.0        # seconds a collective waits for the other ranks
POLL_SECONDS = 1e-4
def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise UsageError("training on several ranks needs mpi4py, which is not installed",
                         hint=INSTALL_HINT) from None
    return MPI


@dataclass
class World:
    """This process's place among the ranks, and the gradient reduction it runs."""

    comm: object
    rank: int
    size: int
    weight: float = 1.0            # this rank's share of the current global batch
    timeout: float = field(default_factory=lambda: float(
        os.environ.get(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT)))
    seconds: float = 0.0           # time spent in Allreduce (and Allgather), summed
    bytes_sent: int = 0
    calls: int = 0
    stats: dict = field(default_factory=dict)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def reduce(self, x: np.ndarray, compress: str | None = None) -> np.ndarray:
        """The sum over ranks of ``x * weight``: the global batch's mean gradient when each
        rank's x is the mean over its slice.  ``compress="f16"`` sends float16 (an
        Allgather of the halves, summed here in float32)."""
        MPI = _mpi()
        start = time.perf_counter()
        local = np.ascontiguousarray(x * x.dtype.type(self.weight))
        if compress == "f16":
            half = local.astype(np.float16)
            gathered = np.empty((self.size, *half.shape), np.float16)
            self.comm.Allgather(half, gathered)
            out = gathered.astype(np.float32).sum(axis=0).astype(x.dtype)
            self.bytes_sent += half.nbytes
        else:
            out = np.empty_like(local)
            self.wait(self.comm.Iallreduce(local, out, op=MPI.SUM), "the gradients' sum")
            self.bytes_sent += 2 * local.nbytes * (self.size - 1) // self.size
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def wait(self, request, what: str) -> None:
        """Wait for a non-blocking collective, at most ``timeout`` seconds: a rank that died
        or hangs stops the run with an error instead of a silent hang."""
        deadline = time.monotonic() + self.timeout
        while not request.Test():
            if time.monotonic() > deadline:
                self.fail(UsageError(
                    f"rank {self.rank}: no answer from the other ranks for {what} within "
                    f"{self.timeout:.0f} s; one of them died or hangs",
                    hint=f"the last checkpoint stays loadable; rerun with --resume "
                         f"(set {TIMEOUT_VARIABLE} to wait longer)"))
            time.sleep(POLL_SECONDS)

    def fail(self, err: BaseException) -> None:
        """Say what went wrong on this rank and stop every rank (MPI_Abort): the others may
        be waiting in a collective that this rank will never join."""
        print(f"rank {self.rank} of {self.size}: {err}", file=sys.stderr, flush=True)
        self.comm.Abort(1)

    def agree(self, what: str, value: str) -> None:
        """Refuse to start when the ranks disagree on ``value`` (the spec's hash, ...)."""
        values = self.comm.allgather(value)
        if len(set(values)) > 1:
            other = next(r for r, v in enumerate(values) if v != values[0])
            raise UsageError(f"rank {other} has another {what} than rank 0 "
                             f"({values[other]} vs {values[0]})",
                             hint="start every rank with the same spec and options")

    def average_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each array averaged over the ranks (batchnorm's moving statistics, which each
        rank moves with its own batch statistics)."""
        out = {}
        for name, value in arrays.items():
            value = np.ascontiguousarray(value)
            total = np.empty_like(value)
            self.comm.Allreduce(value, total, op=_mpi().SUM)
            out[name] = (total / value.dtype.type(self.size)).astype(value.dtype)
        return out

    def summary(self, seconds: float) -> str:
        """One line on the reduction: calls, bytes this rank sent, time spent waiting."""
        share = 100 * self.seconds / seconds if seconds > 0 else 0.0
        return (f"MPI: {self.size} ranks, {self.calls} gradient reductions, "
                f"{self.bytes_sent / 1e6:.2f} MB sent by rank {self.rank}, "
                f"{self.seconds:.2f} s in them ({share:.0f}% of {seconds:.1f} s)")

    def total(self, values: np.ndarray) -> np.ndarray:
        """The elementwise sum of ``values`` (float64) over the ranks."""
        values = np.ascontiguousarray(values, np.float64)
        out = np.empty_like(values)
        self.comm.Allreduce(values, out, op=_mpi().SUM)
        return out

    def all_ok(self, ok: bool) -> bool:
        """True when every rank says ok (a rank that failed makes the others stop)."""
        return bool(self.comm.allreduce(int(ok), op=_mpi().MIN))


def join() -> World:
    """Join the ranks mpiexec started (at most once per process) and install the gradient
    reduction for the ``allreduce`` op."""
    MPI = _mpi()
    comm = MPI.COMM_WORLD
    world = World(comm, comm.Get_rank(), comm.Get_size())
    collective.install(world.reduce)
    return world
