"""Data-parallel training over MPI (netlang[mpi]): 2 ranks under mpiexec train the same model
as 1 rank, up to float summation order; rank 0 alone writes; bad launches are clear errors.
Each multi-rank run is a real ``mpiexec -n 2`` of ``netlang train`` (a few seconds)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
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


def train(spec: str | Path, out: Path, *options: str, ranks: int = 1
          ) -> subprocess.CompletedProcess:
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
    assert two.stdout.count("training ") == 1 and ", 2 ranks (MPI; PIDs " in two.stdout
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


BATCHNORM_SPEC = """
network spiralbn {
  input x: f32[N, 2]
  input label: i32[N]
  logits = x
    |> dense(32, use_bias=false, init=glorot_normal) |> batchnorm |> relu
    |> dense(32, use_bias=false, init=glorot_normal) |> batchnorm(momentum=0.9) |> relu
    |> dense(4, init=glorot_normal)
  loss xent = mean(softmax_cross_entropy(logits, label))
}
train spiralbn {
  data spiral(points=200, noise=0.1, seed=0)
  optimizer adam(lr=1e-2)
  batch 32
  epochs 2
}
"""


def test_sync_batchnorm_normalizes_over_the_global_batch_as_one_process_does(tmp_path):
    """Per-rank batch statistics (the default, as PyTorch DDP) train another model than one
    process; ``sync_batchnorm true`` sums the moments over the ranks and trains the same."""
    local, synced = tmp_path / "bn.net", tmp_path / "bn_sync.net"
    local.write_text(BATCHNORM_SPEC)
    synced.write_text(BATCHNORM_SPEC.replace("batch 32", "batch 32\n  sync_batchnorm true"))
    for run in (train(local, tmp_path / "one"), train(local, tmp_path / "local", ranks=2),
                train(synced, tmp_path / "sync", ranks=2)):
        assert run.returncode == 0, run.stderr
    synced_difference = largest_difference(tmp_path / "one", tmp_path / "sync")
    local_difference = largest_difference(tmp_path / "one", tmp_path / "local")
    print(f"2 ranks vs 1: sync_batchnorm {synced_difference:.1e}, per-rank "
          f"{local_difference:.1e}")
    assert synced_difference < 1e-5
    assert local_difference > 1e-2


STRIKE = """
import os, signal, sys, threading, time
from pathlib import Path
from netlang.cli import main

# rank 1 sends itself the signal once the first checkpoint exists
file, how = Path(sys.argv[1]), getattr(signal, sys.argv[2])
if os.environ.get("PMI_RANK") == "1":
    def strike():
        while not file.exists():
            time.sleep(0.01)
        os.kill(os.getpid(), how)
    threading.Thread(target=strike, daemon=True).start()
sys.exit(main(sys.argv[3:]))
"""


def strike_rank_1(tmp_path, how: str) -> tuple[subprocess.CompletedProcess, float, Path]:
    """Train spiral on 2 ranks; rank 1 gets ``how`` once the first checkpoint exists."""
    from netlang.cli.train import mpiexec_command
    script = tmp_path / "strike.py"
    script.write_text(STRIKE)
    out = tmp_path / "run"
    command = [*mpiexec_command(2), sys.executable, str(script), str(out / "last.ckpt"), how,
               "train", str(SPECS / "spiral.net"), "--out", str(out)]
    started = time.monotonic()
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL, env={**os.environ, "NETLANG_MPI_TIMEOUT": "3"})
    arrays, meta = read(out / "last.ckpt")            # the checkpoint stays loadable
    assert meta["epoch"] >= 1 and "dense1/W" in arrays
    return run, time.monotonic() - started, out


def test_a_rank_killed_stops_the_run_at_once_naming_its_pid(tmp_path):
    """kill -9 of rank 1: MPICH's mpiexec stops the other ranks at once and names the dead
    process's PID, which the run's header line gives as rank 1's."""
    run, seconds, _ = strike_rank_1(tmp_path, "SIGKILL")
    assert run.returncode != 0 and seconds < 60
    pids = re.search(r", 2 ranks \(MPI; PIDs (\d+), (\d+)\)", run.stdout)
    assert pids is not None, run.stdout
    assert f"PID {pids.group(2)} RUNNING AT" in run.stdout


def test_a_rank_that_hangs_is_named_by_the_others_within_the_timeout(tmp_path):
    """A hang of rank 1 (SIGSTOP): rank 0's gradient sum times out (3 s here), it pings the
    others, and stops every rank with an error naming rank 1."""
    run, seconds, _ = strike_rank_1(tmp_path, "SIGSTOP")
    assert run.returncode != 0 and seconds < 60
    assert ("rank 0 of 2: usage error: rank 0: no result for the gradients' sum within 3 s: "
            "rank 1 did not answer (died or hangs)") in run.stderr
    assert "hint: the last checkpoint stays loadable; rerun with --resume" in run.stderr


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
