"""The one place that sizes the CPU thread pools: OpenBLAS's (NumPy's GEMMs), OpenMP's
(libgomp, which runs oneDNN's primitives) and Numba's (generated kernels, runtime/jit.py;
its ``omp`` threading layer runs on the same libgomp).

A training step alternates the two: a oneDNN convolution, then a NumPy GEMM for a dense
layer, then oneDNN again.  OpenMP gets the usable cores (the machine we measure on has 2)
and BLAS one thread (``BLAS_THREADS``), and neither may keep spinning on the cores while the
other works: libgomp's default lets its idle workers spin (``GOMP_SPINCOUNT``) after every
parallel region; with ``OMP_WAIT_POLICY=passive`` they sleep at once.
``tools/bench_onednn.py --threads [--blas-threads N]`` measures the interleaved step under
each policy in fresh processes; passive is never slower and much faster when both pools
have 2 threads or the machine is busy (numbers at ``WAIT_POLICY``), so it is the default.

Nothing here runs at import.  The CPU backend calls ``configure_cpu_threads()`` once,
explicitly, BEFORE the first oneDNN kernel is built: libgomp reads ``OMP_WAIT_POLICY`` and
``OMP_NUM_THREADS`` only when it is loaded.  The returned ``ThreadSetting`` says what was
set, and what could not be (libgomp already loaded by someone else).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from threadpoolctl import threadpool_info, threadpool_limits

from netlang.runtime import jit, onednn

# Measured with tools/bench_onednn.py --threads on 2 cores (libgomp 2 threads; one step =
# mnist's conv2 forward, backward-data and backward-weights, each followed by a
# [64,1024]x[1024,1024] NumPy GEMM; median of 31 steps, median of 3 fresh processes):
#   quiet machine, 2 BLAS threads:  default 31.8 ms, passive 19.0 ms, active 35.6 ms
#   quiet machine, 1 BLAS thread:   default 13.9 ms, passive 14.0 ms, active 18.2 ms
#   load ~4.5, 2 BLAS threads:      default 328 ms,  passive 228 ms,  active 323 ms
# With two pools on two cores, libgomp's spinning workers steal the GEMM's cores; passive
# removes that and costs nothing measurable once BLAS has one thread (BLAS_THREADS below).
WAIT_POLICY = "passive"

# OpenBLAS's own pthread pool busy-waits at every GEMM's barrier.  With a second busy process
# on one of the two cores that collapses: mnist.net's step at batch 64 took 1,064 ms with 2
# BLAS threads against 39 ms with 1 (load average ~4.5, 2026-12-04), while oneDNN's OpenMP pool
# with the passive policy stayed at 31 ms on 2 threads.  So GEMMs get one BLAS thread and
# both cores go to oneDNN's primitives, which degrade gracefully.
BLAS_THREADS = 1


@dataclass
class ThreadSetting:
    """What ``configure_cpu_threads`` set, for the backend to log or show."""

    threads: int
    blas: str                     # e.g. "openblas: 2 threads"
    openmp: str                   # e.g. "libgomp: 2 threads, OMP_WAIT_POLICY=passive"
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return "; ".join([self.blas, self.openmp, *self.notes])


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not Linux
        return os.cpu_count() or 1


def libgomp_loaded() -> bool:
    return any(pool["user_api"] == "openmp" for pool in threadpool_info())


# What the process managers of MPICH (hydra) and Open MPI set for each rank they start.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK")
LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")
LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK")


def _from_environment(names, default: int = 1) -> int:
    for name in names:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return default


def launched_ranks() -> int:
    """How many ranks mpiexec started this process among (1 when it did not); read from the
    environment, so a one-process run imports nothing of MPI."""
    return _from_environment(SIZE_VARIABLES)


def launched_rank() -> int:
    """This process's rank among them (0 when mpiexec did not start it)."""
    return _from_environment(RANK_VARIABLES, 0) if launched_ranks() > 1 else 0


def local_ranks() -> int:
    """How many of those ranks share this machine (and its cores)."""
    return _from_environment(LOCAL_SIZE_VARIABLES) if launched_ranks() > 1 else 1


def local_rank() -> int:
    """This process's place among the ranks on its machine (which GPU a GPU rank takes)."""
    return _from_environment(LOCAL_RANK_VARIABLES, 0) if launched_ranks() > 1 else 0


def configure_cpu_threads(threads: int | None = None,
                          wait_policy: str | None = WAIT_POLICY,
                          blas_threads: int | None = BLAS_THREADS) -> ThreadSetting:
    """Size OpenMP to ``threads`` (default: the usable cores) with ``wait_policy`` (None:
    leave libgomp's default) and BLAS to ``blas_threads`` (None: as many), then load oneDNN.
    Process-wide, by design and by name: call it once, before the first oneDNN kernel."""
    threads = threads or max(1, usable_cores() // local_ranks())   # ranks share the cores
    notes = []
    if libgomp_loaded():
        notes.append("libgomp was already loaded: OMP_WAIT_POLICY and OMP_NUM_THREADS "
                     "left as they were")
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if wait_policy is not None:
            os.environ["OMP_WAIT_POLICY"] = wait_policy
    if not onednn.available():
        notes.append(onednn.unavailable_reason())
    threadpool_limits(limits=min(blas_threads or threads, threads), user_api="blas")
    threadpool_limits(limits=threads, user_api="openmp")
    numba_threads = jit.set_threads(threads)
    notes.append(f"numba: {numba_threads} threads")
    return ThreadSetting(threads, pools_line("blas"), pools_line("openmp"), notes)


def pools_line(user_api: str) -> str:
    pools = [p for p in threadpool_info() if p["user_api"] == user_api]
    if not pools:
        return f"{user_api}: none loaded"
    name = "prefix" if user_api == "openmp" else "internal_api"   # libgomp, openblas
    text = ", ".join(f"{p[name]}: {p['num_threads']} threads" for p in pools)
    if user_api == "openmp":
        text += f", OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}"
    return text
