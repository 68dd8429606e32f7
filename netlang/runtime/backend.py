"""Array backends.  The only module that imports CuPy.

A ``Backend`` names an array module ``xp`` (NumPy or CuPy) and how arrays cross between host
and device.  The reference kernels in ``ops/`` are written against ``xp`` so both backends
share them.  A backend adds its own on top, picked when the executor binds a program:

* ``factories``: op -> kernel factories, tried in order with the node's concrete shapes,
  dtypes and attributes, once per program and batch size; each returns ``run(*arrays)`` or
  None to pass (CPU: netlang's Numba loops where they beat the library,
  runtime/cpu_loops.py; oneDNN, runtime/onednn_kernels.py; generated kernels for fused
  groups and elementwise ops, runtime/generated.py; then NumPy fast paths,
  runtime/cpu_kernels.py);
* ``kernels``: op -> a kernel with the reference's signature (GPU: a generated CUDA kernel
  per fused group, device-side random numbers; runtime/gpu_kernels.py, which gets CuPy only
  as the ``xp`` its kernels are called with).

The CPU's kernel sets (``--kernels``): ``default`` (oneDNN, then netlang's own fast paths),
``builtin`` (netlang's own fast paths, no library), ``numpy`` (the reference kernels alone,
for debugging and for the tests that compare the fast paths with them).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netlang.errors import DeviceError

INSTALL_HINT = ("install CuPy for your CUDA version (pip install cupy-cuda12x, or "
                "cupy-cuda13x) on a machine with an NVIDIA GPU, or use --device cpu")


@dataclass(frozen=True)
class Backend:
    name: str
    xp: Any
    kernels: Mapping[str, Callable] = field(default_factory=dict, hash=False,
                                            compare=False)  # op name -> override
    factories: Mapping[str, tuple] = field(default_factory=dict, hash=False,
                                           compare=False)   # op name -> kernel factories
    notes: tuple[str, ...] = field(default=(), hash=False, compare=False)  # said once
    library: str = ""               # the kernel library in use ("oneDNN 3.2.0"), if any

    def describe(self) -> str:
        """One line for logs and headers: the device and which kernels run (and, once, why a
        library is not used)."""
        if self.name != "cpu":
            used = self.library or "; ".join(self.notes)
            return f"{self.name} ({used})" if used else self.name
        if not self.factories:
            return "cpu (the reference NumPy kernels)"
        if self.library:
            return f"cpu ({self.library}, then netlang's kernels)"
        return "cpu (netlang's kernels" + "".join(f"; {n}" for n in self.notes) + ")"

    def kernel_for(self, opdef) -> Callable | None:
        """The kernel this backend runs for ``opdef``: its override, else the shared one."""
        return self.kernels.get(opdef.name, opdef.kernel)

    def asarray(self, value, dtype=None):
        """Host -> device (a no-op on the CPU); one copy per batch, not per op.  bf16 stays on
        the CPU: CuPy has no bfloat16 (the GPU's half is f16)."""
        self.holds(dtype or getattr(value, "dtype", None))
        return self.xp.asarray(value, dtype=dtype)

    def holds(self, dtype) -> None:
        """Nothing, or the DeviceError for a dtype this device cannot hold (bf16 on the GPU)."""
        if self.name == "gpu" and getattr(dtype, "name", None) == "bfloat16":
            raise DeviceError("bf16 runs on the CPU only: CuPy has no bfloat16",
                              hint="on the GPU use f16: precision mixed(dtype=f16), "
                                   "cast(x, dtype=f16)")

    def to_numpy(self, value) -> np.ndarray:
        """Device -> host.  On the GPU this waits for the work queued so far."""
        if self.name == "gpu":
            return self.xp.asnumpy(value)
        return np.asarray(value)

    def synchronize(self) -> None:
        if self.name == "gpu":
            self.xp.cuda.Stream.null.synchronize()


CPU_REFERENCE = Backend("cpu", np)   # the shared xp kernels alone (--kernels numpy)
KERNEL_CHOICES = ("default", "builtin", "numpy")


class MetricSums:
    """Running sums of per-step scalars kept on the device; read back once per log interval.

    ``add`` queues an addition on the device (no synchronisation); ``read`` copies all sums
    to the host in one transfer, returns the means since the last read, and starts over.
    """

    def __init__(self, backend: Backend):
        self.backend = backend
        self._sums: dict[str, Any] = {}
        self.count = 0

    def add(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            total = self._sums.get(name)
            self._sums[name] = value if total is None else total + value
        self.count += 1

    def read(self) -> dict[str, float]:
        if not self._sums:
            return {}
        names = list(self._sums)
        xp = self.backend.xp
        stacked = xp.stack([xp.asarray(self._sums[n], dtype=xp.float64) for n in names])
        host = self.backend.to_numpy(stacked)
        means = {n: float(v) / max(self.count, 1) for n, v in zip(names, host)}
        self._sums, self.count = {}, 0
        return means


def import_cupy():
    """CuPy, or one clear DeviceError saying why the GPU cannot be used."""
    try:
        import cupy
    except ImportError:
        raise DeviceError("--device gpu needs CuPy, which is not installed",
                          hint=INSTALL_HINT) from None
    return cupy


def import_nccl():
    """CuPy's NCCL binding (GPU ranks of a data-parallel run), or one clear DeviceError."""
    import_cupy()
    try:
        from cupy.cuda import nccl
    except ImportError:
        nccl = None
    if nccl is None or not getattr(nccl, "available", True):
        raise DeviceError("GPU ranks need NCCL, and CuPy cannot load it here",
                          hint="pip install nvidia-nccl-cu12 (or the NCCL of your CUDA) "
                               "beside cupy-cuda12x")
    return nccl


def import_cudnn():
    """(NVIDIA's cuDNN frontend module ``cudnn``, "") or (None, why not): the GPU backend's
    convolutions (runtime/cudnn_kernels.py) run through it where it loads.  TF32 stays off
    for float32 unless the environment says otherwise (float32 means float32)."""
    import os

    os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")
    try:
        import cudnn
    except ImportError:
        return None, "nvidia-cudnn-frontend is not installed"
    except Exception as err:  # noqa: BLE001 - a broken install: say what it raised
        return None, f"the cuDNN frontend does not load: {err}"
    return cudnn, ""


def _device_count(cupy) -> int:
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception as err:  # noqa: BLE001  (a missing or broken driver: CuPy has its own types)
        raise DeviceError(f"--device gpu: CuPy cannot reach a GPU ({err})",
                          hint="check nvidia-smi and the CUDA driver, or use --device cpu"
                          ) from None


def _gpu_backend() -> Backend:
    cupy = import_cupy()
    if _device_count(cupy) == 0:
        raise DeviceError("--device gpu: CuPy found no GPU on this machine",
                          hint="use --device cpu")
    from netlang.runtime.gpu_kernels import gpu_kernels

    cudnn, why = import_cudnn()
    if cudnn is None:
        return Backend("gpu", cupy, gpu_kernels(),
                       notes=((f"cuDNN is not used: {why}; convolutions run CuPy's GEMMs "
                               f"(pip install nvidia-cudnn-frontend nvidia-cudnn-cu12)"),))
    from netlang.runtime.cudnn_kernels import cudnn_factories

    return Backend("gpu", cupy, gpu_kernels(), factories=cudnn_factories(cudnn, cupy),
                   library=f"cuDNN {cudnn.backend_version()}")


_GPU: list[Backend] = []


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of handing it back to the OS.

    A training step allocates the same multi-megabyte temporaries (im2col patch matrices,
    gradients) every step.  By default glibc maps each of them fresh and unmaps it on free,
    so every step pays the page faults of first-touching that memory again: about 15% of a
    residual CNN's step on CPU.  Raising the mmap and trim thresholds makes freed blocks
    reusable.  This changes the whole process's allocator, so the library never calls it on
    its own: the ``netlang`` command does, at start (``cli/__init__.py``), and a program
    using the Python API may.  A no-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)
                    and libc.mallopt(m_trim_threshold, 1 << 30)
                    and libc.mallopt(m_top_pad, 64 << 20))
    except (OSError, AttributeError):
        return False


