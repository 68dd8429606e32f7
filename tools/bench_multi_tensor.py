"""In-process A/B of the optimizer's update as one multi-tensor call (runtime/multi_tensor.py)
against one loop per parameter, on the seed workloads' train steps.

    python3 tools/bench_multi_tensor.py [--workloads mnist mnist_small spiral] [--batch 64]
                                        [--rounds 15] [--steps 10] [--parallel] [--loops]

Each variant is a session of its own, built as ``netlang bench`` builds it (same spec, seed
and synthetic batch): ``per-parameter`` (``executor.multi_tensor = False``), ``multi-tensor``
(the default) and, with ``--parallel``, ``multi 2 threads`` (the call's chunks over the
threads whatever its size).  Each round runs ``--steps`` steps of every variant, the order
rotated round by round, in one process: the medians compare steps under the same load.  Two
columns: the whole step, and the update alone (from the first in-place update call to the
end of the last, timed inside the step).  The load average is printed before and after:
other processes on the machine show there even when ``top`` cannot see them.

``--loops`` times loop shapes for mnist.net's Adam update by themselves (hand-written Numba
twins of the generated loops, 8 tensors, 1.1M parameters): one call per tensor, one call
looping over the tensors on one thread, a ``prange`` over 64K-element chunks, and an outer
loop over the tensors with a ``prange`` inside.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netlang.cli.bench import netlang_step, update_spans
from netlang.runtime import multi_tensor
from netlang.runtime.threads import configure_cpu_threads

SPECS = ROOT / "specs"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def variants(spec: Path, batch: int, parallel: bool) -> dict:
    made = {}
    for name, multi, threads in [("per-parameter", False, False), ("multi-tensor", True, False),
                                 ("multi 2 threads", True, True)][:3 if parallel else 2]:
        step, _, session, _ = netlang_step(spec, batch, "cpu")
        session.executor.multi_tensor = multi
        saved = multi_tensor.PARALLEL_FROM
        multi_tensor.PARALLEL_FROM = 0 if threads else saved
        try:
            step()                          # binds (and compiles) under this setting
        finally:
            multi_tensor.PARALLEL_FROM = saved
        made[name] = (step, update_spans(session))
    return made


def ab(spec: Path, batch: int, rounds: int, steps: int, parallel: bool) -> None:
    made = variants(spec, batch, parallel)
    names = list(made)
    for step, _ in made.values():
        for _ in range(3):
            step()
    times = {n: [] for n in names}
    for spans in (s for _, s in made.values()):
        spans.clear()
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            step = made[name][0]
            for _ in range(steps):
                started = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times[names[0]])
    base_update = statistics.median(made[names[0]][1])
    print(f"{spec.stem} batch {batch}:")
    for name in names:
        step_ms = statistics.median(times[name]) * 1e3
        update_ms = statistics.median(made[name][1]) * 1e3
        print(f"  {name:<16} step {step_ms:8.3f} ms ({base * 1e3 / step_ms:5.3f}x)   "
              f"update {update_ms:7.3f} ms ({base_update * 1e3 / update_ms:5.2f}x)")


ADAM_SHAPES = [800, 32, 51200, 64, 1048576, 1024, 10240, 10]   # mnist.net's parameters


# The element code of Adam's update as the generated loops compute it (m, v, then p).
ADAM_ELEMENT = """
            e, mm, vv, pp = g{t}[k], m{t}[k], v{t}[k], p{t}[k]
            t0 = np.float32(mm + np.float32((e - mm) * b1))
            t1 = np.float32(vv + np.float32(np.float32(e * e) - vv) * b2)
            m{t}[k] = t0
            v{t}[k] = t1
            p{t}[k] = np.float32(pp - np.float32(lr * np.float32(
                t0 / np.float32(np.float32(np.sqrt(t1)) + eps))))"""
LOOP_SHAPES = """
def one(g, m, v, p, b1, b2, eps, lr):
    if True:
        for k in range(p.shape[0]):{element}


def outer(g, m, v, p, b1, b2, eps, lr):
    for t in range(len(p)):
        gt = g[t]
        mt = m[t]
        vt = v[t]
        pt = p[t]
        for k in prange(pt.shape[0]):{element_t}


