"""netlang train / eval / predict on a tiny spec (a spiral MLP with dropout): the run folder,
exact resume through the command line, refusals and non-finite losses, as a user sees them."""
from __future__ import annotations

import json

import numpy as np
import pytest

import netlang
from netlang.cli import main
from netlang.runtime.backend import get_backend
from netlang.runtime.checkpoint import read

TINY = """\
network tiny {
  input x: f32[N, 2]
  input label: i32[N]

  logits = x |> dense(16, activation=relu) |> dropout(0.2) |> dense(4)

  output probs = softmax(logits)
  output pred = argmax(logits, axis=1)
  loss xent = mean(softmax_cross_entropy(logits, label))
  metric accuracy = mean(cast(equal(pred, label), dtype=f32))
}

train tiny {
  data spiral(points=30, validation=20)
  optimizer adam(lr=1e-2)
  batch 16
  epochs 2
  seed 3
  schedule cosine()
}
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.net"
    path.write_text(TINY)
    return path


def train(capsys, *args):
    """(exit code, stdout, stderr without the progress lines of kernels compiled cold)."""
    code = main(["train", *map(str, args)])
    out = capsys.readouterr()
    err = "".join(line for line in out.err.splitlines(keepends=True)
                  if not line.startswith("netlang: compiled kernel "))
    return code, out.out, err


def test_train_prints_a_line_per_epoch_and_fills_the_run_folder(spec, tmp_path, capsys):
    code, out, _ = train(capsys, spec, "--out", tmp_path / "run")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == ("training tiny on spiral: 100 examples (20 for validation), 2 epochs "
                        "of batch 16, adam(lr=0.01, beta1=0.9, beta2=0.999, epsilon=1e-08), "
                        "schedule cosine(min=0.0, warmup=0.0), seed 3, "
                        + get_backend("cpu").describe())
    assert lines[1].startswith("epoch 1/2  xent ") and "val_accuracy" in lines[1]
    assert lines[2].startswith("epoch 2/2  xent ") and "samples/s)" in lines[2]
    assert lines[3].startswith("test: xent ")
    assert lines[4] == f"run folder {tmp_path / 'run'}: log.jsonl, last.ckpt, curves.png"
    events = [json.loads(x)["event"] for x in (tmp_path / "run" / "log.jsonl").open()]
    assert events == ["start", "epoch", "epoch", "test"]
    _, meta = read(tmp_path / "run" / "last.ckpt")
    assert (meta["epoch"], meta["step"], meta["network"]) == (2, 14, "tiny")


def test_default_run_folder_is_named_after_the_spec(spec, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train(capsys, spec, "--epochs", "1")[0] == 0
    assert (tmp_path / "runs" / "tiny" / "last.ckpt").is_file()


def same_checkpoints(a_path, b_path):
    a, meta_a = read(a_path)
    b, meta_b = read(b_path)
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert meta_a["rng"] == meta_b["rng"] and meta_a["step"] == meta_b["step"] == 14


def test_stop_and_resume_gives_the_same_parameters_bit_for_bit(spec, tmp_path, capsys):
    assert train(capsys, spec, "--out", tmp_path / "straight")[0] == 0
    code, out, _ = train(capsys, spec, "--out", tmp_path / "split", "--stop-after", "1")
    assert code == 0 and "test:" not in out
    code, out, _ = train(capsys, spec, "--out", tmp_path / "split", "--resume")
    assert code == 0 and f"resuming {tmp_path / 'split'} after epoch 1 (step 7)" in out
    same_checkpoints(tmp_path / "straight" / "last.ckpt", tmp_path / "split" / "last.ckpt")
    events = [json.loads(x)["event"] for x in (tmp_path / "split" / "log.jsonl").open()]
    assert events == ["start", "epoch", "resume", "epoch", "test"]


def test_one_epoch_then_resume_for_a_second_is_exact_without_a_schedule(tmp_path, capsys):
    path = tmp_path / "flat.net"
    path.write_text(TINY.replace("  schedule cosine()\n", ""))
    assert train(capsys, path, "--out", tmp_path / "straight")[0] == 0
    assert train(capsys, path, "--out", tmp_path / "split", "--epochs", "1")[0] == 0
    assert train(capsys, path, "--out", tmp_path / "split", "--resume", "--epochs", "2")[0] == 0
    same_checkpoints(tmp_path / "straight" / "last.ckpt", tmp_path / "split" / "last.ckpt")


def test_eval_prints_the_metrics_of_a_split(spec, tmp_path, capsys):
    train(capsys, spec, "--out", tmp_path / "run")
    assert main(["eval", str(spec), "--checkpoint", str(tmp_path / "run" / "last.ckpt"),
                 "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("train (100 examples, epoch 2): xent ") and "accuracy " in out


def test_predict_prints_or_saves_outputs(spec, tmp_path, capsys):
    train(capsys, spec, "--out", tmp_path / "run")
    x = np.array([[0.1, 0.2], [-0.5, 0.3], [0.0, -0.9]], np.float32)
    np.save(tmp_path / "x.npy", x)
    ckpt = str(tmp_path / "run" / "last.ckpt")
    assert main(["predict", str(spec), "--checkpoint", ckpt, "--input",
                 str(tmp_path / "x.npy")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("probs (float32[3, 4]):") and "pred (int64[3]):" in out
    assert main(["predict", str(spec), "--checkpoint", ckpt, "--input", str(tmp_path / "x.npy"),
                 "--fetch", "pred", "--output", str(tmp_path / "y.npy")]) == 0
    assert np.load(tmp_path / "y.npy").shape == (3,)


def test_a_checkpoint_of_another_network_is_refused(spec, tmp_path, capsys):
    train(capsys, spec, "--out", tmp_path / "run")
    other = tmp_path / "other.net"
    other.write_text(TINY.replace("dense(16", "dense(8"))
    code = main(["eval", str(other), "--checkpoint", str(tmp_path / "run" / "last.ckpt")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines()[:3] == [
        (f"checkpoint error: {tmp_path / 'run' / 'last.ckpt'} is a checkpoint of another "
        "network ('tiny'); its parameters differ:"),
        "  shape: dense1/W is f32[2,8] here but f32[2,16] in the checkpoint",
        "  shape: dense1/b is f32[8] here but f32[16] in the checkpoint"]


def test_a_nan_loss_stops_with_the_step_and_the_op(tmp_path, capsys):
    path = tmp_path / "bad.net"
    path.write_text(TINY.replace("loss xent = mean(softmax_cross_entropy(logits, label))",
                                 "loss xent = mean(log(logits))"))
    code, _, err = train(capsys, path, "--out", tmp_path / "run")
    assert code == 1
    first = err.splitlines()[0]
    assert first.startswith(f"{path}:9:20: ") and (
        "non-finite value: the loss 'xent' became nan at step 0 (epoch 1); the first "
        "non-finite value: log (%") in first
    assert "in the forward pass: " in first


def test_no_train_section_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "plain.net"
    path.write_text(TINY.split("train tiny")[0])
    code, _, err = train(capsys, path)
    assert code == 1
    assert err.startswith("usage error: network 'tiny' has no train section")


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_refuse_a_batch_below_one(command, capsys):
    extra = ["--input", "x.npy"] if command == "predict" else []
    assert main([command, "tiny.net", "--checkpoint", "c.ckpt", "--batch", "0", *extra]) == 1
    assert capsys.readouterr().err == "usage error: --batch must be at least 1, got 0\n"


@pytest.mark.parametrize("flag", ["--limit", "--stop-after"])
def test_train_refuses_a_limit_or_stop_after_below_one(flag, capsys):
    assert main(["train", "tiny.net", flag, "-3"]) == 1
    assert capsys.readouterr().err == f"usage error: {flag} must be at least 1, got -3\n"


def test_predict_input_errors_name_the_file_plainly(spec, tmp_path, capsys):
    ckpt = str(tmp_path / "c.ckpt")
    netlang.compile(spec).session().save(ckpt)
    pickled, garbage = tmp_path / "x.npy", tmp_path / "g.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    garbage.write_bytes(b"garbage" * 10)
    hint = "\nhint: save the examples with numpy.save(path, array)"
    for path, reason in [(pickled, "it holds Python objects, not a plain array" + hint),
                         (garbage, "it is not a .npy file (no NumPy header)" + hint),
                         (tmp_path / "no.npy", "No such file or directory")]:
        assert main(["predict", str(spec), "--checkpoint", ckpt, "--input", str(path)]) == 1
        assert capsys.readouterr().err == f"usage error: --input: cannot read '{path}': {reason}\n"


def test_predict_output_is_written_to_exactly_the_named_file(spec, tmp_path, capsys):
    ckpt = str(tmp_path / "c.ckpt")
    netlang.compile(spec).session().save(ckpt)
    np.save(tmp_path / "x.npy", np.zeros((3, 2), np.float32))
    run = ["predict", str(spec), "--checkpoint", ckpt, "--input", str(tmp_path / "x.npy")]
    (tmp_path / "y.npy").write_bytes(b"keep me")
    assert main([*run, "--output", str(tmp_path / "y.npy")]) == 1
    assert capsys.readouterr().err == (
        f"usage error: --output '{tmp_path / 'y.npy'}': 2 outputs (probs, pred) go to one "
        ".npz file\nhint: name it .npz, or pick one with --fetch\n")
    assert (tmp_path / "y.npy").read_bytes() == b"keep me"
    assert main([*run, "--fetch", "pred", "--output", str(tmp_path / "y.txt")]) == 1
    assert capsys.readouterr().err == (
        f"usage error: --output '{tmp_path / 'y.txt'}': name the file .npy (or .npz)\n")
    assert main([*run, "--output", str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as saved:
        assert sorted(saved.files) == ["pred", "probs"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_unusable_run_folder_is_refused_before_the_data_is_loaded(spec, tmp_path, capsys,
                                                                      monkeypatch):
    import importlib

    train_command = importlib.import_module("netlang.train.fit")   # the module, not fit()

    def no_loading(*args, **kwargs):
        raise AssertionError("the data was loaded before the run folder was checked")

    monkeypatch.setattr(train_command, "load_dataset", no_loading)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, out, err = train(capsys, spec, "--out", blocker / "run")
    assert code == 1 and out == ""
    assert err == f"usage error: cannot use the run folder {blocker / 'run'}: Not a directory\n"


# -- fine-tuning: --init-from ----------------------------------------------------------------

def test_init_from_takes_the_variables_whose_names_match(spec, tmp_path, capsys):
    assert train(capsys, spec, "--out", tmp_path / "first", "--epochs", "1")[0] == 0
    first, _ = read(tmp_path / "first" / "last.ckpt")
    tuned = tmp_path / "tuned.net"
    tuned.write_text(TINY.replace("|> dense(4)", "|> dense(4, name=head)"))
    code, out, _ = train(capsys, tuned, "--out", tmp_path / "second", "--epochs", "1",
                         "--init-from", tmp_path / "first" / "last.ckpt", "--stop-after", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[:3] == [
        f"init from {tmp_path / 'first' / 'last.ckpt'}: took 2 of 4 variables",
        "  left at their initial values: head/W, head/b",
        ("  not taken from the checkpoint: 14 arrays (dense2/W, dense2/b, adam/beta1_power, "
         "adam/beta2_power, ...)")]
    start = json.loads((tmp_path / "second" / "log.jsonl").open().readline())
    assert start["init_from"] == str(tmp_path / "first" / "last.ckpt")
    # the first step starts from the checkpoint's dense1: one step of Adam moves it by ~lr
    second, _ = read(tmp_path / "second" / "last.ckpt")
    assert 0 < np.abs(second["dense1/W"] - first["dense1/W"]).max() < 0.2


def test_init_from_refuses_a_variable_of_another_shape_naming_both(spec, tmp_path, capsys):
    assert train(capsys, spec, "--out", tmp_path / "first", "--epochs", "1")[0] == 0
    wider = tmp_path / "wider.net"
    wider.write_text(TINY.replace("dense(16,", "dense(32,"))
    ckpt = tmp_path / "first" / "last.ckpt"
    code, _, err = train(capsys, wider, "--out", tmp_path / "second", "--init-from", ckpt)
    assert code == 1 and not (tmp_path / "second" / "last.ckpt").exists()
    assert err == (f"checkpoint error: --init-from {ckpt}: 'dense1/W' is f32[2,32] here, "
                   "f32[2,16] in the checkpoint; 'dense1/b' is f32[32] here, f32[16] in the "
                   "checkpoint; 'dense2/W' is f32[32,4] here, f32[16,4] in the checkpoint\n"
                   "hint: rename the layers that changed (name=) so they start fresh, or init "
                   "from a checkpoint of this network\n")


def test_init_from_and_resume_contradict_each_other(spec, tmp_path, capsys):
    code, _, err = train(capsys, spec, "--resume", "--init-from", tmp_path / "x.ckpt")
    assert code == 1 and err.startswith("usage error: --resume and --init-from contradict")
    code, _, err = train(capsys, spec, "--out", tmp_path / "r", "--init-from",
                         tmp_path / "missing.ckpt")
    assert code == 1 and err.startswith(f"checkpoint error: no checkpoint at "
                                        f"{tmp_path / 'missing.ckpt'}")


def test_keep_leaves_the_checkpoints_of_the_last_epochs(tmp_path, capsys):
    path = tmp_path / "keep.net"
    path.write_text(TINY.replace("  epochs 2\n", "  epochs 3\n  keep 2\n"))
    run = tmp_path / "run"
    assert train(capsys, path, "--out", run)[0] == 0
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["epoch-002.ckpt", "epoch-003.ckpt",
                                                          "last.ckpt"]
    assert (run / "epoch-003.ckpt").read_bytes() == (run / "last.ckpt").read_bytes()
    assert read(run / "epoch-002.ckpt")[1]["epoch"] == 2
    assert main(["eval", str(path), "--checkpoint", str(run / "epoch-002.ckpt")]) == 0
    assert "accuracy" in capsys.readouterr().out
    # a fresh run in the folder (--force) starts without the old epoch files
    assert train(capsys, path, "--out", run, "--force", "--stop-after", "1")[0] == 0
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["epoch-001.ckpt", "last.ckpt"]


def test_keep_must_be_a_positive_count(tmp_path, capsys):
    path = tmp_path / "keep.net"
    path.write_text(TINY.replace("  epochs 2\n", "  epochs 2\n  keep 0\n"))
    code, _, err = train(capsys, path, "--out", tmp_path / "run")
    assert code == 1 and err.splitlines()[0] == (
        f"{path}:18:8: argument error: keep must be a positive integer, got the integer 0")
