"""A program's kernels compile when it is bound, new ones beside a helper process
(runtime/jit.py: ``compile_batch``), and its first step compiles nothing."""
from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netlang.cli.bench import netlang_step
from netlang.runtime import cpu_kernels, jit

SPECS = Path(__file__).resolve().parents[2] / "specs"
SOURCE = '''
from netlang.runtime.jit import kernel


@kernel(parallel=False)
def scaled(a, k, out):
    for i in range(a.shape[0]):
        out[i] = a[i] * k
'''
BROKEN = '''
from netlang.runtime.jit import kernel


@kernel(parallel=False)
def scaled(a, k, out):
    out[0] = a.no_such_attribute
'''
ARGS = [(np.float32, 1), np.float32(2), (np.float32, 1)]


def new_kernel(tmp_path, tag: str, source: str = SOURCE):
    """A kernel no earlier run has compiled (its text names this test's folder)."""
    return jit.compile_source(source + f"\n# {tmp_path.name} {tag}\n", "scaled",
                              f"batch test {tag}")


def doubled(fn) -> list[float]:
    out = np.empty(3, np.float32)
    fn(np.arange(3, dtype=np.float32), np.float32(2), out)
    return out.tolist()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NETLANG_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_on_disk_says_whether_numba_has_cached_the_machine_code(cache):
    fn, sig = new_kernel(cache, "on disk"), jit.signature(ARGS)
    assert not jit.on_disk(fn, sig)
    jit.compile_now(fn, ARGS)
    assert jit.on_disk(fn, sig)
    assert not jit.on_disk(fn, jit.signature([(np.float64, 1), 2.0, (np.float64, 1)]))


def test_a_helper_process_compiles_what_this_process_then_loads_from_the_cache(cache):
    fns, sig = [new_kernel(cache, tag) for tag in ("one", "two")], jit.signature(ARGS)
    queue, aside = collections.deque((fn, [sig]) for fn in fns), []
    helper = jit.CompileHelper.start()
    assert helper is not None
    helper.take(queue, aside)                   # on this thread: it takes every kernel
    assert [fn for fn, _ in aside] == fns and not queue
    assert helper.process.poll() is not None    # stopped once the queue was empty
    assert all(jit.on_disk(fn, sig) and sig not in fn.overloads for fn in fns)
    cached = jit.STATS.cached
    jit.compile_batch([(fn, sig) for fn in fns])
    assert jit.STATS.cached == cached + 2
    assert [doubled(fn) for fn in fns] == [[0.0, 2.0, 4.0]] * 2


def test_a_kernel_the_helper_cannot_compile_is_left_to_this_process(cache):
    broken, sig = new_kernel(cache, "broken", BROKEN), jit.signature(ARGS)
    queue, aside = collections.deque([(broken, [sig])]), []
    jit.CompileHelper.start().take(queue, aside)
    assert aside == [] and not jit.on_disk(broken, sig)
    fine, compiled = new_kernel(cache, "fine"), jit.STATS.compiled
    with pytest.raises(Exception, match="no_such_attribute"):   # Numba's typing error, here
        jit.compile_batch([(broken, sig), (fine, sig)])
    assert jit.STATS.compiled <= compiled + 1       # no helper compiles on after the error
    assert jit.STATS.compiled == compiled + jit.on_disk(fine, sig)


@pytest.mark.parametrize("helpers", [True, False])
def test_a_batch_of_new_kernels_compiles_each_once_with_a_line_each(cache, monkeypatch,
                                                                     helpers):
    monkeypatch.setattr(jit, "HELPERS", helpers)
    lines: list[str] = []
    monkeypatch.setattr(cpu_kernels, "on_compile", lines.append)
    fns, sig = [new_kernel(cache, f"{helpers} {i}") for i in range(4)], jit.signature(ARGS)
    compiled, aside = jit.STATS.compiled, jit.STATS.aside
    jit.compile_batch([(fn, sig) for fn in fns] + [(fns[0], sig)])
    assert jit.STATS.compiled == compiled + 4 and len(lines) == 4
    assert all(line.startswith("netlang: compiled kernel ") for line in lines)
    assert helpers or jit.STATS.aside == aside
    assert all(sig in fn.overloads for fn in fns)
    assert [doubled(fn) for fn in fns] == [[0.0, 2.0, 4.0]] * 4


