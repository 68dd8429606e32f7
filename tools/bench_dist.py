"""Data-parallel training on this machine: 1 rank against 2 (and 2 with compress f16).

    python3 tools/bench_dist.py                       # mnist_small, 1 epoch on 12,800 images
    python3 tools/bench_dist.py --spec specs/spiral.net --epochs 4 --limit 0

Each configuration is one ``netlang train`` run in its own process(es) (``--ranks 2`` starts
mpiexec; the ranks share the machine's cores, one per rank on 2 cores).  Printed per run:
samples/s of the last epoch, and from rank 0's closing line the reductions' calls, the bytes
it sent and the time spent in them, in all and per step (time in reductions counts starting
them and waiting for them; what overlapped the backward pass is not in it; "the rest" is
everything else: compute, data, evaluation).  Two ranks on one 2-core machine show the
communication cost, not a speed-up: each rank gets half the cores the single process had
(netlang sizes each rank's thread pools to its share of the cores).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(spec: Path, out: Path, epochs: int, limit: int, ranks: int) -> tuple[str, str]:
    command = [sys.executable, "-m", "netlang", "train", str(spec), "--out", str(out),
               "--epochs", str(epochs), "--force"]
    command += ["--limit", str(limit)] if limit else []
    command += ["--ranks", str(ranks)] if ranks > 1 else []
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr}")
    speed = re.findall(r"\(([\d,]+) samples/s\)", done.stdout)
    mpi = re.search(r"MPI: .*", done.stdout)
    return (speed[-1] if speed else "?"), (mpi.group(0) if mpi else "one process, no MPI")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "mnist_small.net"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, default=12800, help="0: every example")
    args = parser.parse_args()
    spec = Path(args.spec)
    with tempfile.TemporaryDirectory() as tmp:
        compressed = Path(tmp) / spec.name
        text = spec.read_text()
        compressed.write_text(re.sub(r"(\n\s*batch \d+)", r"\1\n  compress f16", text, count=1))
        for label, path, ranks in (("1 rank", spec, 1), ("2 ranks", spec, 2),
                                   ("2 ranks, compress f16", compressed, 2)):
            speed, mpi = run(path, Path(tmp) / "run", args.epochs, args.limit, ranks)
            print(f"{label:24} {speed:>10} samples/s   {mpi}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
