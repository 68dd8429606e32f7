"""netlang bench: the table it prints, its JSON, the clear error for a missing GPU, its
shipped specs; the package never imports torch, and tools/bench.py adds PyTorch's rows."""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import netlang
from netlang.cli import bench, build_parser, main
from netlang.passes.pipeline import OPTIMIZE
from netlang.runtime import backend

PACKAGE = Path(netlang.__file__).parent
REPO = Path(__file__).resolve().parents[2]


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


def test_inference_says_so_above_its_table(capsys):
    code = main(["bench", "--workloads", "spiral", "--batch", "8", "--steps", "2",
                 "--warmup", "1", "--no-torch", "--compile-runs", "0", "--inference"])
    assert code == 0
    assert "inference throughput on cpu (median of timed steps)" in capsys.readouterr().out


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
    assert "fusion" in [name for name, _ in OPTIMIZE]   # --no-fusion left the pipeline alone


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


def test_allocations_count_a_step_without_and_with_the_buffer_plan(capsys):
    """``--allocations``: kernel calls and arrays of a step unfused -> fused run kernel by
    kernel, and what a step as it runs allocates: with the buffer plan, no large array."""
    assert main(["bench", "--workloads", "spiral", "--batch", "4", "--steps", "1",
                 "--warmup", "0", "--no-torch", "--compile-runs", "0", "--allocations"]) == 0
    text = capsys.readouterr().out
    (line,) = [line for line in text.splitlines() if line.startswith("  spiral ")
               and "kernel calls" in line]
    found = re.fullmatch(r"  spiral       kernel calls (\d+) -> (\d+), arrays allocated (\d+) -> "
                         r"(\d+), peak \d+\.\d -> \d+\.\d MiB; planned (\d+\.\d) KiB", line)
    assert found, line
    calls_before, calls_after, arrays_before, arrays_after = map(int, found.groups()[:4])
    assert calls_after < calls_before and arrays_after < arrays_before
    assert float(found[5]) < 64


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
    (update,) = [line for line in text.splitlines() if "optimizer update" in line]
    assert re.fullmatch(
        r"  mnist_small batch 4: optimizer update \d+\.\d{3} ms per step \(first to last "
        r"update call, unprofiled\); one NumPy copy of the bytes a single-pass update moves "
        r"\d+\.\d{3} ms in the step \(where the update starts\), \d+\.\d{3} ms warm, "
        r"\d+\.\d{3} ms cold between steps \(update / floor \d+\.\d\dx in the step, "
        r"\d+\.\d\dx warm, \d+\.\d\dx cold\)", update)
    assert main(["bench", "--no-torch", "--profile", "-1"]) == 1
    assert capsys.readouterr().err == "usage error: --profile must be at least 0, got -1\n"


def test_the_timed_update_times_the_span_or_its_floor_in_the_step():
    """``update_spans``' steps time the update's span, or with a floor while ``copying`` the
    copy of the bytes the update moves (where the update starts); the update runs its
    trusted call either way, and the calls are put back after."""
    step, _, session, _ = bench.netlang_step(bench.SPECS / "mnist_small.net", 4, "cpu")
    for _ in range(2):
        step()
    program = bench.session_program(session)
    bound = next(iter(session.executor._bound[program].values()))
    [(index, run)] = [(i, run) for i, (_, run, _, _) in enumerate(bound.calls)
                      if hasattr(run, "tensors")]
    trusted_runs = run.trusted.runs
    spans = bench.update_spans(session, floor=True)
    assert bound.calls[index][1] is not run
    for copying in (False, True, False):
        spans.copying = copying
        for _ in range(2):
            step()
    assert run.trusted.runs == trusted_runs + 6
    assert len(spans) == 4 and len(spans.floors) == 2 and all(t > 0 for t in spans.floors)
    assert spans.src.size == bench.update_floor_elements(session) > 0
    spans.restore()
    assert bound.calls[index][1] is run


