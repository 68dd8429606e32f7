"""Generated CPU kernels for fused groups and elementwise ops (Numba, through runtime/jit.py).

``generated_factories()`` maps op names to kernel factories (see runtime/cpu_kernels.py for
the factory protocol).  Filled in by the generated-kernels work of issue 13.
"""
from __future__ import annotations


def generated_factories() -> dict[str, tuple]:
    """op name -> factories of generated kernels."""
    return {}
