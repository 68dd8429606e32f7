"""GPU ranks: the gradients' sums through NCCL (``cupy.cuda.nccl``), one GPU per rank.

``mpiexec -n R netlang train FILE --device gpu`` runs R ranks that each drive one GPU of their
machine (the i-th rank on a machine takes GPU i).  MPI still starts the ranks, agrees on the
network and carries NCCL's unique id from rank 0 to the others; the gradient buckets then go
GPU to GPU with NCCL's allReduce instead of through host memory:

- a reduction is queued on the GPU's current stream, so kernels after it see the sum and the
  host never waits for it (``start`` queues, ``finish`` hands back the same array: the
  stream orders the rest of the step after it);
- ``compress f16`` sends halves (an allGather of float16) and sums them in float32, as the
  MPI path does;
- each rank's share of a batch weights its gradient, as on the CPU (``World.weight``).

CuPy (and its NCCL binding) is imported by ``runtime/backend.py`` alone; this module asks it.
NCCL has no timeout of its own: a GPU rank that dies can leave the others waiting in a
reduction (the CPU path's timeout covers only MPI's collectives).
"""
from __future__ import annotations

import time

from netlang.errors import DeviceError
from netlang.runtime.backend import import_cupy, import_nccl
from netlang.runtime.threads import local_rank, local_ranks


class NcclReducer:
    """The ``allreduce`` ops' reduction for GPU ranks (``train/mpi.py`` installs it)."""

    def __init__(self, world):
        cupy = import_cupy()
        self.cupy, self.world, self.nccl = cupy, world, import_nccl()
        gpus = int(cupy.cuda.runtime.getDeviceCount())
        if local_ranks() > gpus:
            raise DeviceError(f"{local_ranks()} ranks on this machine but {gpus} GPU"
                              f"{'s' if gpus != 1 else ''}: NCCL takes one GPU per rank",
                              hint=f"start at most {gpus} ranks per machine")
        cupy.cuda.Device(local_rank()).use()
        uid = self.nccl.get_unique_id() if world.rank == 0 else None
        uid = world.comm.bcast(uid, root=0)
        self.comm = self.nccl.NcclCommunicator(world.size, uid, world.rank)
        self.codes = {"float32": self.nccl.NCCL_FLOAT32, "float64": self.nccl.NCCL_FLOAT64,
                      "float16": self.nccl.NCCL_FLOAT16}

    def _code(self, dtype) -> int:
        code = self.codes.get(str(dtype))
        if code is None:
            raise DeviceError(f"NCCL reductions take float16, float32 or float64, not {dtype}")
        return code

    def start(self, x, compress: str | None = None):
        """Queue the weighted sum over ranks of ``x`` on the current stream."""
        cupy, world = self.cupy, self.world
        began = time.perf_counter()
        stream = cupy.cuda.get_current_stream().ptr
        local = cupy.ascontiguousarray(x * x.dtype.type(world.weight))
        if compress == "f16":
            half = local.astype(cupy.float16)
            gathered = cupy.empty((world.size, *half.shape), cupy.float16)
            self.comm.allGather(half.data.ptr, gathered.data.ptr, half.size,
                                self.nccl.NCCL_FLOAT16, stream)
            out = gathered.astype(cupy.float32).sum(axis=0).astype(x.dtype)
            world.bytes_sent += half.nbytes
        else:
            out = cupy.empty_like(local)
            self.comm.allReduce(local.data.ptr, out.data.ptr, local.size,
                                self._code(local.dtype), self.nccl.NCCL_SUM, stream)
            world.bytes_sent += 2 * local.nbytes * (world.size - 1) // world.size
        world.calls += 1
        world.seconds += time.perf_counter() - began
        return out

    def finish(self, out):
        """The sum ``start`` queued: the stream runs what follows after it."""
        return out

    def reduce(self, x, compress: str | None = None):
        return self.start(x, compress)
