"""check and summary warn when a parameter or a layer's output cannot fit in memory
(issue 14, item 10)."""
from __future__ import annotations

import pytest

import netlang.cli.check
import netlang.cli.summary
from netlang.cli import main
from netlang.frontend import load_spec
from netlang.frontend.summary import available_memory, format_bytes, memory_warnings

GIB = 2**30
SPEC = """\
network n {
  input x: f32[N, 4]
  h = dense(x, 1000000000)
  output y = h
}
train n { batch 64 }
"""


def test_a_parameter_larger_than_memory_is_a_warning():
    graph = load_spec(SPEC, "big.net")
    warnings = memory_warnings(graph, 1, 8 * GIB)
    assert [str(w) for w in warnings] == ["""\
big.net:3:7: warning: parameter 'dense1/W' (f32[4,1000000000]) needs 14.9 GiB, more than the \
8 GiB of memory available
      h = dense(x, 1000000000)
          ^^^^^^^^^^^^^^^^^^^^
hint: check the layer sizes; running or training this spec will fail"""]


@pytest.mark.parametrize("batch, available, warned", [
    (1, 64 * GIB, False), (16, 64 * GIB, False), (32, 64 * GIB, True), (64, 64 * GIB, True), (1, None, False)])
def test_an_activation_larger_than_memory_is_a_warning_at_the_batch(batch, available, warned):
    """5 cases: the output of dense1 is 3.73 GiB per example."""
    graph = load_spec(SPEC, "big.net")
    warnings = memory_warnings(graph, batch, available)
    assert len(warnings) == warned
    if warned:
        assert warnings[0].message == (
            f"the output of dense1 (f32[N,1000000000]) needs {format_bytes(4e9 * batch)} at batch "
            f"{batch}, more than the 64 GiB of memory available")


def test_small_specs_get_no_memory_warning():
    graph = load_spec(SPEC.replace("1000000000", "10"), "small.net")
    assert memory_warnings(graph, 64, available_memory()) == []


@pytest.mark.parametrize("command", [["check"], ["summary", "--batch", "64"]])
def test_check_and_summary_print_the_warnings(command, tmp_path, capsys, monkeypatch):
    """2 cases: at the train section's batch (check) or --batch (summary); exit status 0."""
    spec = tmp_path / "big.net"
    spec.write_text(SPEC)
    for module in (netlang.cli.check, netlang.cli.summary):
        monkeypatch.setattr(module, "available_memory", lambda: 64 * GIB)
    assert main([*command, str(spec)]) == 0
    err = capsys.readouterr().err
    assert "warning: the output of dense1 (f32[N,1000000000]) needs 238 GiB at batch 64" in err
