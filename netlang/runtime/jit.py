"""Numba: the one module that imports it.  netlang's generated CPU kernels are compiled here.

Two kinds of kernel come through this module:

* loops written by hand in netlang's own files (``runtime/cpu_loops.py``), decorated with
  ``kernel``: compiled for the argument types their run will pass when the factory makes the
  run (``compile_now``), and kept in the package's ``__pycache__`` (``cache=True``), so a
  second process compiles nothing;
* loops generated from the IR (a fused group's expression, ``runtime/generated.py``):
  ``compile_source`` writes the generated text to a file in the kernel cache, named by the
  hash of its text, imports it, and returns the function.  Numba cannot cache a function
  made with ``exec``; a function in a file it can, next to that file.  The same text is the
  same file, so a second run (another process, another day) loads the machine code instead of
  compiling it.  ``compile_now`` compiles (or loads) a kernel for its argument types when a
  program is bound, not on its first call: the kernels a binding keeps compile together at
  its end, those not yet cached beside a helper process on the second core
  (``compile_batch``), and the first step compiles nothing.  ``STATS`` counts what was
  written, compiled and loaded, and the seconds it took, so a benchmark can tell a cold
  start from a warm one.

A run can also leave the list of kernels it used (``remember_kernels``, in the cache's
``warm/``): the next run of the same program loads them (``load_kernels``) on a thread of
its own while its data loads (``backend.cpu_set_up_beside``), so its binding finds them.

The cache lives in ``$NETLANG_CACHE_DIR``, else ``$XDG_CACHE_HOME/netlang``, else
``~/.cache/netlang``; deleting it is always safe.  A file is written to a temporary name and
renamed into place, so a crash or a second process never leaves half a kernel there.

Threads: every parallel kernel runs its outer ``prange`` on ``set_threads(n)`` threads;
``runtime/threads.py`` sizes this pool with OpenMP's and BLAS's (one pool works at a time).
"""
from __future__ import annotations

import collections
import hashlib
import importlib
import importlib.util
import os
import pathlib
import pickle
import re
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numba
import numpy as np
from numba import prange  # noqa: F401  (re-exported: generated and hand-written loops use it)

from netlang.errors import OutputError
from netlang.runtime import cpu_kernels
from netlang.runtime.cpu_kernels import defer_compile

VERSION = numba.__version__


def cache_dir() -> pathlib.Path:
    """Where generated kernels and their machine code are kept (see the module doc)."""
    root = os.environ.get("NETLANG_CACHE_DIR")
    if root:
        return pathlib.Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return base / "netlang"


# What every kernel is compiled with.  NumPy's error model: ``x / 0.0`` is inf or nan, as in
# the reference kernels, where Python's would raise ZeroDivisionError (and test every
# division).  Numba's disk cache does not key machine code on these options, so they are part
# of a generated source's key (``source_key``): changing them compiles anew.
OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}


def kernel(fn: Callable | None = None, *, parallel: bool = True, fastmath: bool = False):
    """Compile ``fn`` with Numba (nopython, no GIL, machine code cached on disk).

    ``parallel=True`` runs ``prange`` loops on the pool's threads.  ``fastmath`` stays off:
    generated kernels must give the reference's float32 results, not reassociated ones."""
    def wrap(f: Callable) -> Callable:
        made = numba.njit(parallel=parallel, fastmath=fastmath, **OPTIONS)(f)
        KERNELS.add(made)
        return made
    return wrap if fn is None else wrap(fn)


# Every kernel made with ``kernel``, hand-written or generated (``signatures_compiled``).
KERNELS: weakref.WeakSet = weakref.WeakSet()


def signatures_compiled() -> int:
    """How many (kernel, argument types) pairs this process has compiled or loaded so far:
    a test binds a program, then checks that its first step adds none."""
    return sum(len(fn.overloads) for fn in list(KERNELS))


