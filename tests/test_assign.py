"""Variables updated by ``assign`` (seed 002's counter) and params from literal values."""
from __future__ import annotations

import numpy as np
import pytest

import netlang
from netlang.cli import main
from netlang.errors import ExecutionError

READS = """network reads {
  param x: f32[] = 1
  param I: f32[2,2] = [[1,0],[0,1]]
  param k: i32[3] = [1, 2, 3]
  new = assign(x, x * 2)
  output both = new + x       # x is read as it was when the run began
  output I
  output k
}"""

TWICE = """network twice {
  param x: i32[] = 1
  a = assign(x, x + 1)
  b = assign(x, x * 2)
  output s = a + b
}"""


def test_the_counter_prints_99_98_97(capsys):
    assert main(["run", "specs/counter.net", "--fetch", "dec", "--times", "3"]) == 0
    assert capsys.readouterr().out == "dec = 99\ndec = 98\ndec = 97\n"


def test_the_session_keeps_the_assigned_value_between_runs():
    session = netlang.compile("specs/counter.net").session()
    assert [int(session.run("dec")) for _ in range(3)] == [99, 98, 97]
    assert session.state["x"] == 97 and session.state["x"].dtype == np.int32


def test_a_run_that_does_not_fetch_the_assignment_leaves_the_variable():
    session = netlang.compile("specs/counter.net").session()
    session.run("dec")
    assert int(session.run("x")) == 99 and int(session.run("x")) == 99


def test_reads_in_the_run_that_assigns_see_the_old_value():
    session = netlang.compile(READS).session()
    assert float(session.run("both")) == 3.0      # 2 + 1
    assert float(session.run("both")) == 6.0      # 4 + 2
    assert float(session.run("x")) == 4.0


def test_params_take_literal_values_of_any_rank():
    model = netlang.compile(READS)
    session = model.session()
    np.testing.assert_array_equal(session.run("I"), np.eye(2, dtype=np.float32))
    assert session.run("k").tolist() == [1, 2, 3] and session.run("k").dtype == np.int32
    # an integer param is a variable but not trained (no gradient exists): state, not param
    assert [model.graph.nodes[model.graph.resolve(n)].op for n in ("I", "k")] == ["param",
                                                                                  "state"]


def test_a_variable_assigned_twice_in_one_run_is_refused():
    session = netlang.compile(TWICE, "twice.net").session()
    with pytest.raises(ExecutionError) as info:
        session.run("s")
    assert str(info.value).splitlines()[0] == (
        "twice.net:4:7: execution error: 'x' is assigned again at twice.net:3:7 in the same run")
    assert int(session.run("a")) == 2      # one assignment per run is fine


def test_times_must_be_positive(capsys):
    assert main(["run", "specs/counter.net", "--fetch", "dec", "--times", "0"]) == 1
    assert capsys.readouterr().err == "usage error: --times must be at least 1, got 0\n"


def test_ir_shows_the_assignment(capsys):
    assert main(["ir", "specs/counter.net"]) == 0
    out = capsys.readouterr().out
    assert "%x: i32[] = state() {init=(value,100)}" in out
    assert "= assign(%x, " in out and "{variable=x}" in out
