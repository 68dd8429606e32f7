"""Data-parallel training over MPI (netlang[mpi]): 2 ranks under mpiexec train the same model
as 1 rank, up to float summation order; rank 0 alone writes; bad launches are clear errors.
Each multi-rank run is a real ``mpiexec -n 2`` of ``netlang train`` (a few seconds)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netlang.cli import main
from netlang.runtime.checkpoint import read

pytest.importorskip("mpi4py")
MPIEXEC = Path(sys.executable).parent / "mpiexec"
if not MPIEXEC.exists():
    pytest.skip("no mpiexec beside this Python (pip install 'netlang[mpi]')",
                allow_module_level=True)

SPECS = Path(__file__).resolve().parents[2] / "specs"


def train(spec: str, out: Path, *options: str, ranks: int = 1) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "netlang", "train", str(SPECS / spec), "--out", str(out),
               *options, *(["--ranks", str(ranks)] if ranks > 1 else [])]
    return subprocess.run(command, check=False, capture_output=True, text=True,
                          timeout=300)


def parameters(run: Path) -> dict[str, np.ndarray]:
    arrays, _ = read(run / "last.ckpt")
    return {k: v for k, v in arrays.items() if not k.startswith("data/")}


def largest_difference(a: Path, b: Path) -> float:
    pa, pb = parameters(a), parameters(b)
    assert sorted(pa) == sorted(pb)
    return max(float(np.max(np.abs(pa[k].astype(np.float64) - pb[k]))) for k in pa)


@pytest.mark.parametrize("spec, options", [
    ("spiral.net", ["--epochs", "2"]),                          # 2 x 25 steps of batch 32
    ("mnist_small.net", ["--epochs", "1", "--limit", "3200"]),  # 50 steps of batch 64
])
def test_two_ranks_train_the_same_model_as_one(tmp_path, spec, options):
    one = train(spec, tmp_path / "one", *options)
    two = train(spec, tmp_path / "two", *options, ranks=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    difference = largest_difference(tmp_path / "one", tmp_path / "two")
    print(f"{spec}: largest parameter difference, 2 ranks vs 1: {difference:.2e}")
    assert difference < 1e-4
    # rank 0 alone prints and logs: one header, one line per epoch, one start record
    assert two.stdout.count("training ") == 1 and ", 2 ranks (MPI)" in two.stdout
    records = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").open()]
    assert [r["event"] for r in records].count("start") == 1


def test_f16_compression_halves_the_bytes_and_stays_close(tmp_path):
    spec = tmp_path / "spiral.net"
    spec.write_text((SPECS / "spiral.net").read_text().replace("batch 32", "batch 32\n"
                                                                "  compress f16"))
    command = [sys.executable, "-m", "netlang", "train", str(spec), "--out",
               str(tmp_path / "f16"), "--epochs", "2", "--ranks", "2"]
    run = subprocess.run(command, check=False, capture_output=True, text=True,
                          timeout=300)
    assert run.returncode == 0, run.stderr
    assert "gradients sent as f16" in run.stdout
    assert train("spiral.net", tmp_path / "f32", "--epochs", "2", ranks=2).returncode == 0
    difference = largest_difference(tmp_path / "f16", tmp_path / "f32")
    assert 0 < difference < 1e-2


def test_a_run_of_two_ranks_resumes_with_one(tmp_path):
    first = train("spiral.net", tmp_path / "run", "--epochs", "2", "--stop-after", "1",
                  ranks=2)
    assert first.returncode == 0, first.stderr
    rest = train("spiral.net", tmp_path / "run", "--epochs", "2", "--resume")
    assert rest.returncode == 0, rest.stderr
    assert "resuming" in rest.stdout and "epoch 2/2" in rest.stdout
    assert train("spiral.net", tmp_path / "whole", "--epochs", "2").returncode == 0
    assert largest_difference(tmp_path / "run", tmp_path / "whole") < 1e-4


def test_a_batch_the_ranks_cannot_split_stops_every_rank_with_one_error(tmp_path):
    run = train("spiral.net", tmp_path / "run", "--epochs", "1", "--batch", "33", ranks=2)
    assert run.returncode != 0
    assert "usage error: a batch of 33 does not split evenly over 2 ranks" in run.stderr
    assert "Traceback" not in run.stderr


def test_ranks_without_mpiexec_say_what_to_install(tmp_path, monkeypatch, capsys):
    import netlang.cli.train as cli_train
    monkeypatch.setattr(cli_train.shutil, "which", lambda _name: None)
    monkeypatch.setattr(cli_train.sys, "executable", str(tmp_path / "python"))
    assert main(["train", str(SPECS / "spiral.net"), "--ranks", "2"]) == 1
    assert capsys.readouterr().err == (
        "usage error: --ranks needs mpiexec, which was not found\n"
        "hint: install the MPI extra: pip install 'netlang[mpi]' (mpi4py and MPICH), or put "
        "your MPI's mpiexec on PATH\n")
