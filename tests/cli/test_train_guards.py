"""What ``netlang train`` / ``eval`` guard against (issue 14): damaged or poisoned
checkpoints, a resume that would change the run, two trainings on one folder, a log that
disagrees with the checkpoint after a kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from netlang.cli import main
from netlang.runtime import checkpoint
from netlang.train.runs import RunFolder
from tests.cli.test_train import TINY, train

ROOT = Path(__file__).resolve().parents[2]

REGRESSION = """\
network reg {
  input x: f32[N, 1]
  input y: f32[N, 1]
  pred = dense(x, 1)
  loss err = mean(square(pred - y))
}
train reg { data npz("DATA"); optimizer sgd(lr=LR); batch 8; epochs 2; seed 0 }
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.net"
    path.write_text(TINY)
    return path


def rewrite(path, arrays, meta):
    """Replace a checkpoint's arrays by hand, with fresh checksums (as a buggy writer
    would): only the checks on the content itself can catch what is wrong."""
    meta = {**meta, "checksums": {k: checkpoint.array_checksum(v) for k, v in arrays.items()}}
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)),
                 **{f"a/{name}": value for name, value in arrays.items()})


# -- item 1: every restore path checks that every variable is in the file ---------------------

def test_every_restore_path_refuses_a_checkpoint_missing_a_variable(spec, tmp_path, capsys):
    """3 commands (eval, predict, train --resume) x 2 missing arrays (a parameter, the
    input normalizer's data/scale): 6 cases, each naming the missing array."""
    assert train(capsys, spec, "--out", tmp_path / "run", "--stop-after", "1")[0] == 0
    ckpt = tmp_path / "run" / "last.ckpt"
    arrays, meta = checkpoint.read(ckpt)
    np.save(tmp_path / "x.npy", np.zeros((2, 2), np.float32))
    commands = {"eval": ["eval", str(spec), "--checkpoint", str(ckpt)],
                "predict": ["predict", str(spec), "--checkpoint", str(ckpt), "--input",
                            str(tmp_path / "x.npy")],
                "resume": ["train", str(spec), "--out", str(tmp_path / "run"), "--resume"]}
    for missing in ("dense2/b", "data/scale"):
        rewrite(ckpt, {k: v for k, v in arrays.items() if k != missing}, meta)
        for argv in commands.values():
            assert main(argv) == 1
            err = capsys.readouterr().err
            assert err.endswith(f"checkpoint error: {ckpt} is incomplete: no array for "
                                f"{missing}\nhint: the file is damaged or was not written by "
                                f"netlang; use an earlier copy\n"), (argv, err)


# -- item 2: never save non-finite parameters; eval warns on non-finite metrics ---------------

def regression(tmp_path, lr: str):
    np.savez(tmp_path / "d.npz", x=np.full((8, 1), 1e15, np.float32),
             y=np.ones((8, 1), np.float32))
    path = tmp_path / "reg.net"
    path.write_text(REGRESSION.replace("DATA", str(tmp_path / "d.npz")).replace("LR", lr))
    return path


def test_an_update_that_makes_the_parameters_non_finite_is_never_saved(tmp_path, capsys):
    """1 case: the epoch's only step has a finite loss but its update overflows."""
    path = regression(tmp_path, "1e10")
    code, _, err = train(capsys, path, "--out", tmp_path / "run")
    assert code == 1
    assert err.splitlines()[0].startswith(
        f"{path}:4:10: non-finite value: not saving {tmp_path / 'run' / 'last.ckpt'}: "
        "dense1/W became non-finite at step 0 (epoch 1), after its loss was checked; the "
        "first non-finite value: ")
    assert ("mul (step 1 of 2 in the fused group %15: f32[1,1]) in scope 'sgd', in the "
            "optimizer update: 1 -inf of 1 values") in err.splitlines()[0]
    assert err.splitlines()[-1] == (
        "hint: lower the learning rate, or keep log/div/sqrt away from zero (for example "
        "log(x + 1e-7)); any earlier checkpoint is kept")
    assert not (tmp_path / "run" / "last.ckpt").exists()


def test_a_learning_rate_beyond_float32_is_refused(spec, tmp_path, capsys):
    code, _, err = train(capsys, spec, "--out", tmp_path / "run", "--lr", "1e39")
    assert code == 1 and err == ("usage error: the learning rate 1e+39 does not fit a float32 "
                                 "(at most 3.403e+38)\nhint: lower the learning rate\n")


def test_eval_warns_when_the_metrics_are_not_finite(spec, tmp_path, capsys):
    """2 cases: finite parameters (no warning), NaN parameters (a warning naming both)."""
    assert train(capsys, spec, "--out", tmp_path / "run", "--stop-after", "1")[0] == 0
    ckpt = tmp_path / "run" / "last.ckpt"
    argv = ["eval", str(spec), "--checkpoint", str(ckpt), "--split", "train"]
    assert main(argv) == 0 and capsys.readouterr().err == ""
    arrays, meta = checkpoint.read(ckpt)
    rewrite(ckpt, {**arrays, "dense2/b": np.full(4, np.nan, np.float32)}, meta)
    assert main(argv) == 0
    assert capsys.readouterr().err == (
        "warning: not finite on the train split: xent nan; the parameters in "
        f"{ckpt} may hold NaN or infinity\n")


