"""Bad files named on the command line get one line naming the file, never a traceback
(issue 14, item 12); predict on no examples keeps the outputs' dtype and shape (item 13);
an npz regression target trains as values (item 6)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

import netlang
from netlang.cli import main
from netlang.train import runs
from tests.cli.test_train import TINY, train

INPUT_HINT = "hint: save the examples with numpy.save(path, array)"


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.net"
    path.write_text(TINY)
    return path


@pytest.fixture
def ckpt(spec, tmp_path):
    path = tmp_path / "c.ckpt"
    netlang.compile(spec).session().save(path)
    return path


def test_eval_of_a_file_that_is_not_a_checkpoint_names_it(spec, tmp_path, capsys):
    """4 cases: a .npy array, an .npz without a header, a zip flagged as encrypted, a zip
    whose member claims an unknown compression method."""
    npy, bare = tmp_path / "x.npy", tmp_path / "bare.npz"
    np.save(npy, np.zeros(3))
    np.savez(bare, a=np.zeros(3))
    good = netlang.compile(spec).session().save(tmp_path / "good.ckpt").read_bytes()
    central = good.index(b"PK\x01\x02")
    encrypted, method = tmp_path / "encrypted.ckpt", tmp_path / "method.ckpt"
    encrypted.write_bytes(good[:central + 8] + b"\x01\x00" + good[central + 10:])
    method.write_bytes(good[:central + 10] + b"\x63\x00" + good[central + 12:])
    damaged = "\nhint: the file is truncated or corrupt; use an earlier copy\n"
    cases = [
        (npy, ("is not a netlang checkpoint (it is a .npy array)\nhint: pass the last.ckpt "
              "file a training run wrote\n")),
        (bare, "is not a netlang checkpoint (no 'netlang-checkpoint-1' header)\n"),
        (encrypted, "is not a readable netlang checkpoint (File '__meta__.npy' is encrypted, "
                    "password required for extraction)" + damaged),
        (method, "is not a readable netlang checkpoint (That compression method is not "
                 "supported)" + damaged),
    ]
    for path, reason in cases:
        assert main(["eval", str(spec), "--checkpoint", str(path)]) == 1
        assert capsys.readouterr().err == f"checkpoint error: {path} {reason}"


def test_predict_input_that_is_not_one_array_of_numbers_is_named(spec, ckpt, tmp_path,
                                                                 capsys):
    """6 cases: an .npz archive, text, structured records, complex, datetime, bytes."""
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.zeros((2, 2)))
    cases = [(npz, "cannot read '{}': it is an .npz archive, not a .npy file\n" + INPUT_HINT)]
    arrays = {"text": (np.array([["a", "b"]]), "text values (<U1)"),
              "records": (np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]),
                          "structured values ([('a', '<f4'), ('b', '<i4')])"),
              "complex": (np.zeros((2, 2), np.complex128), "complex values (complex128)"),
              "dates": (np.array(["2024-01-01"] * 2, "datetime64[D]"),
                        "datetime values (datetime64[D])"),
              "bytes": (np.array([[b"a", b"b"]]), "bytes values (|S1)")}
    for name, (value, what) in arrays.items():
        np.save(tmp_path / f"{name}.npy", value)
        cases.append((tmp_path / f"{name}.npy",
                      f"cannot use '{{}}': it holds {what}, not real numbers"))
    for path, reason in cases:
        assert main(["predict", str(spec), "--checkpoint", str(ckpt), "--input",
                     str(path)]) == 1
        assert capsys.readouterr().err == f"usage error: --input: {reason.format(path)}\n"


def test_run_feed_of_complex_values_is_named(spec, tmp_path, capsys):
    np.save(tmp_path / "c.npy", np.zeros((1, 2), np.complex64))
    assert main(["run", str(spec), "--fetch", "probs", "--feed",
                 f"x={tmp_path / 'c.npy'}"]) == 1
    assert capsys.readouterr().err == (
        f"usage error: --feed x: cannot use '{tmp_path / 'c.npy'}': it holds complex values "
        "(complex64), not real numbers\n")


def test_a_full_disk_at_the_first_log_append_is_one_line(spec, tmp_path, capsys,
                                                         monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs, "open", full, raising=False)
    code, _, err = train(capsys, spec, "--out", tmp_path / "run")
    assert code == 1
    assert err == (f"write error: cannot append to {tmp_path / 'run' / 'log.jsonl'}: No space "
                   "left on device\n")


def test_npz_data_that_is_not_an_npz_archive_is_one_line(tmp_path, capsys):
    """3 cases: a .npy file, an encrypted-flagged zip, an archive of text."""
    data = tmp_path / "d.npz"
    spec = tmp_path / "reg.net"
    spec.write_text(REGRESSION.replace("DATA", str(data)))
    np.savez(data, x=np.zeros((4, 1), np.float32), y=np.zeros((4, 1), np.float32))
    good = data.read_bytes()
    central = good.index(b"PK\x01\x02")
    cases = [
        (lambda: data.write_bytes(npy_bytes(np.zeros(3))),
         (f"data error: {data}: not an .npz archive\nhint: save the arrays with "
         "numpy.savez(path, x=..., y=...)\n")),
        (lambda: data.write_bytes(good[:central + 8] + b"\x01\x00" + good[central + 10:]),
         (f"data error: {data}: cannot read the arrays (File 'x.npy' is encrypted, password "
         "required for extraction)\n")),
        (lambda: np.savez(data, x=np.array([["a"]] * 4), y=np.zeros((4, 1))),
         f"data error: {data}: array 'x' holds <U1 values, not real numbers\n"),
    ]
    for damage, message in cases:
        damage()
        code, _, err = train(capsys, spec, "--out", tmp_path / "run", "--force")
        assert (code, err) == (1, message)


def npy_bytes(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value)
    return buffer.getvalue()


# -- item 13 --------------------------------------------------------------------------------

def test_predict_on_no_examples_keeps_dtype_and_shape(spec, ckpt, tmp_path, capsys):
    """2 cases: printed, and saved to .npz."""
    np.save(tmp_path / "x.npy", np.zeros((0, 2), np.float32))
    argv = ["predict", str(spec), "--checkpoint", str(ckpt), "--input", str(tmp_path / "x.npy")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("probs (float32[0, 4]):\n") and "pred (int64[0]):" in out
    assert main([*argv, "--output", str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as saved:
        assert (saved["probs"].dtype, saved["probs"].shape) == (np.float32, (0, 4))


# -- item 6 ---------------------------------------------------------------------------------

REGRESSION = """\
network reg {
  input x: f32[N, 1]
  input y: f32[N, 1]
  output pred = dense(x, 1)
  loss err = mean(square(pred - y))
}
train reg { data npz("DATA"); optimizer sgd(lr=0.1); batch 16; epochs 30; seed 0 }
"""


def test_an_npz_regression_target_is_learned_as_values(tmp_path, capsys):
    x = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
    np.savez(tmp_path / "d.npz", x=x, y=3 * x - 2)
    spec = tmp_path / "reg.net"
    spec.write_text(REGRESSION.replace("DATA", str(tmp_path / "d.npz")))
    assert train(capsys, spec, "--out", tmp_path / "run")[0] == 0
    last = [json.loads(r) for r in (tmp_path / "run" / "log.jsonl").open()][-1]
    assert last["train_err"] < 1e-3
    np.save(tmp_path / "q.npy", np.array([[0.5]], np.float32))
    assert main(["predict", str(spec), "--checkpoint", str(tmp_path / "run" / "last.ckpt"),
                 "--input", str(tmp_path / "q.npy"), "--output", str(tmp_path / "p.npy")]) == 0
    assert abs(float(np.load(tmp_path / "p.npy")[0, 0]) - (-0.5)) < 0.05