@dataclass
class CompileStats:
    """What ``compile_source`` did in this process (for ``netlang bench`` and the tests)."""

    written: int = 0            # new source files (first time this text was ever seen)
    loaded: int = 0             # modules imported from the cache folder
    seconds: float = 0.0        # time spent writing and importing them
    names: list[str] = field(default_factory=list)
    compiled: int = 0           # signatures compiled to machine code (``compile_now``)
    cached: int = 0             # signatures whose machine code came from Numba's disk cache
    compile_seconds: float = 0.0   # time ``compile_now`` spent compiling or loading them
    aside: int = 0              # of ``compiled``, those a helper process compiled

    def reset(self) -> None:
        """Start counting afresh (a benchmark's cold and warm halves)."""
        self.__init__()


STATS = CompileStats()
_MODULES: dict[str, object] = {}
_HEADER = ("# generated by netlang (runtime/jit.py): {label}\n"
           "# numba {numba}; delete this folder at will, it is a cache\n")


def source_key(source: str) -> str:
    """The cache key of a generated source: its text, ``OPTIONS`` and the Numba and Python
    versions."""
    text = f"{source}\n#numba {VERSION} {sorted(OPTIONS.items())}\n#python {sys.version_info[:3]}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def compile_source(source: str, name: str, label: str = "kernel") -> Callable:
    """The function ``name`` defined by ``source`` (Python text that may use ``kernel`` and
    ``prange`` from this module), loaded from the kernel cache, written there first if new.

    ``label`` says what the code is for (``fused group: add, relu``); it heads the file, and
    the file name starts with its letters, so the cache folder can be read."""
    key = source_key(source)
    module = _MODULES.get(key)
    if module is None:
        started = time.perf_counter()
        folder = cache_dir() / "kernels"
        stem = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:40] or "kernel"
        path = folder / f"{stem}_{key}.py"
        text = _HEADER.format(label=label, numba=VERSION) + source
        if not _holds(path, text):      # new, or a file damaged since: written (again)
            _write(path, text)
            STATS.written += 1
        module = _MODULES[key] = _load_module(f"{GENERATED}.{path.stem}", path)
        STATS.loaded += 1
        STATS.names.append(path.name)
        STATS.seconds += time.perf_counter() - started
    return getattr(module, name)


GENERATED = "netlang_kernels"       # the package name generated modules are imported under


def _holds(path: pathlib.Path, text: str) -> bool:
    """Whether the cached file ``path`` holds exactly ``text`` (a file cut short, edited
    or unreadable does not: the cache is ours to rewrite)."""
    try:
        return path.read_text() == text
    except (OSError, UnicodeDecodeError):
        return False


