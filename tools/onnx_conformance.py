"""ONNX conformance of netlang import: the onnx package's backend tests through import + netlang.

    python3 tools/onnx_conformance.py                 # a table: op type, pass / fail / unsupported
    python3 tools/onnx_conformance.py --markdown      # the same as README's table
    python3 tools/onnx_conformance.py --show fail     # every failing case with its difference
    python3 tools/onnx_conformance.py --only Conv MaxPool

Cases: the node tests the onnx package generates (``onnx.backend.test.case.node``: one-node
models with their inputs and expected outputs) and the PyTorch module exports it ships
(``onnx/backend/test/data/pytorch-converted`` and ``pytorch-operator``), and the "light"
ImageNet models (ResNet-50, DenseNet-121, ... with their weights filled by ConstantOfShape),
compared with onnxruntime on random inputs.  Each is imported
(``netlang.exchange.import_onnx``), run on netlang's CPU kernels and compared with the
expected outputs (relative to max(1, |expected|), within 1e-3 as ONNX's own runner allows):

- pass: the outputs agree;
- fail: they do not, or running raised (a bug to fix);
- unsupported: import refused the model, naming what does not map (a choice to state).
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import onnx
from onnx import numpy_helper

from netlang.errors import NetlangError, UsageError
from netlang.exchange import onnx_lib
from netlang.exchange.import_onnx import (
    build_session,
    import_model,
    largest_difference,
    random_feeds,
)

TOLERANCE = 1e-3
# Outputs in a half dtype are checked to its precision: float16 keeps 11 significant bits,
# bfloat16 8 (one rounding of either can move a value by 2**-11 or 2**-8 of itself).
HALF_TOLERANCE = {"float16": 2e-3, "bfloat16": 1e-2}


def node_cases():
    """(group, name, model bytes, [(inputs, outputs)]) for onnx's generated node tests."""
    from onnx.backend.test.case import node

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = node.collect_testcases(None)
    for case in cases:
        op = case.model.graph.node[0].op_type if case.model.graph.node else "?"
        yield op, case.name, case.model.SerializeToString(), case.data_sets


def _tensor(path: str) -> np.ndarray:
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def model_cases():
    """The PyTorch exports shipped as data folders (model.onnx, test_data_set_0/*.pb)."""
    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    for kind in ("pytorch-converted", "pytorch-operator"):
        for folder in sorted(glob.glob(os.path.join(root, kind, "*"))):
            with open(os.path.join(folder, "model.onnx"), "rb") as f:
                data = f.read()
            sets = []
            for ds in sorted(glob.glob(os.path.join(folder, "test_data_set_*"))):
                ins = [_tensor(p) for p in sorted(glob.glob(os.path.join(ds, "input_*.pb")))]
                outs = [_tensor(p) for p in sorted(glob.glob(os.path.join(ds, "output_*.pb")))]
                sets.append((ins, outs))
            yield kind, os.path.basename(folder), data, sets


def light_models(only=None):
    """The "light" ImageNet models the onnx package ships (their weights filled in by
    ConstantOfShape), judged against onnxruntime on random inputs; ``only``: these names."""
    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    for path in sorted(glob.glob(os.path.join(root, "*.onnx"))):
        if only and os.path.basename(path).removesuffix(".onnx").removeprefix("light_") \
                not in only:
            continue
        with open(path, "rb") as f:
            data = f.read()
        graph = onnx_lib.read(data)
        feeds = random_feeds(graph, size=1)
        expected = onnx_lib.run(data, feeds)
        sets = [([feeds[v.name] for v in graph.inputs],
                 [expected[v.name] for v in graph.outputs])]
        name = os.path.basename(path).removesuffix(".onnx").removeprefix("light_")
        yield "light models", name, data, sets


def _array(value, dtype) -> np.ndarray:
    """A test's value (an array, or a TensorProto) as an array of the declared dtype."""
    if isinstance(value, onnx.TensorProto):
        value = numpy_helper.to_array(value)
    return np.asarray(value, dtype=dtype)


def judge(data: bytes, sets) -> tuple[str, str]:
    """('pass' | 'fail' | 'unsupported', why)."""
    try:
        graph = onnx_lib.read(data)
        imported = import_model(graph)
    except UsageError as err:
        return "unsupported", str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
    try:
        _, session = build_session(imported, "case.net")
        worst = 0.0
        for inputs, outputs in sets:
            feeds = {v.name: _array(x, v.dtype) for v, x in zip(graph.inputs, inputs)}
            reference = {v.name: _array(y, v.dtype) for v, y in zip(graph.outputs, outputs)}
            with np.errstate(all="ignore"):
                worst = max(worst, largest_difference(session, imported, reference, feeds))
    except (NetlangError, ArithmeticError, AttributeError, IndexError, KeyError, TypeError,
            ValueError) as err:
        return "fail", f"{type(err).__name__}: {str(err).splitlines()[0]}"
    if worst <= max(HALF_TOLERANCE.get(np.dtype(v.dtype).name, TOLERANCE)
                    for v in graph.outputs):
        return "pass", ""
    return "fail", f"largest relative difference {worst:.3g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--show", choices=["fail", "unsupported", "pass"], action="append",
                        default=[], help="list the cases with this outcome")
    parser.add_argument("--only", nargs="+", metavar="OP", help="these op types only")
    args = parser.parse_args()
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    shown = []
    names: dict[str, list[str]] = {}
    for source in (node_cases(), model_cases(), light_models()):
        for group, name, data, sets in source:
            if args.only and group not in args.only:
                continue
            outcome, why = judge(data, sets)
            table[group][outcome] += 1
            if group == "light models":
                names.setdefault(outcome, []).append(name)
            if outcome in args.show:
                shown.append(f"{outcome:12} {group:18} {name}: {why}")
    totals = collections.Counter()
    for counts in table.values():
        totals.update(counts)
    ops_passing = sum(1 for g, c in table.items() if c["pass"] and g not in
                      ("pytorch-converted", "pytorch-operator", "light models"))
    if args.markdown:        # README's form: the op types that run, then those refused
        print("| op type | pass | fail | unsupported |")
        print("|---|---|---|---|")
        refused = []
        for group in sorted(table):
            c = table[group]
            if c["pass"] or c["fail"]:
                print(f"| {group} | {c['pass']} | {c['fail']} | {c['unsupported']} |")
            else:
                refused.append(group)
        print(f"\nEvery case refused ({len(refused)} op types): {', '.join(refused)}.")
    else:
        print(f"{'op type':28} {'pass':>5} {'fail':>5} {'unsupported':>12}")
        for group in sorted(table):
            c = table[group]
            print(f"{group:28} {c['pass']:5} {c['fail']:5} {c['unsupported']:12}")
    print(f"\n{sum(totals.values())} cases: {totals['pass']} pass, {totals['fail']} fail, "
          f"{totals['unsupported']} unsupported; {ops_passing} op types pass at least one "
          f"node test")
    for outcome, models in sorted(names.items()):
        print(f"light models, {outcome}: {', '.join(models)}")
    for line in shown:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