@pytest.mark.parametrize("spec", ["mnist", "mnist_small", "mnist_aug", "residual", "spiral", "srcnn"])
def test_binding_compiles_every_kernel_the_first_step_calls(spec, monkeypatch):
    after_binding = []
    batch = jit.compile_batch

    def counted(jobs):
        batch(jobs)
        after_binding.append(jit.signatures_compiled())
    monkeypatch.setattr(jit, "compile_batch", counted)
    step = netlang_step(SPECS / f"{spec}.net", 16, "cpu")[0]
    before = jit.signatures_compiled()
    step()                                  # binds the program, then runs it
    assert jit.signatures_compiled() == (after_binding[-1] if after_binding else before)


LIST_RUN = """
import sys
import numpy as np
from netlang.runtime import jit
ahead = jit.load_kernels("list test")
fn = jit.compile_source(sys.argv[1], "scaled", "list test")
jit.compile_now(fn, [(np.float32, 1), np.float32(2), (np.float32, 1)])
jit.remember_kernels("list test")
print(ahead, jit.STATS.compiled, jit.STATS.cached)
"""


def test_the_next_run_loads_the_kernels_a_run_listed_before_it_binds(cache):
    source = SOURCE + f"\n# {cache.name} list\n"
    env = dict(os.environ, NETLANG_CACHE_DIR=str(cache), NUMBA_CACHE_DIR=str(cache / "numba"))

    def run() -> str:
        return subprocess.run([sys.executable, "-c", LIST_RUN, source], env=env, check=True,
                              capture_output=True, text=True).stdout.split()
    assert run() == ["0", "1", "0"]         # compiled, and listed
    assert run() == ["1", "0", "1"]         # loaded ahead: the compile found it there


def test_a_listed_kernel_whose_file_is_gone_is_skipped_and_made_again(cache):
    fn = new_kernel(cache, "gone")
    jit.compile_now(fn, ARGS)
    listed = [((fn.py_func.__module__, fn.py_func.__globals__["__file__"], "scaled"),
               jit.signature(ARGS))]
    (cache / "warm").mkdir()
    with open(cache / "warm" / "gone.pkl", "wb") as f:
        pickle.dump(listed, f)
    path = Path(listed[0][0][1])
    path.unlink()
    del sys.modules[fn.py_func.__module__]
    jit._MODULES.clear()                        # as in a new process
    assert jit.load_kernels("gone") == 0
    assert doubled(new_kernel(cache, "gone")) == [0.0, 2.0, 4.0]   # written and loaded anew


def test_a_run_lists_the_kernels_it_used_not_those_of_earlier_runs(cache):
    """A process that runs several programs (a notebook, the tests) lists for each run what
    that run compiled, loaded or asked for again, since ``jit.new_run``."""
    before, again, after = (new_kernel(cache, f"runs {k}") for k in range(3))
    jit.compile_now(before, ARGS)
    jit.compile_now(again, ARGS)
    run = jit.new_run()
    jit.compile_now(again, ARGS)        # compiled already: asked for by this run too
    jit.compile_now(after, ARGS)
    jit.remember_kernels("runs", since=run)
    with open(cache / "warm" / "runs.pkl", "rb") as f:
        kept = pickle.load(f)
    assert [where[0] for where, _ in kept] == [again.py_func.__module__,
                                               after.py_func.__module__]


def test_a_missing_or_broken_kernel_list_loads_nothing(cache):
    assert jit.load_kernels("no such list") == 0
    (cache / "warm").mkdir()
    (cache / "warm" / "broken.pkl").write_bytes(b"not a pickle")
    assert jit.load_kernels("broken") == 0


def test_sizing_the_thread_pools_imports_no_numba():
    """The set-up thread imports Numba while the data loads; the pools are sized before."""
    probe = ("import os, sys\n"
             "from netlang.runtime.threads import configure_cpu_threads\n"
             "setting = configure_cpu_threads(threads=1)\n"
             "print('numba' in sys.modules, os.environ['NUMBA_NUM_THREADS'])\n"
             "from netlang.runtime import jit\n"
             "print(jit.threads())\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ["False", "1", "1"]


def test_a_training_run_lists_its_kernels_for_the_next(cache, tmp_path):
    from netlang.cli import main

    assert main(["train", str(SPECS / "spiral.net"), "--epochs", "1", "--limit", "64",
                 "--out", str(tmp_path / "run")]) == 0
    (listed,) = (cache / "warm").glob("train-*.pkl")
    with open(listed, "rb") as f:
        kept = pickle.load(f)
    assert kept and all(name for (_, _, name), _ in kept)
    assert jit.load_kernels(listed.stem) == 0       # all loaded here already
