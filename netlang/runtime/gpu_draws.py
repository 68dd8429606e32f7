"""Dropout masks made on the GPU by a counter-based hash (Philox-4x32-10) inside one kernel.

A mask element is a pure function of (key, element index): Philox-4x32-10 (Salmon et al.,
"Parallel random numbers: as easy as 1, 2, 3", SC'11; the generator cuRAND's PHILOX4_32_10
runs) turns the 128-bit counter ``(g, 0)`` of a group ``g`` of elements and a 64-bit key into
four 32-bit words, which decide the group's four float/half elements (two words each for
double).  So the kernel needs no generator state, only its key, which it reads from a
1-element uint64 device array:

* uncaptured, each draw takes one key from the session's host generator (``draw_key``: one
  ``integers(2**63 - 1)``, the draw ``KeyedDraws`` makes), so a resumed run or a gradient check
  that resets the host generator draws the same masks;
* in a CUDA graph (runtime/capture.py) the kernel reads a fixed key array that is filled with
  a fresh host key before every replay, so each replay draws a new mask while the graph stays
  the same, and the draw no longer cuts the step into more graphs.

The keep test is the reference kernel's (ops/random.py), ``u >= rate`` for a uniform ``u`` in
[0, 1), done in integers: float and half compare a 24-bit ``u`` with ``float32(rate)``, double a
53-bit one (NumPy's way of making a double) with ``rate``; a kept element is ``1/(1-rate)`` in
the mask's dtype.  The mask is written as bit patterns, so one kernel text serves each width.
"""
from __future__ import annotations

import math

import numpy as np

from netlang.ops.random import check_rate
from netlang.runtime.gpu_kernels import RawSource, launch, raw_kernel

PHILOX = """\
// Philox-4x32-10 (Random123's philox4x32 with 10 rounds) on the counter c, in place.
__device__ __forceinline__ void netlang_philox4x32_10(unsigned* c, unsigned k0, unsigned k1) {
    for (int round = 0; round < 10; ++round) {
        unsigned hi0 = __umulhi(0xD2511F53u, c[0]), lo0 = 0xD2511F53u * c[0];
        unsigned hi1 = __umulhi(0xCD9E8D57u, c[2]), lo1 = 0xCD9E8D57u * c[2];
        unsigned c1 = c[1], c3 = c[3];
        c[0] = hi1 ^ c1 ^ k0; c[1] = lo1; c[2] = hi0 ^ c3 ^ k1; c[3] = lo0;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
}
"""

# float and half: four elements per counter, kept where the top 24 bits of their word reach
# the threshold.  double: two elements per counter, 53 bits from two words.
_WORDS = """
NETLANG_KERNEL {name}({bits}* __restrict__ mask, const unsigned long long* __restrict__ key,
                      long long n, unsigned threshold, unsigned scale) {{
    unsigned long long k = key[0];
    NETLANG_LOOP(g, (n + 3) / 4) {{
        unsigned w[4] = {{(unsigned)g, (unsigned)((unsigned long long)g >> 32), 0u, 0u}};
        netlang_philox4x32_10(w, (unsigned)k, (unsigned)(k >> 32));
        for (int j = 0; j < 4 && 4 * g + j < n; ++j)
            mask[4 * g + j] = (w[j] >> 8) >= threshold ? ({bits})scale : ({bits})0;
    }}
}}
"""
_DOUBLES = """
NETLANG_KERNEL netlang_dropout_philox_f64(unsigned long long* __restrict__ mask,
                                          const unsigned long long* __restrict__ key,
                                          long long n, unsigned long long threshold,
                                          unsigned long long scale) {
    unsigned long long k = key[0];
    NETLANG_LOOP(g, (n + 1) / 2) {
        unsigned w[4] = {(unsigned)g, (unsigned)((unsigned long long)g >> 32), 0u, 0u};
        netlang_philox4x32_10(w, (unsigned)k, (unsigned)(k >> 32));
        for (int j = 0; j < 2 && 2 * g + j < n; ++j) {
            unsigned long long u = ((unsigned long long)(w[2 * j] >> 5) << 26) | (w[2 * j + 1] >> 6);
            mask[2 * g + j] = u >= threshold ? scale : 0ull;
        }
    }
}
"""
MASK_SOURCES = {
    np.dtype(np.float32): RawSource("netlang_dropout_philox_f32", PHILOX + _WORDS.format(
        name="netlang_dropout_philox_f32", bits="unsigned")),
    np.dtype(np.float16): RawSource("netlang_dropout_philox_f16", PHILOX + _WORDS.format(
        name="netlang_dropout_philox_f16", bits="unsigned short")),
    np.dtype(np.float64): RawSource("netlang_dropout_philox_f64", PHILOX + _DOUBLES),
}
PER_COUNTER = {np.dtype(np.float32): 4, np.dtype(np.float16): 4, np.dtype(np.float64): 2}
_BITS = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def draw_key(rng) -> np.uint64:
    """One draw's key from the host generator: the one number ``KeyedDraws`` takes, so the
    host generator advances as it always has."""
    rng = rng if rng is not None else np.random.default_rng()
    return np.uint64(rng.integers(2**63 - 1))


def mask_arguments(dtype: np.dtype, rate: float) -> tuple:
    """(threshold, scale bits) of the kernel for masks of ``dtype`` at ``rate``: ``u >= rate``
    as an integer test on the kernel's 24-bit (float, half) or 53-bit (double) ``u``."""
    scale = dtype.type(1.0 / (1.0 - rate))
    bits = np.array(scale).view(_BITS[dtype.itemsize])[()]
    if dtype == np.float64:
        return np.uint64(math.ceil(rate * 2.0**53)), np.uint64(bits)
    # halves are drawn as float32, as the reference does (ops/random.py)
    return np.uint32(math.ceil(float(np.float32(rate)) * 2.0**24)), np.uint32(bits)


def dropout_mask_gpu(xp, x, rate, rng=None, key=None):
    """``dropout_mask`` on the GPU: the mask from one Philox kernel keyed by ``key`` (a
    1-element uint64 device array, filled by the caller: a captured step) or, without it, by
    one fresh key from ``rng``, the session's host generator."""
    rate = check_rate(rate)
    dtype = np.dtype(x.dtype)
    if key is None:
        key = xp.empty(1, dtype=np.uint64)
        key.fill(draw_key(rng))
    out = xp.empty(x.shape, dtype=dtype)
    n = int(out.size)
    threshold, scale = mask_arguments(dtype, rate)
    groups = -(-n // PER_COUNTER[dtype])
    launch(raw_kernel(xp, MASK_SOURCES[dtype]), groups,
           (out, key, np.int64(n), threshold, scale))
    return out


dropout_mask_gpu.keyed = True       # reads its key from ``key=`` (runtime/capture.py)


def keyed(kernel) -> bool:
    """Whether a bound kernel (``functools.partial`` of an override) draws from a key array
    it is given, and so can be captured with its key refreshed before each replay."""
    return bool(getattr(getattr(kernel, "func", kernel), "keyed", False))


def keyed_draw_kernels() -> dict:
    """The random ops the GPU draws with Philox in its own kernel."""
    return {"dropout_mask": dropout_mask_gpu}
