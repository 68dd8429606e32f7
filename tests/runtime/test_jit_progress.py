"""The progress line of a cold kernel compile, and its silence on a warm cache."""
from __future__ import annotations

import numpy as np
import pytest

import netlang.cli
from netlang.runtime import cpu_kernels, jit

# The command line's own printer (tests/conftest.py replaces it in every test, once collected).
SHOW_KERNEL_COMPILES = netlang.cli.show_kernel_compiles

SOURCE = '''
from netlang.runtime.jit import kernel


@kernel(parallel=False)
def add_one(a, out):
    for i in range(a.shape[0]):
        out[i] = a[i] + 1
'''


def test_a_cold_compile_reports_a_line_and_a_cached_one_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("NETLANG_CACHE_DIR", str(tmp_path))
    lines: list[str] = []
    monkeypatch.setattr(cpu_kernels, "on_compile", lines.append)
    source = SOURCE + f"\n# test {tmp_path.name}\n"   # a text no earlier run has cached
    fn = jit.compile_source(source, "add_one", "progress test")
    jit.compile_now(fn, [(np.float32, 1), (np.float32, 1)])
    assert len(lines) == 1
    assert lines[0].startswith("netlang: compiled kernel ")
    assert lines[0].endswith(f"first run only, cached in {tmp_path})")
    out = np.empty(3, np.float32)
    fn(np.arange(3, dtype=np.float32), out)
    assert out.tolist() == [1.0, 2.0, 3.0]
    jit.compile_now(fn, [(np.float32, 1), (np.float32, 1)])   # already compiled: no line
    assert len(lines) == 1



def test_the_command_line_prints_a_cold_compile_on_stderr(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NETLANG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "on_compile", None)    # put back after the test
    SHOW_KERNEL_COMPILES()
    fn = jit.compile_source(SOURCE + f"\n# command line {tmp_path.name}\n", "add_one",
                            "progress test")
    jit.compile_now(fn, [(np.float32, 1), (np.float32, 1)])
    err = capsys.readouterr().err
    assert err.startswith("netlang: compiled kernel ") and err.endswith(f"{tmp_path})\n")


def test_a_kernel_cache_that_cannot_be_written_is_an_error_naming_it(tmp_path, monkeypatch):
    from netlang.errors import OutputError

    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    monkeypatch.setenv("NETLANG_CACHE_DIR", str(blocked))
    with pytest.raises(OutputError) as caught:
        jit.compile_source(SOURCE + f"\n# blocked {tmp_path.name}\n", "add_one", "blocked")
    assert str(caught.value) == (
        f"write error: cannot write the kernel cache {blocked / 'kernels'}: Not a directory\n"
        "hint: set NETLANG_CACHE_DIR to a folder you can write (the cache is always safe to "
        "delete)")


def test_a_damaged_kernel_file_in_the_cache_is_written_again(tmp_path, monkeypatch):
    """A generated kernel's cached file that no longer holds its source (cut short, edited)
    is replaced, not imported: the run works instead of failing with a SyntaxError."""
    monkeypatch.setenv("NETLANG_CACHE_DIR", str(tmp_path))
    source = SOURCE + f"\n# damaged {tmp_path.name}\n"
    jit.compile_source(source, "add_one", "damaged test")
    (path,) = (tmp_path / "kernels").glob("damaged_test_*.py")
    good = path.read_text()
    path.write_text("garbage ((\n")
    key = jit.source_key(source)
    monkeypatch.delitem(jit._MODULES, key)
    monkeypatch.delitem(__import__("sys").modules, f"{jit.GENERATED}.{path.stem}")
    fn = jit.compile_source(source, "add_one", "damaged test")
    assert path.read_text() == good
    out = np.empty(2, np.float32)
    fn(np.zeros(2, np.float32), out)
    assert out.tolist() == [1.0, 1.0]
