"""netlang run on values that are not finite: an error naming the fetched value and the op
the user wrote (inside a fused group too), no NumPy warning, ``--allow-nonfinite`` to print
them anyway (issue 14 item 17)."""
from __future__ import annotations

import pytest

from netlang.cli import main

SPEC = """network nanny {
  input x: f32[3]
  a = x * 2
  b = log(a)
  c = b + 1
  output y = exp(c)
  output r = sqrt(x)
}
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "nanny.net"
    path.write_text(SPEC)
    return str(path)


def test_a_nan_inside_a_fused_group_names_the_op_and_its_own_line(spec, capsys):
    """y = exp(log(x * 2) + 1) runs as one fused group (its line is y's); the error points
    at log's line, names the fetched value and the step, and no RuntimeWarning leaks."""
    assert main(["run", spec, "--fetch", "y", "--feed", "x=[1,-1,0]"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"{spec}:4:7: non-finite value: 'y' is not finite (1 nan of 3 values); the first "
        "non-finite value: log (step 2 of 4 in the fused group %3: f32[3]), in the forward "
        "pass: 1 nan, 1 -inf of 3 values\n"
        "      b = log(a)\n"
        "          ^^^^^^\n"
        "hint: keep log/div/sqrt away from zero (for example log(x + 1e-7)), or pass "
        "--allow-nonfinite to print the values anyway\n")


def test_allow_nonfinite_prints_the_values_without_a_warning(spec, capsys):
    assert main(["run", spec, "--fetch", "y", "--fetch", "r", "--feed", "x=[1,-1,0]",
                 "--allow-nonfinite"]) == 0
    out, err = capsys.readouterr()
    assert out == ("y = [5.436564,      nan, 0.      ]\n"
                   "r = [ 1., nan,  0.]\n")
    assert err == ""


def test_an_unfused_op_several_values_and_a_fed_nan_are_named(spec, capsys):
    """3 cases: sqrt alone; y and r both bad (the group's log comes first); a fed NaN."""
    assert main(["run", spec, "--fetch", "r", "--feed", "x=[4,-1,1]"]) == 1
    assert capsys.readouterr().err == (
        f"{spec}:7:14: non-finite value: 'r' is not finite (1 nan of 3 values); the first "
        "non-finite value: sqrt (%1: f32[3]), in the forward pass: 1 nan of 3 values\n"
        "      output r = sqrt(x)\n"
        "                 ^^^^^^^\n"
        "hint: keep log/div/sqrt away from zero (for example log(x + 1e-7)), or pass "
        "--allow-nonfinite to print the values anyway\n")
    assert main(["run", spec, "--fetch", "y", "--fetch", "r", "--feed", "x=[4,-1,1]"]) == 1
    assert capsys.readouterr().err.startswith(
        f"{spec}:4:7: non-finite value: 'y' (1 nan of 3 values), 'r' (1 nan of 3 values) "
        "are not finite; the first non-finite value: log (step 2 of 4 in the fused group "
        "%3: f32[3]), in the forward pass: 1 nan of 3 values\n"
        "      b = log(a)\n")
    assert main(["run", spec, "--fetch", "r", "--feed", "x=[4,NaN,0]"]) == 1
    assert capsys.readouterr().err == (
        f"{spec}:2:3: non-finite value: 'r' is not finite (1 nan of 3 values); the first "
        "non-finite value: input 'x' was fed non-finite values: 1 nan of 3 values\n"
        "      input x: f32[3]\n"
        "      ^^^^^^^^^^^^^^^\n"
        "hint: pass --allow-nonfinite to print the values anyway\n")


def test_finite_values_print_as_before(spec, capsys):
    assert main(["run", spec, "--fetch", "y", "--fetch", "r", "--feed", "x=[0.5,1,4]"]) == 0
    out, err = capsys.readouterr()
    assert out == ("y = [ 2.718282,  5.436564, 21.746256]\n"
                   "r = [0.70710677, 1.        , 2.        ]\n")
    assert err == ""