def test_rivals_are_timed_after_netlang_and_compared_in_the_table(tmp_path, capsys):
    """tools/bench.py's PyTorch rows come through ``run(args, rivals)``: each rival right
    after netlang on every workload and batch, a column each, netlang / the fastest."""
    seen = []

    def fake(system, samples_per_s):
        def time(name, spec, batch, args, ours):
            seen.append((name, batch, system, ours.system))
            if system == "slow" and name == "spiral":
                return None
            return bench.Result(name, batch, system, samples_per_s, 1e3 * batch / samples_per_s)
        return bench.Rival(system, time)

    args = build_parser().parse_args(
        ["bench", "--workloads", "spiral", "mnist_small", "--batch", "4", "8", "--steps", "1",
         "--warmup", "0", "--compile-runs", "0", "--json", str(tmp_path / "b.json")])
    assert bench.run(args, [fake("fast", 1e9), fake("slow", 1.0)], "two fakes") == 0
    assert seen == [(n, b, s, "netlang") for n in ("spiral", "mnist_small") for b in (4, 8)
                    for s in ("fast", "slow")]
    text = capsys.readouterr().out
    assert "; PyTorch: two fakes\n" in text
    assert "ratio: netlang / the fastest other system" in text
    assert re.search(r"\n  spiral +4 +[\d,]+ +1,000,000,000 +- +0\.00 ", text)
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["torch"] == "two fakes"
    assert [r["system"] for r in report["results"]] == (
        ["netlang", "fast"] * 2 + ["netlang", "fast", "slow"] * 2)


def test_rounds_take_the_systems_in_turn_and_report_each_ones_median(tmp_path, capsys):
    """``--rounds 3``: netlang, then each rival, three times over on each workload and
    batch; each system's row is its median round, and every round is printed."""
    speeds = iter([5.0, 500.0, 50.0])
    seen = []

    def time(name, spec, batch, args, ours):
        seen.append(ours.system)
        value = next(speeds)
        return bench.Result(name, batch, "rival", value, 1e3 * batch / value)
    args = build_parser().parse_args(
        ["bench", "--workloads", "spiral", "--batch", "4", "--steps", "1", "--warmup", "0",
         "--compile-runs", "0", "--rounds", "3", "--json", str(tmp_path / "b.json")])
    assert bench.run(args, [bench.Rival("rival", time)], "a fake") == 0
    assert seen == ["netlang"] * 3
    text = capsys.readouterr().out
    assert len(re.findall(r"\n  spiral batch 4: netlang [\d,]+/s .*, rival ", text)) == 3
    assert "(median of timed steps, the median of 3 rounds taken in turn; ratio:" in text
    assert re.search(r"\n  spiral +4 +[\d,]+ +50 ", text)
    report = json.loads((tmp_path / "b.json").read_text())
    assert [(r["system"], r["samples_per_s"]) for r in report["results"]][1] == ("rival", 50.0)
    assert main(["bench", "--no-torch", "--rounds", "0"]) == 1
    assert capsys.readouterr().err == "usage error: --rounds must be at least 1, got 0\n"


def test_the_specs_ship_inside_the_package():
    """The workloads load from netlang/specs (package data), not from a checkout's layout."""
    assert Path(bench.SPECS) == Path(netlang.__file__).parent / "specs"
    assert all((bench.SPECS / f"{name}.net").is_file() for name in bench.WORKLOADS)
    package_data = re.search(r"\[tool\.setuptools\.package-data\]\nnetlang = (.*)\n",
                             (REPO / "pyproject.toml").read_text())
    assert '"specs/*.net"' in package_data[1]


