#!/usr/bin/env python3
"""Training throughput of the seed workloads, netlang vs PyTorch: ``netlang bench`` as a script.

    python tools/bench.py [--device cpu|gpu] [--batch 64 256] [--steps N] [--json FILE]

Runs from a checkout without installing netlang (the repository root goes on sys.path).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netlang.cli import bench
from netlang.errors import NetlangError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/bench.py", description=bench.HELP)
    bench.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return bench.run(args)
    except NetlangError as err:
        print(str(err), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
