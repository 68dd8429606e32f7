"""Shared by every test: the command line's progress line for kernels compiled the first time
is kept out of the output the tests compare (on a machine whose kernel cache is empty, a test
checking a command's exact stderr would see it); tests/runtime/test_jit_progress.py checks
that line itself.  The thread pools are sized as the netlang command sizes them, before any
test runs (so no test's output gets the Python API's note about it, whichever runs first;
tests/runtime/test_backend.py checks that note)."""
import pytest

import netlang.cli
from netlang.runtime.threads import configure_cpu_threads

configure_cpu_threads()


@pytest.fixture(autouse=True)
def no_compile_progress_line(monkeypatch):
    monkeypatch.setattr(netlang.cli, "show_kernel_compiles", lambda: None)