# -- item 3: --resume refuses what would change the run ---------------------------------------

def test_resume_refuses_settings_that_would_change_the_run(spec, tmp_path, capsys):
    """5 refusals (--batch, --limit, --lr, --seed, fewer --epochs), each with its message."""
    assert train(capsys, spec, "--out", tmp_path / "run", "--stop-after", "1")[0] == 0
    ckpt = tmp_path / "run" / "last.ckpt"
    cases = [
        (["--batch", "8"], f"{ckpt} was trained with batch 16, this run uses batch 8",
         "resume with --batch 16"),
        (["--limit", "50"], f"{ckpt} was trained on 100 examples, this run has 50",
         "resume with the same data and --limit"),
        (["--lr", "0.5"], f"{ckpt} was trained with lr 0.01, this run uses lr 0.5",
         "resume with --lr 0.01"),
        (["--seed", "4"], f"{ckpt} was trained with seed 3, this run uses seed 4",
         "resume with the same --seed"),
        (["--epochs", "1"], f"{ckpt} is a run of 2 epochs; --resume cannot shorten it to 1",
         "resume with --epochs 2 or more"),
    ]
    for flags, message, hint in cases:
        code, _, err = train(capsys, spec, "--out", tmp_path / "run", "--resume", *flags)
        assert code == 1 and err == f"checkpoint error: {message}\nhint: {hint}\n", flags
    assert checkpoint.read(ckpt)[1]["epoch"] == 1                    # nothing was trained


def test_resume_with_a_smaller_limit_suggests_it(spec, tmp_path, capsys):
    assert train(capsys, spec, "--out", tmp_path / "run", "--stop-after", "1",
                 "--limit", "50")[0] == 0
    code, _, err = train(capsys, spec, "--out", tmp_path / "run", "--resume")
    assert code == 1 and err.endswith("was trained on 50 examples, this run has 100\n"
                                      "hint: resume with --limit 50\n")


def test_resume_accepts_more_epochs_and_says_so(spec, tmp_path, capsys):
    """2 cases: the spec's cosine schedule (the note says the rates change), none."""
    assert train(capsys, spec, "--out", tmp_path / "run")[0] == 0
    code, out, _ = train(capsys, spec, "--out", tmp_path / "run", "--resume", "--epochs", "3")
    assert code == 0
    assert ("note: extending the run from 2 to 3 epochs; the cosine schedule now spans 3 "
            "epochs, so the learning rates from here on differ from the first plan's") in out
    assert "epoch 3/3" in out and checkpoint.read(tmp_path / "run" / "last.ckpt")[1][
        "epoch"] == 3
    flat = tmp_path / "flat.net"
    flat.write_text(TINY.replace("  schedule cosine()\n", ""))
    assert train(capsys, flat, "--out", tmp_path / "flat")[0] == 0
    code, out, _ = train(capsys, flat, "--out", tmp_path / "flat", "--resume", "--epochs", "3")
    assert code == 0 and "note: extending the run from 2 to 3 epochs\n" in out


# -- item 4: one training per run folder; no silent overwrite ---------------------------------

def test_a_second_training_on_a_locked_folder_is_refused_naming_the_pid(spec, tmp_path,
                                                                         capsys):
    """2 cases: a fresh train and a --resume while another training holds the folder."""
    assert train(capsys, spec, "--out", tmp_path / "run", "--stop-after", "1")[0] == 0
    before = (tmp_path / "run" / "log.jsonl").read_bytes()
    with RunFolder(tmp_path / "run").locked():
        for flags in (["--force"], ["--resume"]):
            code, out, err = train(capsys, spec, "--out", tmp_path / "run", *flags)
            assert code == 1 and out == ""
            assert err == (f"usage error: the run folder {tmp_path / 'run'} is in use by "
                           f"another training (pid {os.getpid()})\nhint: wait for it to "
                           "finish, or train into another --out\n")
    assert (tmp_path / "run" / "log.jsonl").read_bytes() == before
    assert train(capsys, spec, "--out", tmp_path / "run", "--resume")[0] == 0  # released


