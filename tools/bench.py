#!/usr/bin/env python3
"""Training throughput of the seed workloads: netlang vs PyTorch eager (NCHW and
channels_last) and JAX jit, each rival in its own process.

    python3 tools/bench.py [--device cpu|gpu] [--batch 64 256] [--steps N] [--json FILE]
    python3 tools/bench.py --inference [--batch 1000] --workloads mnist
    python3 tools/bench.py --rss --workloads mnist --batch 64

``netlang bench`` with rivals timed right after netlang on each workload and batch, in the
same run, interleaved: each rival runs in a fresh process (tools/rival.py), because PyTorch
and XLA bring their own thread pools, which slow each other and netlang's when they share a
process.  The JSON's ``results`` gain a row per rival (``pytorch``, ``pytorch_channels_last``,
``jax``); the table adds netlang / the fastest rival.  A rival that is not installed is left
out, with a note.

``--rounds R``: netlang and each rival R times in turn on each workload and batch, each
system's median round in the table (a shared machine's load moves between processes run
minutes apart; rounds spread it over every system).

``--inference``: the forward pass in eval mode instead of a training step (netlang fetches
the loss and metrics, as ``netlang eval`` does).  ``--rss``: also run netlang itself in a fresh
process per workload and batch and print every system's peak resident memory.
Runs from a checkout without installing netlang (the repository root goes on sys.path).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path[:0] = [str(TOOLS.parent), str(TOOLS)]

from netlang.cli import bench
from netlang.errors import NetlangError

RIVALS = (("pytorch", "torch"), ("pytorch_channels_last", "torch"), ("jax", "jax"))


def run_in_process(system: str, name: str, batch: int, args) -> dict | None:
    """tools/rival.py's JSON for one system, workload and batch (None if it failed)."""
    command = [sys.executable, str(TOOLS / "rival.py"), system, name, str(batch),
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--device", args.device, "--specs", args.specs]
    if args.inference:
        command.append("--inference")
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"  {system} {name} batch {batch} failed:\n{done.stderr[-2000:]}",
              file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def rival(system: str, rss: dict) -> bench.Rival:
    def time(name: str, spec: Path, batch: int, args, ours: bench.Result):
        if system.endswith("channels_last") and not is_image_workload(spec):
            return None
        row = run_in_process(system, name, batch, args)
        if row is None:
            return None
        rss[(system, name, batch)] = row["peak_rss_mib"]
        note = ("" if row["params"] == ours.params
                else f"{system} params {row['params']} vs netlang {ours.params}")
        return bench.Result(name, batch, system, row["samples_per_s"], row["step_ms"], note,
                            params=row["params"])
    return bench.Rival(system, time)


def is_image_workload(spec: Path) -> bool:
    import netlang

    model = netlang.compile(spec)
    return any(model.graph.nodes[nid].type.rank == 4
               for name, nid in model.graph.inputs.items() if not name.startswith("train/"))


def installed_rivals(skip: bool, rss: dict) -> tuple[list[bench.Rival], str]:
    if skip:
        return [], "--no-torch"
    chosen, missing = [], []
    for system, module in RIVALS:
        if importlib.util.find_spec(module) is None:
            missing.append(module)
        else:
            chosen.append(rival(system, rss))
    # The versions from the installed metadata: importing torch or jax here would load their
    # thread pools into the process that times netlang (measured: mnist_small at batch 64
    # ran at 16,800/s instead of 36,600/s in about half the runs that did).
    versions = []
    for module in dict.fromkeys(m for _, m in RIVALS):
        if module not in missing:
            versions.append(f"{module} {importlib.metadata.version(module)}")
    note = (", ".join(versions) + " (each in its own process; PyTorch eager float32 with "
            "TF32 off, NCHW and channels_last; JAX jit)")
    if missing:
        note += f"; not installed: {', '.join(dict.fromkeys(missing))}"
    return chosen, note


def print_rss(rss: dict, args) -> None:
    """Peak RSS per system, workload and batch (netlang run in its own process too)."""
    print("\npeak resident memory of one process timing the step (MiB, VmHWM)")
    for name in args.workloads:
        for batch in args.batch:
            row = run_in_process("netlang", name, batch, args)
            ours = row["peak_rss_mib"] if row else float("nan")
            others = {s: v for (s, n, b), v in rss.items() if n == name and b == batch}
            print(f"  {name:<12} {batch:>5}  netlang {ours:,.0f}  " + "  ".join(
                f"{s} {v:,.0f}" for s, v in others.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/bench.py",
                                     description="training throughput of the seed workloads "
                                                 "(samples/s), next to PyTorch and JAX")
    bench.add_arguments(parser, no_torch_help="skip the rivals (PyTorch, JAX)")
    parser.add_argument("--rss", action="store_true",
                        help="also print each system's peak RSS (netlang in its own process)")
    args = parser.parse_args(argv)
    if args.no_graph:
        os.environ["NETLANG_GRAPHS"] = "0"      # read by the executor (runtime/capture.py)
    try:
        bench.check_arguments(args)
        if args.device == "cpu":
            from netlang.runtime.backend import keep_freed_memory
            from netlang.runtime.threads import configure_cpu_threads

            keep_freed_memory()
            configure_cpu_threads()
        os.environ.pop("OMP_WAIT_POLICY", None)   # the rivals' processes run as users run them
        os.environ.pop("GOMP_SPINCOUNT", None)
        os.environ.pop("OMP_NUM_THREADS", None)
        rss: dict = {}
        rivals, note = installed_rivals(args.no_torch, rss)
        code = bench.run(args, rivals, note)
        if args.rss:
            print_rss(rss, args)
        return code
    except NetlangError as err:
        print(str(err), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