@functools.cache
def _cpu_backend(library: bool = True) -> Backend:
    """NumPy with the CPU's fast paths: oneDNN's kernels where the library loads (else a
    note says why not), then netlang's own (fused groups, shifted-row convolutions)."""
    from netlang.runtime import onednn
    from netlang.runtime.cpu_kernels import cpu_factories
    from netlang.runtime.cpu_loops import loop_factories
    from netlang.runtime.generated import generated_factories
    from netlang.runtime.onednn_kernels import onednn_kernels

    # Numba's loops first: cpu_loops registers an op only where its loop beats oneDNN's
    # primitive (measured, see there) or the library does not take the op.
    factories: dict[str, tuple] = {op: tuple(made)
                                   for op, made in loop_factories(library=library).items()}
    if library:
        for op, f in onednn_kernels().items():
            factories[op] = factories.get(op, ()) + (_stateless(f),)
    for made_here in (generated_factories(), cpu_factories()):
        for op, made in made_here.items():
            factories[op] = factories.get(op, ()) + tuple(made)
    notes: tuple[str, ...] = ()
    if library and not onednn.available():
        note = (f"oneDNN is not used ({onednn.unavailable_reason()}); convolutions, "
                f"pooling and batchnorm run netlang's NumPy kernels")
        notes = (note,)
    used = f"oneDNN {onednn.LIBRARY.version()}" if library and onednn.available() else ""
    return Backend("cpu", np, factories=factories, notes=notes, library=used)


def uses_cpu_kernels(device: str, kernels: str) -> bool:
    """Whether a run on ``device`` with ``--kernels`` compiles netlang's CPU kernels."""
    return device == "cpu" and kernels != "numpy"


