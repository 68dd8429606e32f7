"""Hand-written CPU loops compiled by Numba (runtime/jit.py) for the glue between library
calls: reductions, pooling, softmax and cross-entropy, batchnorm.

``loop_factories()`` maps op names to kernel factories (see runtime/cpu_kernels.py for the
factory protocol).  Filled in by the generated-kernels work of issue 13.
"""
from __future__ import annotations


def loop_factories() -> dict[str, tuple]:
    """op name -> factories of Numba loops."""
    return {}
