"""The layering rule of STYLE.md, checked on the source: a module imports only leftwards.

errors <- ir <- ops <- frontend, passes, runtime <- compiler <- model <- train, gradcheck,
exchange <- viz <- cli.  ``runtime`` runs a prepared graph: it never imports ``frontend`` or
``passes`` (they sit on one level, so neither may import the other); ``compiler`` is the one
module that chains them.  One place knows each outside thing (networkx, lark, graphviz,
cupy, oneDNN, onnx); networkx is for the buffer plan's interference coloring (runtime/memory.py)
when it comes.
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "netlang"

LAYER = {"errors": 0, "ir": 1, "ops": 2, "frontend": 3, "passes": 3, "runtime": 3,
         "compiler": 4, "model": 5, "gradcheck": 6, "train": 6, "exchange": 6, "viz": 7, "cli": 8,
         "bench": 8, "__init__": 8, "__main__": 9}

OUTSIDE = {"networkx": {"runtime/memory.py"}, "lark": None, "graphviz": None, "cupy": {
    "runtime/backend.py"}, "cupyx": {"runtime/backend.py"}, "numba": {"runtime/jit.py"},
    "ml_dtypes": {"ir/types.py"}, "onnx": {"exchange/onnx_lib.py"},
    "onnxruntime": {"exchange/onnx_lib.py"}, "mpi4py": {"train/mpi.py"},
    "cudnn": {"runtime/backend.py"}}


# The Python API's conveniences reach up, each by one import inside the method that needs it
# (so importing the model never loads them): model.fit trains as netlang train does, and a
# model shows as its diagram in a notebook.  Nothing else may.
LAZY_UPWARD = {("model.py", "netlang.train.fit"), ("model.py", "netlang.viz")}


def part_of(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def imports(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            if node.module == "netlang":     # from netlang import viz
                yield from (f"netlang.{alias.name}" for alias in node.names)


def top_level_imports(path: pathlib.Path) -> set[str]:
    body = ast.parse(path.read_text()).body
    return {name for stmt in body if isinstance(stmt, (ast.Import, ast.ImportFrom))
            for name in imports_of(stmt)}


def imports_of(node) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module] if node.module else []


def sources():
    return sorted(p for p in ROOT.rglob("*.py"))


def test_modules_import_only_leftwards():
    wrong = []
    for path in sources():
        mine = part_of(path)
        for name in imports(path):
            parts = name.split(".")
            if parts[0] != "netlang" or len(parts) == 1:
                continue
            theirs = parts[1]
            if theirs == mine:
                continue
            rel = str(path.relative_to(ROOT))
            if (rel, name) in LAZY_UPWARD and name not in top_level_imports(path):
                continue
            if LAYER.get(theirs, 99) >= LAYER.get(mine, 0):
                wrong.append(f"{rel} imports {name}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_one_module_knows_each_outside_library():
    where: dict[str, set[str]] = {k: set() for k in OUTSIDE}
    for path in sources():
        rel = str(path.relative_to(ROOT))
        for name in imports(path):
            top = name.split(".")[0]
            if top in where:
                where[top].add(rel)
    assert where["networkx"] <= OUTSIDE["networkx"], where["networkx"]
    assert where["cupy"] <= OUTSIDE["cupy"] and where["cupyx"] <= OUTSIDE["cupyx"]
    assert len(where["lark"]) <= 1, f"lark imported in {where['lark']}"
    assert where["numba"] <= OUTSIDE["numba"] and where["ml_dtypes"] <= OUTSIDE["ml_dtypes"]
    assert all(p.startswith("viz/") for p in where["graphviz"]), where["graphviz"]
    assert where["onnx"] <= OUTSIDE["onnx"], where["onnx"]
    assert where["onnxruntime"] <= OUTSIDE["onnxruntime"], where["onnxruntime"]
    assert where["mpi4py"] <= OUTSIDE["mpi4py"], where["mpi4py"]
    assert where["cudnn"] <= OUTSIDE["cudnn"], where["cudnn"]


def test_one_module_loads_onednn():
    loaders = {str(p.relative_to(ROOT)) for p in sources() if "libdnnl" in p.read_text()}
    assert loaders <= {"runtime/onednn.py"}, loaders


def test_passes_frontend_and_runtime_do_not_import_each_other():
    peers = {"frontend", "passes", "runtime"}
    wrong = [f"{path.relative_to(ROOT)} imports {name}" for path in sources()
             if part_of(path) in peers for name in imports(path)
             if name.split(".")[:2][-1] in peers - {part_of(path)}
             and name.startswith("netlang.")]
    assert not wrong, "\n".join(wrong)


def test_commands_that_run_nothing_do_not_import_numba():
    """Importing Numba takes ~0.3 s: ``netlang check``, ``ir``, ``render`` never bind a
    program, so importing netlang and its CLI and compiling a spec must not load it
    (runtime/jit.py does, when a program is first bound to the CPU's kernels)."""
    import subprocess
    import sys

    code = ("import sys, netlang, netlang.cli\n"
            "print(netlang.compile('specs/residual.net').ir(training=True)[:0])\n"
            "print('numba' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT.parent).stdout.split()
    assert out == ["False"]
