#!/usr/bin/env python3
"""Time one system on one workload in a fresh process; print one JSON line.

    python3 tools/rival.py SYSTEM WORKLOAD BATCH [--steps N] [--warmup N] [--inference]

SYSTEM is ``netlang``, ``pytorch`` (NCHW), ``pytorch_channels_last`` or ``jax`` (jit).
tools/bench.py runs every rival through this script, each in its own process right after
netlang's run of the same workload and batch: PyTorch and XLA bring their own thread pools
(PyTorch its own OpenMP runtime), which measurably slow each other and netlang's libgomp
pool when they share a process.  A process per run also gives each system its own peak RSS
(``VmHWM``), which the JSON reports: the memory of the same network at the same batch.

``--inference``: the forward pass in eval mode (netlang: the loss and metrics, as ``netlang
eval`` fetches them; the others: the logits) instead of a training step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path[:0] = [str(TOOLS.parent), str(TOOLS)]

SYSTEMS = ("netlang", "pytorch", "pytorch_channels_last", "jax")


def peak_rss_mib() -> float:
    """This process's peak resident memory (Linux ``VmHWM``), MiB; 0 where unknown."""
    return status_mib("VmHWM")


def status_mib(field: str) -> float:
    """A memory line of this process's ``/proc/self/status`` (``VmHWM``: the peak resident
    memory, ``VmRSS``: the resident memory now), MiB; 0 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def make_step(system: str, workload: str, spec: Path, batch: int, inference: bool,
              device: str):
    """(step function, parameter count) for the system."""
    if system == "netlang":
        from netlang.cli import bench
        from netlang.runtime.backend import keep_freed_memory
        from netlang.runtime.threads import configure_cpu_threads

        keep_freed_memory()           # as the netlang command does (cli/__init__.py)
        configure_cpu_threads()
        if inference:
            return bench.inference_step(spec, batch, device)[:2]
        step, params, _, _ = bench.netlang_step(spec, batch, device)
        return step, params
    if system.startswith("pytorch"):
        import torch
        import torch_nets

        layout = torch.channels_last if system.endswith("channels_last") else \
            torch.contiguous_format
        torch_nets.rivals()           # the process-wide float32 settings (TF32 off)
        if inference:
            return torch_nets.torch_inference(workload, spec, batch, device, layout)
        return torch_nets.torch_step(workload, spec, batch, device, layout)
    import jax_nets

    return jax_nets.jax_step(workload, spec, batch, train=not inference)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/rival.py", description=__doc__.split("\n")[0])
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("workload")
    parser.add_argument("batch", type=int)
    parser.add_argument("--specs", default=None, help="folder of the specs (default: shipped)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--inference", action="store_true")
    args = parser.parse_args(argv)
    from netlang.cli import bench

    spec = bench.spec_path(args.specs or str(bench.SPECS), args.workload)
    step, params = make_step(args.system, args.workload, spec, args.batch, args.inference,
                             args.device)
    times = bench.time_steps(step, args.warmup, args.steps)
    med = statistics.median(times)
    print(json.dumps({"system": args.system, "workload": args.workload, "batch": args.batch,
                      "samples_per_s": args.batch / med, "step_ms": med * 1e3,
                      "params": params, "peak_rss_mib": peak_rss_mib()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