def _write(path: pathlib.Path, text: str) -> None:
    """Write a kernel's source whole or not at all; a cache folder that cannot be written is
    an ``OutputError`` naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp",
                                         delete=False) as tmp:
            tmp.write(text)
        os.replace(tmp.name, path)
    except OSError as err:
        raise OutputError(f"cannot write the kernel cache {path.parent}: "
                          f"{err.strerror or err}",
                          hint="set NETLANG_CACHE_DIR to a folder you can write (the cache "
                               "is always safe to delete)") from None


def _load_module(name: str, path) -> object:
    """Import the generated file ``path`` as module ``name`` (once per process)."""
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        # Registered before it runs: Numba names a kernel's globals by its module, and
        # loading cached machine code imports that module by name again.
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]       # as importlib does: no half module stays behind
            raise
    return module


def compile_now(fn, args: Sequence, owner=None) -> None:
    """Compile kernel ``fn`` for these arguments now rather than on its first call, or load
    that machine code from Numba's disk cache; counted in STATS.  An argument
    ``(dtype, ndim)`` stands for C-contiguous arrays of that dtype and rank, ndim 0 meaning a
    NumPy scalar; ``(dtype, ndim, count)`` for a tuple of ``count`` such arrays or scalars
    (a Python tuple; Numba's ``UniTuple``), as a kernel over many tensors takes them
    (``runtime/multi_tensor.py``): the count is part of the signature, so each count is
    compiled (and cached on disk) once.  Any other argument is an example of the value the
    kernel will get (a Python int, float or bool, a NumPy scalar) and stands for its type.

    The executor binds a program before its first step, so a kernel compiled here never
    stalls a step, and the time shows up where ``netlang bench`` can report it.  Given an
    ``owner`` while a program is being bound, the compile waits for the binding's end and
    happens only if the owner still lives (``cpu_kernels.compiles_after_binding``); then
    the kernels of the whole binding compile together, two at a time (``compile_batch``)."""
    sig = signature(args)
    if sig in fn.overloads:
        _USED[fn, sig] = _RUN[0]        # this run uses it too
        return
    if defer_compile((fn, sig), (fn, sig), owner):
        return
    started = time.perf_counter()
    cached = _compile(fn, sig)
    _count(cached, time.perf_counter() - started)


def entry_point(fn, values: Sequence) -> Callable:
    """``fn``'s machine code for the types of ``values`` as a Python callable that skips
    the dispatcher's choice among its compiled versions (``fn`` itself where none matches):
    for a caller that passes values of those very types every time."""
    compiled = fn.overloads.get(tuple(map(numba.typeof, values)))
    return fn if compiled is None else compiled.entry_point


def signature(args: Sequence) -> tuple:
    """Numba's argument types for ``compile_now``'s ``args``."""
    return tuple(map(_numba_type, args))


def _numba_type(arg):
    if not isinstance(arg, tuple):
        return numba.typeof(arg)
    dtype, ndim, *count = arg
    scalar = numba.from_dtype(np.dtype(dtype))
    one = numba.types.Array(scalar, ndim, "C") if ndim else scalar
    return numba.types.UniTuple(one, count[0]) if count else one


def _compile(fn, signature: tuple) -> bool:
    """Compile (or load) ``fn`` for ``signature`` here; whether it came from the disk cache."""
    hits = sum(fn.stats.cache_hits.values())
    fn.compile(signature)
    _USED[fn, signature] = _RUN[0]
    return sum(fn.stats.cache_hits.values()) > hits


# -- a run's kernels, loaded again by the next run before it needs them -------------------------

# (kernel, signature) compiled, loaded or asked for here, in order -> the last run that did
_USED: dict[tuple, int] = {}
_RUN = [0]


def _where(fn) -> tuple[str, str, str]:
    """How another process finds kernel ``fn``: (module name, its file, function name)."""
    py = fn.py_func
    return py.__module__, sys.modules[py.__module__].__file__, py.__name__


def _find(module_name: str, path: str, name: str):
    module = (_load_module(module_name, path) if module_name.startswith(GENERATED + ".")
              else importlib.import_module(module_name))
    return getattr(module, name)


def new_run() -> int:
    """Begin a run's count of the kernels it uses (``remember_kernels(name, since=...)``):
    a process that runs several programs (a notebook, the tests) keeps what its earlier
    runs used out of this run's list."""
    _RUN[0] += 1
    return _RUN[0]


def remember_kernels(name: str, since: int = 0) -> None:
    """Keep the list of kernels this process compiled, loaded or was asked for since run
    ``since`` began (``new_run``; 0: all; module, function and argument types, not the
    machine code: that is in Numba's cache) as ``name`` in the kernel cache, for
    ``load_kernels(name)`` in the next run of the same program."""
    kept = []
    for fn, sig in [pair for pair, run in _USED.items() if run >= since]:
        try:
            kept.append((_where(fn), sig))
        except (KeyError, AttributeError):      # a kernel made where no file holds it
            continue
    path = cache_dir() / "warm" / f"{name}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, suffix=".tmp",
                                     delete=False) as tmp:
        pickle.dump(kept, tmp)
    os.replace(tmp.name, path)


def load_kernels(name: str) -> int:
    """Load the kernels ``remember_kernels(name)`` listed whose machine code Numba's disk
    cache holds (compiling none); how many.  A missing or unreadable list loads nothing."""
    try:
        with open(cache_dir() / "warm" / f"{name}.pkl", "rb") as f:
            kept = pickle.load(f)
    except (OSError, pickle.PickleError, EOFError, AttributeError, ImportError):
        return 0
    loaded = 0
    for where, sig in kept:
        try:
            fn = _find(*where)
            if sig not in fn.overloads and on_disk(fn, sig):
                started = time.perf_counter()
                _count(_compile(fn, sig), time.perf_counter() - started)
                loaded += 1
        except Exception:  # noqa: BLE001, S112  (a file since deleted, a kernel since renamed)
            continue
    return loaded


