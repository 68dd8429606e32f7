"""The one place that sizes the CPU thread pools: OpenBLAS's (NumPy's GEMMs), OpenMP's
(libgomp, which runs oneDNN's primitives) and Numba's (generated kernels, runtime/jit.py;
its ``omp`` threading layer runs on the same libgomp).

A training step alternates them: a oneDNN convolution, then a NumPy GEMM for a dense layer,
then generated kernels, then oneDNN again.  OpenMP gets the usable cores (the machine we
measure on has 2) and BLAS one thread (``BLAS_THREADS``).  Between two parallel regions
libgomp's idle workers spin for ``GOMP_SPINCOUNT`` rounds, then sleep.  Its default (300,000
rounds, milliseconds) steals the cores from whoever needs them next, and its passive policy
(sleep at once) costs a wake-up (~10-100 us) per region, which a step of many small kernels
pays hundreds of times: ``SPIN_COUNT`` sits between the two (numbers there).  A user's own
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` wins (``OMP_WAIT_POLICY=passive`` on a busy shared
machine).  ``tools/bench_threads.py`` times whole steps under each choice.

Nothing here runs at import.  The netlang command calls ``configure_cpu_threads()`` once,
explicitly, BEFORE the first oneDNN kernel is built (a program using the Python API may call
it, as ``netlang.configure_threads``; else its first CPU session does, and says so:
``cpu_threads_for_netlang``): libgomp reads ``OMP_WAIT_POLICY``,
``GOMP_SPINCOUNT`` and ``OMP_NUM_THREADS`` only when it is loaded.  Numba, when it is not
imported yet, gets ``NUMBA_NUM_THREADS`` (its pool's size, read at its import), so that
setting the pools imports no Numba.  The returned
``ThreadSetting`` says what was set, and what could not be (libgomp already loaded by
someone else).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from threadpoolctl import threadpool_info, threadpool_limits

from netlang.runtime import onednn

# How long libgomp's idle workers spin before they sleep (rounds of a pause instruction).
# Whole training steps at batch 64, ms per step, each setting in a fresh process, two rounds
# (``python3 tools/bench_threads.py --load``, 2 cores, 2026-12-06; loops on both threads
# from 64K elements, and from 16M for the passive column's old default):
#                      spin 0 (passive)  passive, 16M   spin 10,000   spin 300,000 (default)
#   quiet  residual    38.0 / 39.9       45.6 / 47.6    32.1 / 33.7   31.5 / 31.1
#          mnist       13.6 / 14.1       15.4 / 15.2    12.6 / 12.0   11.7 / 12.2
#          mnist_small 2.75 / 2.80       3.03 / 3.04    1.90 / 2.03   1.68 / 1.69
#   busy   residual    84.3 / 83.7       87.9 / 83.7     105 / 84.1   74.0 / 77.9 (196 at 16M)
#          mnist       23.9 / 23.8       24.0 / 24.0    32.1 / 32.3   29.5 / 63.8
#          mnist_small 10.9 / 5.6        8.0 / 8.0      11.7 / 5.5    2.0 / 6.1
# ("busy": one other process spinning on a core.)  Spinning 10,000 rounds keeps the workers
# awake across the gaps between a step's kernels, 1.2-1.5x faster than sleeping at once on a
# quiet machine; with a busy neighbour it costs up to ~1.3x, where libgomp's default spin
# swings from one run to the next (up to 2.7x; an earlier matrix saw 30,000 rounds at 1.7x).
# A machine known to be busy is better off passive: set OMP_WAIT_POLICY=passive.
SPIN_COUNT = 10_000

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


def configure_cpu_threads(threads: int | None = None, wait_policy: str | None = None,
                          spin_count: int | None = SPIN_COUNT,
                          blas_threads: int | None = BLAS_THREADS) -> ThreadSetting:
    """Size OpenMP to ``threads`` (default: the usable cores), its idle workers spinning
    ``spin_count`` rounds (None: libgomp's default) or under ``wait_policy`` (``passive``,
    ``active``; it overrides the count), and BLAS to ``blas_threads`` (None: as many), then
    load oneDNN.  The user's own ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` are kept.
    Process-wide, by design and by name: call it once, before the first oneDNN kernel."""
    threads = threads or max(1, usable_cores() // local_ranks())   # ranks share the cores
    notes = []
    if libgomp_loaded():
        notes.append("libgomp was already loaded: OMP_WAIT_POLICY, GOMP_SPINCOUNT and "
                     "OMP_NUM_THREADS left as they were")
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
            if wait_policy is not None:
                os.environ["OMP_WAIT_POLICY"] = wait_policy
            elif spin_count is not None:
                os.environ["GOMP_SPINCOUNT"] = str(spin_count)
    if not onednn.available():
        notes.append(onednn.unavailable_reason())
    threadpool_limits(limits=min(blas_threads or threads, threads), user_api="blas")
    threadpool_limits(limits=threads, user_api="openmp")
    if "numba" in sys.modules:
        from netlang.runtime import jit

        numba_threads = jit.set_threads(threads)
    else:   # sized when it is imported (perhaps on another thread: backend.cpu_set_up_beside)
        os.environ["NUMBA_NUM_THREADS"] = str(numba_threads := threads)
    notes.append(f"numba: {numba_threads} threads")
    setting = ThreadSetting(threads, pools_line("blas"), pools_line("openmp"), notes)
    CONFIGURED[:] = [setting]
    return setting


# The setting of this process, once ``configure_cpu_threads`` has run (the netlang command
# calls it at start, a program using the Python API may, or ``cpu_threads_for_netlang``).
CONFIGURED: list[ThreadSetting] = []


def cpu_threads_for_netlang() -> ThreadSetting | None:
    """Before the Python API's first CPU session with netlang's kernels: size the pools as
    the netlang command does, unless this process did already, and say so once on stderr;
    the setting made, or None.  Left as they come, libgomp's idle workers spin for
    milliseconds against two busy-waiting OpenBLAS threads: mnist.net's train step took
    87.5 ms against 9.3 ms sized (batch 64, 2 cores, 2026-12-06)."""
    if CONFIGURED:
        return None
    setting = configure_cpu_threads()
    print(f"note: netlang sized this process's thread pools for its CPU kernels, as the "
          f"netlang command does ({setting.describe()}); call "
          f"netlang.configure_threads() before the first session to choose otherwise",
          file=sys.stderr, flush=True)
    return setting


def wait_line() -> str:
    """How libgomp's idle workers wait: ``OMP_WAIT_POLICY=passive``, ``GOMP_SPINCOUNT=10000``."""
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        if name in os.environ:
            return f"{name}={os.environ[name]}"
    return "OMP_WAIT_POLICY=default"


def pools_line(user_api: str) -> str:
    pools = [p for p in threadpool_info() if p["user_api"] == user_api]
    if not pools:
        return f"{user_api}: none loaded"
    name = "prefix" if user_api == "openmp" else "internal_api"   # libgomp, openblas
    text = ", ".join(f"{p[name]}: {p['num_threads']} threads" for p in pools)
    if user_api == "openmp":
        text += f", {wait_line()}"
    return text
