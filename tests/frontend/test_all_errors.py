"""``check`` reports every independent error of a spec, each error inside a block names the
block's use, and a value that reaches no output is a warning (issue 14, item 18)."""
from __future__ import annotations

import pytest

from netlang.cli import main
from netlang.errors import ShapeError, SpecError, SpecNameError, SpecWarning
from netlang.frontend import load_spec
from netlang.frontend.diagnostics import MAX_ERRORS, SpecErrors

THREE_ERRORS = """\
network n {
  input x: f32[N, 4]
  a = relu(x) + reshape(x, (3, 5))
  b = a * 2
  c = dense(x, 3) |> softmax
  d = conv2d(c, 4, kernel=3)
  output y = c
  output y = d
  loss = mean(c)
}
"""


def test_every_independent_error_is_reported_in_source_order():
    with pytest.raises(SpecErrors) as info:
        load_spec(THREE_ERRORS, "t.net")
    assert [type(e) for e in info.value.errors] == [ShapeError, ShapeError, SpecNameError]
    assert str(info.value) == """\
t.net:3:17: shape error: reshape: cannot reshape f32[N,4] (4*N elements) into (3, 5) (15 elements)
      a = relu(x) + reshape(x, (3, 5))
                    ^^^^^^^^^^^^^^^^^^
hint: keep the batch dim with -1, e.g. shape=(-1, 5)

t.net:6:7: shape error: conv2d expects a 4-D input [N,H,W,C], got f32[N,3]
      d = conv2d(c, 4, kernel=3)
          ^^^^^^^^^^^^^^^^^^^^^^
hint: reshape to [N, H, W, C] first (NHWC)

t.net:8:10: name error: 'y' is already defined (line 7)
      output y = d
             ^
hint: names are single-assignment: give the new value another name

3 errors"""
    # the first error is the one a caller that looks at one error sees
    assert info.value.span.line == 3 and info.value.kind == "shape error"


def test_a_name_whose_definition_failed_causes_no_further_errors():
    """``b = a * 2``, ``output y = d`` (d broken) and the loss report nothing of their own."""
    text = THREE_ERRORS.replace("  output y = d\n", "  output z = d + b\n")
    with pytest.raises(SpecErrors) as info:
        load_spec(text, "t.net")
    assert [e.span.line for e in info.value.errors] == [3, 6]


def test_one_error_is_raised_as_itself():
    with pytest.raises(ShapeError) as info:
        load_spec("network n {\n input x: f32[N, 4]\n output y = reshape(x, (3, 5))\n}\n",
                  "t.net")
    assert not isinstance(info.value, SpecErrors)


@pytest.mark.parametrize("count", [2, MAX_ERRORS - 1, MAX_ERRORS, MAX_ERRORS + 5])
def test_errors_are_reported_up_to_the_limit(count):
    """4 cases: 2, 19, 20 and 25 independent errors."""
    lines = [f"  v{i} = reshape(x, (3, {i + 5}))" for i in range(count)]
    text = "network n {\n  input x: f32[N, 4]\n" + "\n".join(lines) + "\n  output y = x\n}\n"
    with pytest.raises(SpecErrors) as info:
        load_spec(text, "t.net")
    shown = min(count, MAX_ERRORS)
    assert [e.span.line for e in info.value.errors] == list(range(3, 3 + shown))
    tail = str(info.value).splitlines()[-1]
    assert tail == (f"stopped after the first {MAX_ERRORS} errors" if count >= MAX_ERRORS
                    else f"{count} errors")


def test_the_train_section_is_checked_too():
    text = THREE_ERRORS.replace("  output y = d\n", "") + "train n {\n  batch 0\n}\n"
    with pytest.raises(SpecErrors) as info:
        load_spec(text, "t.net")
    assert [(e.kind, e.span.line) for e in info.value.errors] == [
        ("shape error", 3), ("shape error", 6), ("argument error", 11)]


NESTED = """\
block inner(v) {
  return v + unknown_thing
}
block outer(v) {
  w = inner(v)
  return relu(w)
}
network n {
  input x: f32[N, 4]
  h = outer(x)
  output y = h
}
"""


def test_an_error_inside_nested_blocks_names_every_use():
    with pytest.raises(SpecNameError) as info:
        load_spec(NESTED, "t.net")
    assert str(info.value) == """\
t.net:2:14: name error: unknown name 'unknown_thing'
      return v + unknown_thing
                 ^^^^^^^^^^^^^
hint: in block 'inner', used at t.net:5:7 as outer1/inner1; in block 'outer', used at \
t.net:10:7 as outer1"""


def test_an_error_in_a_block_used_twice_is_reported_once_per_use():
    text = NESTED.replace("  output y = h\n", "  h2 = outer(x)\n  output y = h\n")
    with pytest.raises(SpecErrors) as info:
        load_spec(text, "t.net")
    assert [e.hint.rsplit(" as ", 1)[1] for e in info.value.errors] == ["outer1", "outer2"]


UNREACHED = """\
network n {
  input x: f32[N, 4]
  h = dense(x, 8)
  spare = tanh(h) * 2
  g = h |> batchnorm |> relu
  output y = g
  metric m = mean(h)
}
"""


def test_a_value_that_reaches_no_output_is_a_warning():
    graph = load_spec(UNREACHED, "w.net")
    assert [type(w) for w in graph.spec.warnings] == [SpecWarning]
    assert str(graph.spec.warnings[0]) == """\
w.net:4:3: warning: 'spare' is computed but reaches no output, loss or metric
      spare = tanh(h) * 2
      ^^^^^
hint: remove it, or use it in an output, the loss or a metric"""


@pytest.mark.parametrize("use", ["output z = spare", "loss = mean(spare)",
                                 "metric s = mean(spare)", "output spare"])
def test_outputs_losses_and_metrics_reach_their_values(use):
    """4 cases: each way to use a value silences the warning."""
    graph = load_spec(UNREACHED.replace("}\n", f"  {use}\n}}\n"), "w.net")
    assert graph.spec.warnings == []


def test_check_prints_every_error_and_fails(tmp_path, capsys):
    spec = tmp_path / "bad.net"
    spec.write_text(THREE_ERRORS)
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert err.count("error: ") == 3 and err.rstrip().endswith("3 errors")


def test_spec_errors_is_a_spec_error():
    assert issubclass(SpecErrors, SpecError)
