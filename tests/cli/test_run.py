"""netlang run and netlang gradcheck, as a user calls them."""
from __future__ import annotations

import numpy as np

from netlang.cli import main


def test_calc_gradient_at_pi(capsys, tmp_path):
    # x = 3.14159 gives 2x + cos(x) = 5.28318 (the f32 result, printed with every digit it
    # has); fed exactly pi it is the seed's 5.2831855.
    assert main(["run", "specs/calc.net", "--fetch", "g", "--feed", "x=3.14159"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("g = 5.28318") and abs(float(out[4:]) - 5.2831855) < 1e-5
    np.save(tmp_path / "pi.npy", np.float32(np.pi))
    assert main(["run", "specs/calc.net", "--fetch", "g", "--feed", f"x={tmp_path}/pi.npy"]) == 0
    assert capsys.readouterr().out == "g = 5.2831855\n"


def test_feed_from_npy_and_list(tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.float32(0.0))
    assert main(["run", "specs/calc.net", "--fetch", "g", "--fetch", "y",
                 "--feed", f"x={path}"]) == 0
    assert capsys.readouterr().out == "g = 1.\ny = 0.\n"


def test_missing_feed_names_the_input(capsys):
    assert main(["run", "specs/calc.net", "--fetch", "g"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("specs/calc.net:4:3: feed error: fetching 'g' needs the input 'x', "
                          "which was not fed")
    assert "Traceback" not in err


def test_bad_feed_value_is_a_usage_error(capsys):
    assert main(["run", "specs/calc.net", "--fetch", "g", "--feed", "x=abc"]) == 1
    assert capsys.readouterr().err == (
        "usage error: --feed x: 'abc' is not a number, a list or a .npy file\n"
        "hint: e.g. --feed x=3.14 or --feed x=[1,2,3]\n")


def test_gradcheck_mnist_small_passes(capsys):
    assert main(["gradcheck", "specs/mnist_small.net", "--per-param", "3"]) == 0
    out = capsys.readouterr().out
    assert "conv1/W" in out and "dense1/b" in out
    assert out.rstrip().endswith("parameters within 0.0001")


def test_a_name_fed_twice_is_refused(capsys):
    assert main(["run", "specs/calc.net", "--fetch", "g", "--feed", "x=1", "--feed", "x=2"]) == 1
    assert capsys.readouterr().err == ("usage error: --feed x is given twice\n"
                                       "hint: feed each name once\n")


def test_a_learning_rate_that_is_not_a_positive_number_is_refused(capsys):
    assert main(["train", "specs/spiral.net", "--lr", "nan"]) == 1
    assert capsys.readouterr().err == "usage error: --lr must be a positive number, got nan\n"


def test_an_unreadable_npy_feed_says_why_once(tmp_path, capsys):
    missing = tmp_path / "missing.npy"
    assert main(["run", "specs/calc.net", "--fetch", "g", "--feed", f"x={missing}"]) == 1
    assert capsys.readouterr().err == (
        f"usage error: --feed x: cannot read '{missing}': No such file or directory\n")
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["run", "specs/calc.net", "--fetch", "g", "--feed", f"x={pickled}"]) == 1
    assert capsys.readouterr().err == (
        f"usage error: --feed x: cannot read '{pickled}': it holds Python objects, not a "
        "plain array\nhint: save it with numpy.save(path, array)\n")
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy at all")
    assert main(["run", "specs/calc.net", "--fetch", "g", "--feed", f"x={garbage}"]) == 1
    assert capsys.readouterr().err == (
        f"usage error: --feed x: cannot read '{garbage}': it is not a .npy file (no NumPy "
        "header)\nhint: save it with numpy.save(path, array)\n")
