#!/usr/bin/env python3
"""Training throughput of the seed workloads, netlang vs PyTorch (NCHW and channels_last).

    python3 tools/bench.py [--device cpu|gpu] [--batch 64 256] [--steps N] [--json FILE]

``netlang bench`` with PyTorch's twin of each network (tools/torch_nets.py) timed right after
netlang on each workload and batch, in the same run, with the same flags and JSON (its
``results`` gain ``pytorch`` and ``pytorch_channels_last`` rows); the table adds the ratio
netlang / the fastest PyTorch.  Without torch installed, or with --no-torch, it is ``netlang
bench``.  Runs from a checkout without installing netlang (the repository root goes on
sys.path).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path[:0] = [str(TOOLS.parent), str(TOOLS)]

from netlang.cli import bench
from netlang.errors import NetlangError


def pytorch_rivals(skip: bool) -> tuple[list[bench.Rival], str]:
    """PyTorch's systems and the line that says what they are, or why there are none."""
    if skip:
        return [], "--no-torch"
    try:
        import torch_nets
    except ModuleNotFoundError as err:
        if err.name != "torch":
            raise
        return [], f"PyTorch is not installed ({err})"
    return torch_nets.rivals()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/bench.py",
                                     description="training throughput of the seed workloads "
                                                 "(samples/s), next to PyTorch")
    bench.add_arguments(parser, no_torch_help="skip the PyTorch runs")
    args = parser.parse_args(argv)
    try:
        bench.check_arguments(args)
        # the thread pools as `netlang bench` sizes them (cli/__init__.py); then PyTorch's own
        # OpenMP runtime loads with the environment as it was, so it runs as users run it
        import os

        from netlang.runtime.threads import configure_cpu_threads

        saved = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
        configure_cpu_threads()
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        rivals, note = pytorch_rivals(args.no_torch)
        return bench.run(args, rivals, note)
    except NetlangError as err:
        print(str(err), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
