"""Whole training steps under each choice of how the CPU's threads wait and share the work:
libgomp's spin count (``runtime/threads.py``: SPIN_COUNT) and the size from which generated
and hand-written loops split over the threads (``generated.SERIAL_BELOW``,
``cpu_loops.PARALLEL_MIN``, ``multi_tensor.PARALLEL_FROM``).

    python3 tools/bench_threads.py [--workloads residual mnist mnist_small] [--batch 64]
        [--spin 0 10000 300000] [--parallel-from 65536 16777216] [--rounds 2] [--steps 15]
        [--load]

libgomp reads ``GOMP_SPINCOUNT`` once, when it is loaded, so every setting runs in a fresh
process (the settings interleaved, round after round; the kernel cache warm after the first).
Spin 0 is ``OMP_WAIT_POLICY=passive``'s behaviour (sleep at once).  ``--load`` runs the same
table again with one other process spinning on a core, a shared machine's load.  Printed:
the median ms per step of each process, per workload and setting.
"""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netlang.cli.bench import spec_path
from netlang.errors import NetlangError, UsageError

CHILD = """
import statistics, sys
from pathlib import Path
from netlang.runtime.threads import configure_cpu_threads
configure_cpu_threads()
from netlang.runtime import cpu_loops, generated, multi_tensor
generated.SERIAL_BELOW = cpu_loops.PARALLEL_MIN = multi_tensor.PARALLEL_FROM = {parallel_from}
from netlang.cli.bench import netlang_step, time_steps
step = netlang_step(Path({spec!r}), {batch}, "cpu")[0]
print("RESULT", statistics.median(time_steps(step, 3, {steps})) * 1e3)
"""


def step_ms(spec: Path, batch: int, steps: int, spin: int, parallel_from: int) -> float:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env["GOMP_SPINCOUNT"] = str(spin)
    env["PYTHONPATH"] = str(ROOT)
    code = CHILD.format(parallel_from=parallel_from, spec=str(spec), batch=batch, steps=steps)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode != 0 or "RESULT" not in done.stdout:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"bench_threads: the step of {spec.name} failed at spin {spin}: {last}")
    return float(done.stdout.split("RESULT")[1])


def table(args) -> None:
    settings = list(itertools.product(args.spin, args.parallel_from))
    print(f"  {'workload':<12} " + " ".join(f"{f'spin {s:,} / from {p:,}':>30}"
                                            for s, p in settings))
    for name in args.workloads:
        spec = spec_path(str(ROOT / "specs"), name)
        times: dict = {setting: [] for setting in settings}
        for _ in range(args.rounds):
            for setting in settings:
                times[setting].append(step_ms(spec, args.batch, args.steps, *setting))
        print(f"  {name:<12} " + " ".join(
            f"{' / '.join(f'{t:.2f}' for t in times[setting]):>30}" for setting in settings),
            flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["residual", "mnist", "mnist_small"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--spin", type=int, nargs="+", default=[0, 10_000, 300_000],
                        help="GOMP_SPINCOUNT values (0: sleep at once, as passive)")
    parser.add_argument("--parallel-from", type=int, nargs="+", default=[1 << 16, 1 << 24],
                        help="elements from which loops split over the threads")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--load", action="store_true",
                        help="also with one other process spinning on a core")
    args = parser.parse_args(argv)
    load = Path("/proc/loadavg").read_text().split()[0]
    try:
        for name in args.workloads:             # every name checked before anything runs
            spec_path(str(ROOT / "specs"), name)
        print(f"median ms per step at batch {args.batch}, each setting in its own process, "
              f"{args.rounds} rounds (load average {load} at start)")
        print("quiet:")
        table(args)
        if args.load:
            print("with one busy process beside it:")
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                table(args)
            finally:
                spinner.kill()
                spinner.wait()
    except NetlangError as err:
        print(str(err), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
