"""Array backends.  The only module that imports CuPy.

A ``Backend`` names an array module ``xp`` (NumPy or CuPy) and how arrays cross between host
and device.  Kernels are written against ``xp`` so both backends share them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from netlang.errors import DeviceError


@dataclass(frozen=True)
class Backend:
    name: str
    xp: Any

    def asarray(self, value, dtype=None):
        return self.xp.asarray(value, dtype=dtype)

    def to_numpy(self, value) -> np.ndarray:
        if self.name == "gpu":
            return self.xp.asnumpy(value)
        return np.asarray(value)

    def synchronize(self) -> None:
        if self.name == "gpu":
            self.xp.cuda.Stream.null.synchronize()


CPU = Backend("cpu", np)


def _gpu_backend() -> Backend:
    try:
        import cupy
    except ImportError:
        raise DeviceError("--device gpu needs CuPy, which is not installed",
                          hint="pip install cupy-cuda12x (on a machine with an NVIDIA GPU), "
                               "or use --device cpu") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDA driver missing or broken
        raise DeviceError(f"--device gpu: CuPy cannot reach a GPU ({err})",
                          hint="use --device cpu") from None
    if count == 0:
        raise DeviceError("--device gpu: no GPU found", hint="use --device cpu")
    return Backend("gpu", cupy)


def get_backend(name: str = "cpu") -> Backend:
    if isinstance(name, Backend):
        return name
    if name in ("cpu", "numpy"):
        return CPU
    if name in ("gpu", "cuda", "cupy"):
        return _gpu_backend()
    raise DeviceError(f"unknown device '{name}'", hint="use --device cpu or --device gpu")