def test_specs_flag_names_another_folder(tmp_path, capsys):
    shutil.copy(bench.SPECS / "spiral.net", tmp_path / "tiny.net")
    assert main(["bench", "--specs", str(tmp_path), "--workloads", "tiny", "--batch", "4",
                 "--steps", "1", "--warmup", "0", "--compile-runs", "0"]) == 0
    assert "  tiny batch 4: netlang " in capsys.readouterr().out
    assert main(["bench", "--specs", str(tmp_path), "--workloads", "mnist"]) == 1
    assert capsys.readouterr().err == (
        f"usage error: bench: no spec {tmp_path / 'mnist.net'}\n"
        "hint: specs there: tiny; or --specs DIR\n")
    assert main(["bench", "--specs", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err == f"usage error: --specs: no folder '{tmp_path / 'none'}'\n"


def test_no_torch_is_the_only_behaviour_and_says_so(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "netlang bench never runs PyTorch" in " ".join(capsys.readouterr().out.split())


def torch_imports(path: Path):
    """Every way ``path`` imports torch: import statements and import_module("torch...")."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            names = [str(node.args[0].value)]
        else:
            continue
        yield from (n for n in names if n == "torch" or n.startswith("torch."))


def test_the_package_never_imports_torch():
    wrong = [f"{path.relative_to(PACKAGE)} imports {name}"
             for path in sorted(PACKAGE.rglob("*.py")) for name in torch_imports(path)]
    assert not wrong, "\n".join(wrong)
    assert list(torch_imports(REPO / "tools" / "torch_nets.py"))   # the walk does see them


def load_tools_bench(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))   # the script puts tools/ on sys.path
    spec = importlib.util.spec_from_file_location("tools_bench", REPO / "tools" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tools_bench_without_torch_is_netlang_bench(tmp_path, monkeypatch, capsys):
    tools_bench = load_tools_bench(monkeypatch)
    out = tmp_path / "b.json"
    assert tools_bench.main(["--workloads", "spiral", "--batch", "4", "--steps", "1",
                             "--warmup", "0", "--compile-runs", "0", "--no-torch",
                             "--json", str(out)]) == 0
    assert "; PyTorch: --no-torch\n" in capsys.readouterr().out
    assert [r["system"] for r in json.loads(out.read_text())["results"]] == ["netlang"]


def test_tools_bench_times_each_rival_next_to_netlang(tmp_path, monkeypatch, capsys):
    """Each installed rival (PyTorch in both layouts, JAX jit) runs in its own process after
    netlang on each workload and batch; channels_last only on image workloads."""
    pytest.importorskip("torch")
    has_jax = importlib.util.find_spec("jax") is not None
    tools_bench = load_tools_bench(monkeypatch)
    out = tmp_path / "b.json"
    assert tools_bench.main(["--workloads", "spiral", "residual", "--batch", "4",
                             "--steps", "1", "--warmup", "0", "--compile-runs", "0",
                             "--json", str(out)]) == 0
    assert re.search(r" pytorch/s +pytorch_channels_last/s +" + ("jax/s +" if has_jax else "")
                     + "ratio ", capsys.readouterr().out)
    rows = json.loads(out.read_text())["results"]
    jax = ["jax"] if has_jax else []
    assert [(r["workload"], r["system"]) for r in rows] == [
        *(("spiral", s) for s in ["netlang", "pytorch", *jax]),
        *(("residual", s) for s in ["netlang", "pytorch", "pytorch_channels_last", *jax])]
    # The torch.nn and JAX mirrors have exactly the specs' parameters.
    assert all(r["note"] == "" and r["params"] > 0 for r in rows), rows


def test_kernel_start_compiles_once_then_loads_from_the_cache_it_left(capsys):
    """``--kernel-start``: the first fresh process compiles every kernel into an empty cache,
    the second compiles none and loads each one the first compiled."""
    from netlang.cli.bench import SPECS, print_kernel_start

    report = print_kernel_start(SPECS / "spiral.net")
    cold, warm = report["cold"], report["warm"]
    assert cold["compiled"] > 0 and cold["cached"] == cold["ahead"] == 0
    assert warm["compiled"] == 0 and warm["cached"] == warm["ahead"] == cold["compiled"]
    out = capsys.readouterr().out
    assert "first ever (empty cache): set-up " in out and "warm cache: set-up " in out


def test_rss_vs_plan_prints_each_runs_growth_beside_its_arena_and_state():
    """tools/rss_vs_plan.py: one fresh process per workload and batch; the arena grows with
    the batch, and the rest is what the process grew by beyond the arena and the state."""
    done = subprocess.run([sys.executable, str(REPO / "tools" / "rss_vs_plan.py"),
                           "--workloads", "mnist_small", "--batch", "2", "16"],
                          capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert lines[:2] == [
        "MiB a CPU train step adds to a fresh process (peak) against the buffer plan",
        "  workload   batch    grew   arena   state    rest"]
    rows = [[float(x) for x in line.split()[1:]] for line in lines[2:]]
    assert [row[0] for row in rows] == [2, 16] and len(lines) == 4
    assert rows[0][2] < rows[1][2] and rows[0][3] == rows[1][3]
    for _, grew, arena, state, rest in rows:
        assert grew > 0 and abs(grew - arena - state - rest) <= 0.21   # rounded to 0.1