@contextlib.contextmanager
def cpu_set_up_beside(device: str = "cpu", kernels: str = "default",
                      warm_set: str | None = None):
    """Within this block a thread of its own imports and sets up what the first binding of a
    CPU program would otherwise wait for: Numba, its registries (``jit.warm_up``), the
    kernel modules, networkx (``memory.graph_library``), and the kernels an earlier run of
    the same program used (``jit.load_kernels(warm_set)``, kept by ``remember_cpu_kernels``);
    the block's end waits for it.  ``netlang train`` loads its data inside: decompressing and
    normalizing run without the GIL.  An error there is left for the binding to raise; a
    GPU or ``--kernels numpy`` run starts nothing."""
    def set_up() -> None:
        with contextlib.suppress(Exception):    # the binding imports the same, and says
            set_up_cpu(warm_set)                # what failed
    helper = None
    if uses_cpu_kernels(device, kernels):
        from netlang.runtime.threads import cpu_threads_for_netlang

        cpu_threads_for_netlang()       # before the helper loads libgomp (with Numba)
        if warm_set is not None:
            jit = sys.modules.get("netlang.runtime.jit")    # not imported: nothing made yet
            _RUN_STARTS[warm_set] = jit.new_run() if jit is not None else 0
        helper = threading.Thread(target=set_up, name="netlang CPU set-up", daemon=True)
        helper.start()
    try:
        yield
    finally:
        if helper is not None:
            helper.join()


# warm set -> the run that keeps it (``jit.new_run``): its list leaves out the kernels only
# earlier runs of this process used.
_RUN_STARTS: dict[str, int] = {}


def kernel_list_name(kind: str, *what) -> str:
    """The name a run's list of CPU kernels is kept under: ``kind`` and a hash of ``what``
    (the network's hash, the batch, ...: a list that no longer fits only loads a few kernels
    the run does not use)."""
    return f"{kind}-" + hashlib.sha256(repr(what).encode()).hexdigest()[:16]


def set_up_cpu(warm_set: str | None = None) -> int:
    """What ``cpu_set_up_beside`` does on its thread (here on the caller's); how many kernels
    of ``warm_set`` it loaded."""
    from netlang.runtime import cpu_loops, generated, jit, memory  # noqa: F401

    jit.warm_up()
    memory.graph_library()
    return 0 if warm_set is None else jit.load_kernels(warm_set)


def remember_cpu_kernels(device: str, kernels: str, warm_set: str) -> None:
    """After a run: keep the list of CPU kernels it used as ``warm_set`` (``jit``'s
    ``remember_kernels``), for the next run's ``cpu_set_up_beside``.  A cache that cannot be
    written is no error: the next run loads its kernels when it binds, as without the list."""
    if uses_cpu_kernels(device, kernels):
        from netlang.runtime import jit

        with contextlib.suppress(OSError):
            jit.remember_kernels(warm_set, since=_RUN_STARTS.pop(warm_set, 0))


def _stateless(factory: Callable) -> Callable:
    """A library factory ``(shapes, dtypes, attrs)`` as a backend factory (which also gets
    the executor's kernel state)."""
    def make(shapes, dtypes, attrs, _state):
        return factory(shapes, dtypes, attrs)
    make.__name__ = getattr(factory, "__name__", "factory")
    return make


def get_backend(name: str | Backend = "cpu", kernels: str = "default") -> Backend:
    """The backend for ``--device cpu|gpu`` (created once; the GPU one checks for a GPU);
    ``kernels="numpy"`` gives the CPU's reference kernels alone."""
    if isinstance(name, Backend):
        return name
    if kernels not in KERNEL_CHOICES:
        raise DeviceError(f"unknown kernel set '{kernels}'",
                          hint="use --kernels " + ", ".join(KERNEL_CHOICES))
    if name in ("cpu", "numpy"):
        if kernels == "numpy" or name == "numpy":
            return CPU_REFERENCE
        from netlang.runtime.threads import cpu_threads_for_netlang

        cpu_threads_for_netlang()
        return _cpu_backend(library=kernels == "default")
    if name in ("gpu", "cuda", "cupy"):
        if not _GPU:
            _GPU.append(_gpu_backend())
        return _GPU[0]
    raise DeviceError(f"unknown device '{name}'", hint="use --device cpu or --device gpu")


def gpu_available() -> tuple[bool, str]:
    """(True, "") when ``--device gpu`` works here, else (False, the reason) — for tests."""
    try:
        get_backend("gpu")
    except DeviceError as err:
        return False, err.message
    return True, ""


def scatter_add(xp, target, indices, values) -> None:
    """``target[indices] += values`` with repeated indices summed (np.add.at on NumPy)."""
    if xp is np:
        np.add.at(target, indices, values)
        return
    import cupyx

    cupyx.scatter_add(target, indices, values)
