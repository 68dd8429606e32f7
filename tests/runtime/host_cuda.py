"""``cupy.RawKernel``'s stand-in: the GPU backend's hand-written CUDA loops run on the host.

The kernel's text is compiled with g++ as it is, ``RAW_PRELUDE`` included: ``blockIdx``,
``threadIdx``, ``blockDim`` and ``gridDim`` are host globals, and a generated entry runs the
kernel once per (block, thread) of the launch, one after another.  So the grid-stride loops,
the launch shape and every index computation are the ones the GPU runs; what cannot be
checked here is what needs threads to run at the same time (no kernel of netlang's uses
shared memory or atomics, so none depends on it).  Floating point is compiled without FMA
contraction (``-ffp-contract=off``), as ``__fmul_rn`` and ``__fadd_rn`` ask nvcc to do.
"""
from __future__ import annotations

import ctypes
import hashlib
import pathlib
import re
import shutil
import subprocess
from typing import ClassVar

import numpy as np
import pytest

HOST_CUDA = """\
#include <cmath>
#include <cstdint>
#include <cfloat>
using namespace std;
struct netlang_dim3 { unsigned x, y, z; };
static netlang_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a * b) >> 32); }
"""

SCALARS = {np.float32: ctypes.c_float, np.float64: ctypes.c_double, np.int32: ctypes.c_int32,
           np.int64: ctypes.c_int64, np.uint32: ctypes.c_uint32, np.uint64: ctypes.c_uint64,
           np.bool_: ctypes.c_bool}


def parameters(code: str, name: str) -> list[str]:
    """The parameter names of kernel ``name`` in ``code`` (``NETLANG_KERNEL name(...)``)."""
    head = re.search(rf"NETLANG_KERNEL\s+{re.escape(name)}\s*\(([^)]*)\)", code)
    assert head is not None, f"no NETLANG_KERNEL {name}(...) in the source"
    return [re.findall(r"\w+", p)[-1] for p in head.group(1).split(",") if p.strip()]


class HostRawKernel:
    folder: ClassVar[pathlib.Path | None] = None
    built: ClassVar[dict] = {}
    launches: ClassVar[list] = []          # (name, grid, block) of every launch, in order

    def __init__(self, code: str, name: str):
        self.name = name
        key = (code, name)
        if key not in self.built:
            self.built[key] = self._compile(code, name)
        self.entry = self.built[key]

    def _compile(self, code: str, name: str):
        compiler = shutil.which("g++") or shutil.which("c++")
        if compiler is None:
            pytest.skip("no C++ compiler (g++) to run the CUDA loops on the host")
        params = ", ".join(parameters(code, name))
        head = re.search(rf"NETLANG_KERNEL\s+{re.escape(name)}\s*\(([^)]*)\)", code).group(1)
        entry = (f'extern "C" void host_{name}(unsigned grid_, unsigned block_, {head}) {{\n'
                 f"  gridDim = {{grid_, 1, 1}}; blockDim = {{block_, 1, 1}};\n"
                 f"  for (unsigned b_ = 0; b_ < grid_; ++b_)\n"
                 f"    for (unsigned t_ = 0; t_ < block_; ++t_) {{\n"
                 f"      blockIdx = {{b_, 0, 0}}; threadIdx = {{t_, 0, 0}};\n"
                 f"      {name}({params});\n    }}\n}}\n")
        text = HOST_CUDA + code + "\n" + entry
        digest = hashlib.sha1(text.encode()).hexdigest()[:16]
        path = self.folder / f"{name}_{digest}"
        path.with_suffix(".cpp").write_text(text)
        done = subprocess.run([compiler, "-O1", "-ffp-contract=off", "-shared", "-fPIC",
                               "-o", str(path.with_suffix(".so")), str(path.with_suffix(".cpp"))],
                              check=False, capture_output=True, text=True)
        assert done.returncode == 0, f"{name} does not compile:\n{done.stderr}"
        return getattr(ctypes.CDLL(str(path.with_suffix(".so"))), f"host_{name}")

    def __call__(self, grid, block, args):
        self.launches.append((self.name, tuple(grid), tuple(block)))
        assert len(grid) == 1 and len(block) == 1, "netlang's loops launch 1-D grids"
        self.entry(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]),
                   *[self._argument(a) for a in args])

    @staticmethod
    def _argument(value):
        if isinstance(value, np.ndarray):
            assert value.flags.c_contiguous, "kernels take contiguous arrays"
            return ctypes.c_void_p(value.ctypes.data)
        kind = SCALARS.get(type(value))
        assert kind is not None, f"pass NumPy scalars of the kernel's C types, not {value!r}"
        return kind(value.item())
