#!/usr/bin/env python3
"""The resident memory a CPU train step adds to its process, next to the buffer plan's.

    python3 tools/rss_vs_plan.py [--workloads mnist residual spiral] [--batch 64 256]

Each workload and batch runs in a fresh process, built as ``netlang bench`` builds it: once
Numba and the kernels are set up, the resident memory (``VmRSS``) is read, five train steps
run, and the peak (``VmHWM``) is read again.  Printed beside that growth: the arena the
buffer plan sized (``netlang explain``'s arena line: every planned intermediate) plus the
state (parameters and optimizer slots), and what the runtime adds over both (modules
imported on first use, generated kernels, oneDNN's primitives and scratchpads, the batch).
The plan is right when that rest stays about the same from batch to batch while the arena
grows: the growth of the process follows the arena's.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path[:0] = [str(TOOLS.parent), str(TOOLS)]


def measure(workload: str, batch: int) -> dict:
    """In this process (a fresh one): MiB the step added, its arena and its state."""
    from netlang.runtime import backend

    backend.set_up_cpu("rss-vs-plan")
    from rival import status_mib

    from netlang.cli.bench import SPECS, netlang_step, session_program

    before = status_mib("VmRSS")
    step, _, session, _ = netlang_step(SPECS / f"{workload}.net", batch, "cpu")
    for _ in range(5):
        step()
    grew = status_mib("VmHWM") - before
    bound = next(iter(session.executor._bound[session_program(session)].values()))
    state = sum(a.nbytes for a in session.state.arrays.values())
    return {"grew": grew, "arena": bound.arena.nbytes / 2**20, "state": state / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", nargs="+", default=["mnist", "residual", "spiral"])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--one", nargs=2, metavar=("WORKLOAD", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return 0
    print("MiB a CPU train step adds to a fresh process (peak) against the buffer plan")
    print(f"  {'workload':<10} {'batch':>5} {'grew':>7} {'arena':>7} {'state':>7} {'rest':>7}")
    for workload in args.workloads:
        for batch in args.batch:
            done = subprocess.run([sys.executable, __file__, "--one", workload, str(batch)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{workload} batch {batch} failed: {done.stderr.strip()[-500:]}",
                      file=sys.stderr)
                return 1
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rest = row["grew"] - row["arena"] - row["state"]
            print(f"  {workload:<10} {batch:>5} {row['grew']:>7.1f} {row['arena']:>7.1f} "
                  f"{row['state']:>7.1f} {rest:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
