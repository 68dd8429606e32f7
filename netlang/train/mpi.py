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
import socket
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
PING_SECONDS = 2.0             # how long a rank that timed out waits for the others' answers
PING_TAG, PONG_TAG = 7301, 7302
ABORT_GRACE_SECONDS = 0.5      # for mpiexec to pass on the error line before MPI_Abort
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
    pending: list = field(default_factory=list)   # sends of pings and answers (kept alive)
    processes: list = field(default_factory=list)  # (host, pid) of every rank, by rank
    in_flight: dict = field(default_factory=dict)  # id(out) -> (request, buffers, out)

    def describe_processes(self) -> str:
        """``PIDs 6114, 6115`` (with ``@host`` when the ranks run on several machines): an
        MPI that stops the run when a process dies names its PID."""
        hosts = {host for host, _ in self.processes}
        return "PIDs " + ", ".join(f"{pid}@{host}" if len(hosts) > 1 else str(pid)
                                   for host, pid in self.processes)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def reduce(self, x: np.ndarray, compress: str | None = None) -> np.ndarray:
        """The sum over ranks of ``x * weight``: the global batch's mean gradient when each
        rank's x is the mean over its slice.  ``compress="f16"`` sends float16 (an
        Allgather of the halves, summed here in float32).  ``start`` then ``finish``."""
        return self.finish(self.start(x, compress))

    def start(self, x: np.ndarray, compress: str | None = None) -> np.ndarray:
        """Begin ``reduce(x)`` (Iallreduce, or Iallgather of halves) and return the array the
        sum will be in once ``finish`` has waited for it.  Earlier reductions still under way
        get a chance to progress (MPI moves them along inside its calls)."""
        MPI = _mpi()
        began = time.perf_counter()
        for request, *_ in self.in_flight.values():
            request.Test()
        local = np.ascontiguousarray(x * x.dtype.type(self.weight))
        out = np.empty_like(local)
        if compress == "f16":
            half = local.astype(np.float16)
            gathered = np.empty((self.size, *half.shape), np.float16)
            request = self.comm.Iallgather(half, gathered)
            self.bytes_sent += half.nbytes
            self.in_flight[id(out)] = (request, (half, gathered), out)
        else:
            request = self.comm.Iallreduce(local, out, op=MPI.SUM)
            self.bytes_sent += 2 * local.nbytes * (self.size - 1) // self.size
            self.in_flight[id(out)] = (request, (local,), out)
        self.calls += 1
        self.seconds += time.perf_counter() - began
        return out

    def finish(self, out: np.ndarray) -> np.ndarray:
        """Wait for the reduction ``start`` began into ``out`` (with the timeout)."""
        began = time.perf_counter()
        request, buffers, _ = self.in_flight.pop(id(out))
        self.wait(request, "the gradients' sum")
        if len(buffers) == 2:                     # f16: the halves of every rank, summed
            out[...] = buffers[1].astype(np.float32).sum(axis=0)
        self.seconds += time.perf_counter() - began
        return out

    def wait(self, request, what: str) -> None:
        """Wait for a non-blocking collective, at most ``timeout`` seconds: a rank that died
        or hangs stops the run with an error naming it instead of a silent hang.  While it
        waits, a rank answers the others' pings (``silent_ranks``)."""
        deadline = time.monotonic() + self.timeout
        while not request.Test():
            self.answer_pings()
            if time.monotonic() > deadline:
                silent = self.silent_ranks()
                who = (f"rank{'s' if len(silent) > 1 else ''} "
                       f"{', '.join(map(str, silent))} did not answer"
                       if silent else "every rank answers but the collective did not finish")
                self.fail(UsageError(
                    f"rank {self.rank}: no result for {what} within {self.timeout:.0f} s: "
                    f"{who} (died or hangs)",
                    hint=f"the last checkpoint stays loadable; rerun with --resume "
                         f"(set {TIMEOUT_VARIABLE} to wait longer)"))
            time.sleep(POLL_SECONDS)

    def answer_pings(self) -> None:
        """Reply to every rank that asked whether this one is alive (see ``silent_ranks``)."""
        MPI = _mpi()
        status = MPI.Status()
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=PING_TAG, status=status):
            source = status.Get_source()
            self.comm.recv(source=source, tag=PING_TAG)
            self.pending.append(self.comm.isend(self.rank, dest=source, tag=PONG_TAG))

    def silent_ranks(self, patience: float = PING_SECONDS) -> list[int]:
        """The ranks that do not answer a ping within ``patience`` seconds.  A rank stuck in
        the same collective answers from its ``wait`` loop; one that died or hangs cannot."""
        MPI = _mpi()
        others = [r for r in range(self.size) if r != self.rank]
        self.pending += [self.comm.isend(self.rank, dest=r, tag=PING_TAG) for r in others]
        answered: set[int] = set()
        status = MPI.Status()
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline and len(answered) < len(others):
            self.answer_pings()
            while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=PONG_TAG, status=status):
                answered.add(self.comm.recv(source=status.Get_source(), tag=PONG_TAG))
            time.sleep(POLL_SECONDS)
        return [r for r in others if r not in answered]

    def fail(self, err: BaseException) -> None:
        """Say what went wrong on this rank and stop every rank (MPI_Abort): the others may
        be waiting in a collective that this rank will never join."""
        print(f"rank {self.rank} of {self.size}: {err}", file=sys.stderr, flush=True)
        # mpiexec forwards a rank's output through its own process; MPI_Abort tears that
        # down at once, and a line written just before was sometimes lost (1 run in 6)
        time.sleep(ABORT_GRACE_SECONDS)
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
            total = self._sum(value, f"the average of {name}")
            out[name] = (total / value.dtype.type(self.size)).astype(value.dtype)
        return out

    def _sum(self, value: np.ndarray, what: str) -> np.ndarray:
        """The elementwise sum over ranks, waited for with the timeout (as every collective
        after the start is: a rank that died then cannot hang the others)."""
        out = np.empty_like(value)
        self.wait(self.comm.Iallreduce(value, out, op=_mpi().SUM), what)
        return out

    def barrier(self, what: str) -> None:
        self.wait(self.comm.Ibarrier(), what)

    def summary(self, seconds: float, steps: int = 0) -> str:
        """The reductions: calls, bytes this rank sent, time spent in them (starting them and
        waiting for them; what overlapped the backward pass is not counted), and per step."""
        share = 100 * self.seconds / seconds if seconds > 0 else 0.0
        line = (f"MPI: {self.size} ranks, {self.calls} reductions, "
                f"{self.bytes_sent / 1e6:.2f} MB sent by rank {self.rank}, "
                f"{self.seconds:.2f} s in them ({share:.0f}% of {seconds:.1f} s)")
        if steps:
            line += (f"; a step: {1e3 * self.seconds / steps:.2f} ms in reductions, "
                     f"{1e3 * (seconds - self.seconds) / steps:.2f} ms the rest, "
                     f"{self.bytes_sent / steps / 1e6:.3f} MB sent")
        return line

    def total(self, values: np.ndarray) -> np.ndarray:
        """The elementwise sum of ``values`` (float64) over the ranks."""
        return self._sum(np.ascontiguousarray(values, np.float64), "the epoch's sums")


def join(device: str = "cpu") -> World:
    """Join the ranks mpiexec started (at most once per process) and install the gradient
    reduction for the ``allreduce`` ops: MPI's on the CPU, NCCL's for GPU ranks."""
    MPI = _mpi()
    comm = MPI.COMM_WORLD
    world = World(comm, comm.Get_rank(), comm.Get_size())
    world.processes = comm.allgather((socket.gethostname(), os.getpid()))
    if device in ("gpu", "cuda", "cupy"):
        from netlang.train.nccl import NcclReducer

        nccl = NcclReducer(world)
        collective.install(nccl.reduce, nccl.start, nccl.finish)
    else:
        collective.install(world.reduce, world.start, world.finish)
    return world
