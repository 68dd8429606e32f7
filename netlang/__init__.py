"""netlang: a declarative graph compiler for neural networks.

    model = netlang.compile("specs/mnist.net")
    print(model.ir())
    session = model.session(device="cpu", seed=0)
"""
from netlang.errors import NetlangError
from netlang.model import Model, Session, compile


def configure_threads(threads: int | None = None, wait_policy: str | None = None,
                      blas_threads: int | None = 1):
    """Size this process's thread pools for netlang's CPU kernels: OpenMP (oneDNN, Numba) to
    ``threads`` (default: the usable cores), its idle workers spinning a while between
    kernels unless ``wait_policy`` (``"passive"`` on a busy machine) or your own
    ``OMP_WAIT_POLICY`` says otherwise, OpenBLAS to ``blas_threads`` (None: as many).
    Process-wide: call it before the first session (which otherwise makes the same choice
    as the netlang command, and says so).  Returns what was set (``.describe()``); a value
    libgomp or OpenBLAS would not take is a UsageError naming it."""
    from netlang.errors import UsageError
    from netlang.runtime.threads import configure_cpu_threads

    for name, count in (("threads", threads), ("blas_threads", blas_threads)):
        if count is not None and (type(count) is not int or count < 1):
            raise UsageError(f"configure_threads: {name} must be a whole number of at least "
                             f"1, or None, got {count!r}")
    if wait_policy not in (None, "active", "passive"):
        raise UsageError(f"configure_threads: wait_policy must be 'active', 'passive' or "
                         f"None, got {wait_policy!r}")
    return configure_cpu_threads(threads, wait_policy, blas_threads=blas_threads)


__all__ = ["Model", "NetlangError", "Session", "compile", "configure_threads"]
__version__ = "0.1.0"