_COUNTING = threading.Lock()    # a helper's thread reports its compiles too
_BATCH_STARTED: list[float] = []   # while ``compile_batch`` runs: when it began


def _count(cached: bool, seconds: float, aside: bool = False) -> None:
    """Count one kernel compiled or loaded; after a compile, the progress line."""
    with _COUNTING:
        STATS.compile_seconds += seconds
        if cached:
            STATS.cached += 1
            return
        STATS.compiled += 1
        STATS.aside += aside
        so_far = STATS.compile_seconds + sum(time.perf_counter() - t for t in _BATCH_STARTED)
        if cpu_kernels.on_compile is not None:
            cpu_kernels.on_compile(f"netlang: compiled kernel {STATS.compiled} ({so_far:.1f} s "
                                   f"so far; first run only, cached in {cache_dir()})")


@kernel(parallel=False)
def _identity(x):
    return x


def warm_up() -> None:
    """Load (the first time ever: compile) one tiny kernel.  Numba's first load sets up its
    typing and lowering registries (0.25-0.5 s: it imports SciPy where that is installed),
    which a program's first binding would otherwise wait for; ``backend.cpu_set_up_beside``
    calls this on a thread of its own while data loads."""
    _identity.compile((numba.int64,))


# -- a binding's kernels, compiled two at a time -----------------------------------------------
#
# Numba compiles on the calling thread, holding the GIL: a second core helps only from a
# second process.  ``compile_batch`` starts one helper process (``python -m
# netlang.runtime.compile_helper``) when a binding has at least ``HELPER_FROM`` kernels not
# yet in Numba's disk cache; this process and the helper each take the costliest kernel
# left until none is left, the helper writes its machine code to the disk cache, and this
# process then loads it from there (the same bytes as compiling it here).  A helper that
# cannot start or fails leaves its kernels to this process: compiled the same, serially.

HELPER_FROM = 2
HELPERS = True          # False: never start a helper (tests compare the two ways)


def compile_batch(jobs: Sequence[tuple]) -> None:
    """Compile (or load from the disk cache) each ``(kernel, signature)`` of ``jobs``: those
    the cache lacks here and in a helper process at once (see above)."""
    started = time.perf_counter()
    _BATCH_STARTED.append(started)
    try:
        _compile_all(jobs)
    finally:
        _BATCH_STARTED.remove(started)
        with _COUNTING:
            STATS.compile_seconds += time.perf_counter() - started


def _compile_all(jobs: Sequence[tuple]) -> None:
    jobs = [(fn, sig) for fn, sig in dict.fromkeys(jobs) if sig not in fn.overloads]
    cold: dict = {}
    for fn, sig in jobs:
        if not on_disk(fn, sig):
            cold.setdefault(fn, []).append(sig)
    aside = _compile_shared(cold, HELPERS and len(cold) >= HELPER_FROM) if cold else set()
    # Loading machine code makes many objects and few cycles (Numba's first load imports
    # its registries): the cyclic collector ran ~120 times over mnist's warm loads, 70 ms.
    with cpu_kernels.collector_paused():
        for fn, sig in jobs:
            if sig in fn.overloads:             # compiled above, in this process
                continue
            cached = _compile(fn, sig)
            if (fn, sig) not in aside:          # the helper's were counted when it reported
                _count(cached, 0.0)


