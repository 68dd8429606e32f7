"""netlang explain: every pass with what it changed, and the memory plan's two peaks."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from netlang.cli import main

MNIST = str(Path(__file__).resolve().parents[2] / "specs" / "mnist.net")


def explain(capsys, *args) -> tuple[int, str, str]:
    code = main(["explain", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows(text: str) -> dict[str, str]:
    """Pass name -> its table row."""
    return {line.split()[0]: line for line in text.splitlines()[2:]
            if line.startswith("  ") and not line.startswith("      ")}


def peaks(text: str) -> tuple[int, int]:
    found = re.search(r"at batch \d+: ([\d,]+) B .*? with the plan .*?, ([\d,]+) B", text)
    with_plan, without = found.groups()
    return int(with_plan.replace(",", "")), int(without.replace(",", ""))


def test_mnist_train_step(capsys):
    code, out, _ = explain(capsys, MNIST, "--train", "--batch", "64")
    assert code == 0
    assert out.splitlines()[0] == "explain mnist (training, batch 64)"
    table = rows(out)
    assert list(table)[:5] == ["lowered", "autodiff", "gradients", "optimizer", "bind_mode"]
    assert ["fold", "simplify", "cse", "dce"] == [p for p in table if p in (
        "fold", "simplify", "cse", "dce")]
    # Adam builds 1-beta1, 1-beta2 and epsilon once per parameter: CSE keeps one of each.
    assert re.search(r"merged (\d+) nodes", table["cse"]).group(1) == "21"
    assert "const 0.1 [adam]" in out and "<- 7 copies" in out
    # A training step fetches the loss and metrics: probs is never computed.
    assert "removed softmax 'probs'" in out
    with_plan, without = peaks(out)
    assert 0 < with_plan < without / 2


def test_the_arena_line_counts_what_no_kernel_stores(capsys):
    """mnist's two maxpool gradients are computed inside the relu gradients' loops
    (runtime/pool_gradients.py): neither in the arena nor allocated by a kernel."""
    code, out, _ = explain(capsys, MNIST, "--train", "--batch", "64")
    arena = next(line for line in out.splitlines() if line.strip().startswith("arena:"))
    assert code == 0 and arena.endswith(
        "of them alive at once); kernels allocate the other 11; variables updated in place: "
        "24; stored nowhere (computed inside another kernel's loop): 2")


def test_mnist_eval_program_drops_dropout(capsys):
    code, out, _ = explain(capsys, MNIST, "--batch", "8")
    assert code == 0 and "(eval, batch 8)" in out
    assert "select 'h' [dropout1] @mnist.net:11:42 -> branch b" in out
    with_plan, without = peaks(out)
    assert with_plan < without


def test_bad_arguments_are_errors_not_tracebacks(capsys, tmp_path):
    code, _, err = explain(capsys, MNIST, "--batch", "0")
    assert code == 1 and err == "usage error: --batch must be at least 1, got 0\n"
    code, _, err = explain(capsys, str(tmp_path / "none.net"))
    assert code == 1 and err.startswith("usage error: cannot read spec")


def test_a_command_that_binds_kernels_sizes_the_thread_pools_itself():
    """In a fresh process, explain (which binds the step's kernels) sizes the pools as the
    commands that run kernels do, so the Python API's note about it never shows."""
    done = subprocess.run([sys.executable, "-m", "netlang", "explain", MNIST],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "thread pools" not in done.stderr