def chunked(g, m, v, p, b1, b2, eps, lr, chunks):
    for c in prange(chunks.shape[0]):
        t, start, stop = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        gt, mt = g[t][start:stop], m[t][start:stop]
        vt, pt = v[t][start:stop], p[t][start:stop]
        for k in range(pt.shape[0]):{element_t}
"""


def loop_shapes(repeats: int) -> None:
    """See the module doc (``--loops``).  Each shape's first call runs on copies and must
    give the per-tensor call's bits.  Beware, numba 0.68: in ``outer``, taking the arrays
    out of the tuples in one statement (``gt, mt = g[t], m[t]``) before the ``prange`` makes
    it write every element wrong (checked here: all 3.3M differ); one statement per array
    is right, as ``multi_tensor.kernel_source`` writes them."""
    from numba import njit, prange

    scope = {"np": np, "prange": prange}
    text = LOOP_SHAPES.format(element=ADAM_ELEMENT.format(t=""),
                              element_t=ADAM_ELEMENT.format(t="t"))
    exec(compile(text, "<loop shapes>", "exec"), scope)  # noqa: S102
    options = {"nogil": True, "error_model": "numpy"}
    single, one_thread = njit(**options)(scope["one"]), njit(**options)(scope["chunked"])
    threads_outer = njit(parallel=True, **options)(scope["outer"])
    threads_chunked = njit(parallel=True, **options)(scope["chunked"])
    rng = np.random.default_rng(0)
    g, m, v, p = ([rng.standard_normal(n).astype(np.float32) for n in ADAM_SHAPES]
                  for _ in range(4))
    v = [np.abs(a) for a in v]
    scalars = (np.float32(0.1), np.float32(0.001), np.float32(1e-8), np.float32(1e-4))
    whole = multi_tensor.chunk_table(ADAM_SHAPES, None)
    pieces = multi_tensor.chunk_table(ADAM_SHAPES, multi_tensor.CHUNK)

    def per_tensor(g, m, v, p):
        for arrays in zip(g, m, v, p):
            single(*arrays, *scalars)
    shapes = {
        "one call per tensor": per_tensor,
        "one call, 1 thread": lambda *a: one_thread(*a, *scalars, whole),
        "prange over chunks": lambda *a: threads_chunked(*a, *scalars, pieces),
        "outer loop, prange in": lambda *a: threads_outer(*a, *scalars),
    }
    results = {}
    for name, fn in shapes.items():         # one step on copies: every shape, the same bits
        state = [tuple(a.copy() for a in arrays) for arrays in (m, v, p)]
        fn(tuple(g), *state)
        results[name] = np.concatenate([np.concatenate(s) for s in state])
    same = all(np.array_equal(r, results["one call per tensor"]) for r in results.values())
    floor_src = np.ones(sum(ADAM_SHAPES) * 7 // 2, np.float32)
    floor_dst = np.empty_like(floor_src)
    tuples = (tuple(g), tuple(m), tuple(v), tuple(p))
    calls = {name: (lambda fn=fn: fn(*tuples)) for name, fn in shapes.items()}
    calls["copy of the same bytes"] = lambda: np.copyto(floor_dst, floor_src)
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            for _ in range(20):
                call()
            times[name].append((time.perf_counter() - started) / 20)
    print(f"mnist.net's Adam update (8 tensors, 1.1M parameters), median of {repeats} x 20 "
          f"calls; every shape gives the same bits: {same}")
    for name, spent in times.items():
        print(f"  {name:<24} {statistics.median(spent) * 1e3:7.3f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", nargs="+", default=["mnist", "mnist_small", "spiral"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--parallel", action="store_true",
                        help="also a variant whose call splits its chunks over the threads")
    parser.add_argument("--loops", action="store_true",
                        help="time loop shapes for mnist.net's Adam update instead")
    args = parser.parse_args()
    print(configure_cpu_threads().describe())       # the pools as `netlang train` sizes them
    print(f"load average before: {load()} ({os.cpu_count()} cpus)")
    if args.loops:
        loop_shapes(args.rounds)
    else:
        for name in args.workloads:
            ab(SPECS / f"{name}.net", args.batch, args.rounds, args.steps, args.parallel)
    print(f"load average after:  {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