def on_disk(fn, signature: tuple) -> bool:
    """Whether Numba's disk cache holds ``fn``'s machine code for ``signature``: the entry
    its own lookup would find in the function's index file (numba is pinned, and these
    internal names with it; anything unexpected reads as not cached)."""
    try:
        cache = fn._cache
        key = cache._index_key(signature, fn.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:           # noqa: BLE001  (a Numba without these names: compile it)
        return False


def _weight(item) -> int:
    fn, signatures = item
    return len(signatures) * (4 if fn.targetoptions.get("parallel") else 1)


def _compile_shared(cold: dict, helped: bool) -> set:
    """Compile ``cold`` ({kernel: [signatures]}) here and, ``helped``, in a helper process,
    each taking the next kernel (all its signatures) when free; the pairs the helper
    compiled."""
    queue = collections.deque(sorted(cold.items(), key=_weight, reverse=True))
    aside: list = []
    helper = CompileHelper.start() if helped else None
    thread = None
    if helper is not None:
        thread = threading.Thread(target=helper.take, args=(queue, aside), daemon=True,
                                  name="netlang compile helper")
        thread.start()
    try:
        while True:
            try:
                fn, signatures = queue.popleft()
            except IndexError:
                break
            for sig in signatures:
                _count(_compile(fn, sig), 0.0)
    finally:            # also when a compile here fails: no helper outlives the batch
        if thread is not None:
            helper.close()
            thread.join()
    return {(fn, sig) for fn, signatures in aside for sig in signatures}


class CompileHelper:
    """One helper process and the pipes to it (pickles: requests in, replies out):
    ``CompileHelper.start()``, then ``take(queue, aside)`` on a thread of its own."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.lock = threading.Lock()
        self.closed = False
        self.holding = False        # whether it is compiling a kernel now

    def close(self) -> None:
        """No more kernels: stop the helper now unless it is compiling one (then ``take``
        returns once it is compiled)."""
        with self.lock:
            self.closed = True
            if not self.holding:
                self.process.kill()

    @classmethod
    def start(cls) -> CompileHelper | None:
        root = str(pathlib.Path(__file__).resolve().parents[2])   # holds netlang/
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        if numba.config.CACHE_DIR:          # as this process read it at import
            env["NUMBA_CACHE_DIR"] = numba.config.CACHE_DIR
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "netlang.runtime.compile_helper"], env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError:
            return None
        return cls(process)

    def take(self, queue: collections.deque, aside: list) -> None:
        """Until ``queue`` is empty: send the helper the next kernel, wait until it is
        compiled, put it in ``aside``.  Stops at the first failure (this process compiles
        that kernel itself later)."""
        process = self.process
        try:
            if pickle.load(process.stdout)[0] != "ready":
                return
            while True:
                with self.lock:
                    if self.closed or not queue:
                        return
                    fn, signatures = item = queue.popleft()
                    self.holding = True
                pickle.dump((_where(fn), signatures), process.stdin)
                process.stdin.flush()
                reply = pickle.load(process.stdout)
                with self.lock:
                    self.holding = False
                if reply[0] != "compiled":
                    return
                aside.append(item)
                for _ in signatures:
                    _count(False, 0.0, aside=True)
        except (OSError, EOFError, pickle.PickleError, KeyError, AttributeError):
            return
        finally:
            process.kill()
            process.wait()


def serve(requests, replies) -> None:
    """The helper's side (runtime/compile_helper.py): compile each kernel asked for until
    the requests end.  Each request is ``((module, file, function), signatures)``; each
    reply ``("compiled", seconds)`` or ``("failed", what)``."""
    def send(reply) -> None:
        pickle.dump(reply, replies)
        replies.flush()
    send(("ready", os.getpid()))
    while True:
        try:
            (module_name, path, name), signatures = pickle.load(requests)
        except EOFError:
            return
        started = time.perf_counter()
        try:
            fn = _find(module_name, path, name)
            for sig in signatures:
                fn.compile(sig)
            send(("compiled", time.perf_counter() - started))
        except Exception as error:      # noqa: BLE001  (the asking process compiles it)
            send(("failed", f"{type(error).__name__}: {error}"))


def set_threads(count: int) -> int:
    """Run parallel kernels on ``count`` threads (at most Numba's pool size); the count set."""
    count = max(1, min(int(count), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(count)
    return count


def threads() -> int:
    return numba.get_num_threads()


def threading_layer() -> str:
    """Numba's threading layer once a parallel kernel has run (``omp``: libgomp's pool)."""
    try:
        return numba.threading_layer()
    except ValueError:          # no parallel kernel has run yet
        return "not started"


def compiled_signatures(fn) -> int:
    """How many type signatures a kernel has compiled (or loaded) so far."""
    return len(getattr(fn, "signatures", ()))