def test_a_fresh_train_into_a_folder_holding_a_run_needs_resume_or_force(spec, tmp_path,
                                                                          capsys):
    """3 cases: refused without a flag (nothing touched), --force starts over, --resume and
    --force together are refused."""
    assert train(capsys, spec, "--out", tmp_path / "run", "--stop-after", "1")[0] == 0
    ckpt = (tmp_path / "run" / "last.ckpt").read_bytes()
    code, out, err = train(capsys, spec, "--out", tmp_path / "run")
    assert code == 1 and out == ""
    assert err == (f"usage error: the run folder {tmp_path / 'run'} already holds a run "
                   "(last.ckpt, log.jsonl)\nhint: continue it with --resume, start over with "
                   "--force, or train into another --out\n")
    assert (tmp_path / "run" / "last.ckpt").read_bytes() == ckpt
    code, _, err = train(capsys, spec, "--out", tmp_path / "run", "--resume", "--force")
    assert code == 1 and err == ("usage error: --resume and --force contradict each other\n"
                                 "hint: --resume continues the run; --force replaces it\n")
    assert train(capsys, spec, "--out", tmp_path / "run", "--force", "--epochs", "1")[0] == 0
    events = [json.loads(x)["event"] for x in (tmp_path / "run" / "log.jsonl").open()]
    assert events == ["start", "epoch", "test"]


# -- item 5: the log agrees with the checkpoint after a kill ----------------------------------

class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_a_kill_between_checkpoint_and_log_is_repaired_on_resume(spec, tmp_path, capsys,
                                                                  monkeypatch):
    """2 cases: killed after epoch 1's checkpoint but before its log record (the record is
    restored from the checkpoint), and a partial last line (dropped); the resumed log then
    has every epoch once and the same records as an uninterrupted run."""
    assert train(capsys, spec, "--out", tmp_path / "straight")[0] == 0
    real_append = RunFolder.append

    def killed_at_epoch_log(self, record):
        if record["event"] == "epoch":
            raise Killed
        real_append(self, record)

    monkeypatch.setattr(RunFolder, "append", killed_at_epoch_log)
    with pytest.raises(Killed):
        main(["train", str(spec), "--out", str(tmp_path / "run")])
    monkeypatch.undo()
    log = tmp_path / "run" / "log.jsonl"
    assert [json.loads(x)["event"] for x in log.open()] == ["start"]
    with open(log, "a") as f:
        f.write('{"event": "epo')                                  # a torn write
    code, out, _ = train(capsys, spec, "--out", tmp_path / "run", "--resume")
    assert code == 0
    assert (f"note: repaired {log}: dropped 1 unreadable line; restored the record of epoch 1 "
            "from the checkpoint\n") in out
    records = [json.loads(x) for x in log.open()]
    assert [r["event"] for r in records] == ["start", "epoch", "resume", "epoch", "test"]
    straight = [json.loads(x) for x in (tmp_path / "straight" / "log.jsonl").open()]
    keys = ("epoch", "step", "lr", "train_xent", "val_accuracy")
    for mine, theirs in zip([r for r in records if r["event"] == "epoch"],
                            [r for r in straight if r["event"] == "epoch"]):
        assert [mine[k] for k in keys] == [theirs[k] for k in keys]


def test_log_records_beyond_the_checkpoint_are_dropped_on_resume(spec, tmp_path, capsys):
    """1 case: the log holds an epoch (and test) the checkpoint does not."""
    assert train(capsys, spec, "--out", tmp_path / "run", "--stop-after", "1")[0] == 0
    log = tmp_path / "run" / "log.jsonl"
    with open(log, "a") as f:
        f.write(json.dumps({"event": "epoch", "epoch": 2, "step": 14}) + "\n")
    code, out, _ = train(capsys, spec, "--out", tmp_path / "run", "--resume")
    assert code == 0 and (f"note: repaired {log}: dropped 1 record(s) after epoch 1, which "
                          "the checkpoint does not hold\n") in out
    epochs = [json.loads(x)["epoch"] for x in log.open() if '"epoch", "epoch"' in x]
    assert epochs == [1, 2]


def test_sigkills_during_training_leave_a_log_that_agrees_with_the_checkpoint(spec, tmp_path):
    """3 real SIGKILLs at different moments of a 12-epoch run, each followed by --resume;
    at the end every epoch is in the log exactly once, as in the checkpoint."""
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "netlang", "train", str(spec), "--out", str(run),
            "--epochs", "12"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    for kill, delay in enumerate((0.0, 0.02, 0.004)):
        resume = ["--resume"] if (run / "last.ckpt").exists() else (["--force"] if kill else [])
        child = subprocess.Popen([*argv, *resume], stdout=subprocess.PIPE, env=env,
                                 stderr=subprocess.DEVNULL, text=True)
        while not child.stdout.readline().startswith("epoch "):
            assert child.poll() is None, "the run ended before an epoch line"
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finished = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True,
                              check=False)
    assert finished.returncode == 0, finished.stderr
    _, meta = checkpoint.read(run / "last.ckpt")
    epochs = [json.loads(x)["epoch"] for x in (run / "log.jsonl").open()
              if json.loads(x)["event"] == "epoch"]
    assert meta["epoch"] == 12 and epochs == list(range(1, 13))
