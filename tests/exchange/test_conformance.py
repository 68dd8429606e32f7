"""tools/onnx_conformance.py: onnx's own backend tests through netlang import.  Nothing may
fail (a fail is a bug: outputs that differ, or a run that raises); what import refuses is
stated by the tool and README, and what passes today must keep passing."""
from __future__ import annotations

import collections
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("onnx_conformance",
                                                  ROOT / "tools" / "onnx_conformance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_backend_test_fails_and_the_passes_stay():
    tool = _tool()
    outcomes = collections.Counter()
    failures = []
    for source in (tool.node_cases(), tool.model_cases()):
        for group, name, data, sets in source:
            outcome, why = tool.judge(data, sets)
            outcomes[outcome] += 1
            if outcome == "fail":
                failures.append(f"{group} {name}: {why}")
    assert not failures, "\n".join(failures)
    assert outcomes["pass"] >= 433, outcomes          # 439 on 2026-12-05


def test_light_imagenet_models_import_and_match_onnxruntime():
    tool = _tool()
    wanted = {"resnet50", "inception_v2", "squeezenet", "shufflenet", "bvlc_alexnet",
              "zfnet512"}                       # and densenet121, inception_v1, vgg19
    passed = {name for group, name, data, sets in tool.light_models(wanted)
              if tool.judge(data, sets)[0] == "pass"}
    assert passed == wanted
