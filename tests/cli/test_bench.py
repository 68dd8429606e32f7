"""netlang bench: the table it prints, its JSON, and the clear error for a missing GPU."""
from __future__ import annotations

import json
import sys

from netlang.cli import main
from netlang.runtime import backend


def test_bench_prints_throughput_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--workloads", "spiral", "--batch", "8", "--steps", "2",
                 "--warmup", "1", "--no-torch", "--compile-runs", "1", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "training throughput on cpu (median of timed steps)" in text
    assert "compile time of specs/mnist.net's train step (median of 1)" in text
    report = json.loads(out.read_text())
    (result,) = report["results"]
    assert (result["workload"], result["batch"], result["system"]) == ("spiral", 8, "netlang")
    assert result["samples_per_s"] > 0 and result["kernel_calls"] > 0
    assert set(report["compile_s"]) == {"parse+shapes+prepare", "autodiff+optimizer",
                                        "optimize+plan", "total"}


def test_fusion_cuts_the_kernels_of_a_training_step(tmp_path):
    calls = {}
    for flag in ([], ["--no-fusion"]):
        out = tmp_path / f"bench{len(flag)}.json"
        assert main(["bench", "--workloads", "spiral", "--batch", "4", "--steps", "1",
                     "--warmup", "0", "--no-torch", "--compile-runs", "0", "--json", str(out),
                     *flag]) == 0
        (result,) = json.loads(out.read_text())["results"]
        calls[bool(flag)] = result["kernel_calls"]
    # Adam on 6 parameters: each update chain of ~12 ops becomes 3 fused kernels.
    assert calls[False] < calls[True] / 2


def test_bench_on_a_missing_gpu_is_one_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(backend, "_GPU", [])
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert main(["bench", "--device", "gpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("device error: --device gpu needs CuPy, which is not installed\n")
    assert "Traceback" not in err


def test_bench_refuses_settings_that_give_no_number(tmp_path, capsys):
    assert main(["bench", "--no-torch", "--steps", "0"]) == 1
    assert capsys.readouterr().err == "usage error: --steps must be at least 1, got 0\n"
    assert main(["bench", "--no-torch", "--batch", "8", "0"]) == 1
    assert capsys.readouterr().err == "usage error: --batch must be at least 1, got 0\n"
    out = tmp_path / "no" / "b.json"
    assert main(["bench", "--no-torch", "--json", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"usage error: --json: cannot write '{out}': no folder '{out.parent}'\n")


def test_bench_profile_names_the_heaviest_kernels(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--workloads", "mnist_small", "--batch", "4", "--steps", "2",
                 "--warmup", "0", "--no-torch", "--compile-runs", "0", "--profile", "3",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "  mnist_small batch 4: kernels take " in text and "the heaviest 3:" in text
    (result,) = json.loads(out.read_text())["results"]
    labels = [row[0] for row in result["profile"]]
    assert len(labels) == 3 and all(f"    {label} " in text for label in labels)
    assert main(["bench", "--no-torch", "--profile", "-1"]) == 1
    assert capsys.readouterr().err == "usage error: --profile must be at least 0, got -1\n"
