"""Every shipped spec lowers to exactly its golden IR (regenerate: tools/regen_golden.py)."""
from __future__ import annotations

import pytest

from tests.frontend.golden import golden_path, golden_text, spec_paths


def test_every_spec_has_a_golden_file():
    missing = [s.name for s in spec_paths() if not golden_path(s).exists()]
    assert missing == []


@pytest.mark.parametrize("spec", spec_paths(), ids=lambda p: p.stem)
def test_lowered_ir_matches_golden(spec):
    expected = golden_path(spec).read_text()
    assert golden_text(spec) == expected, (
        f"the IR of {spec.name} changed; review it and run tools/regen_golden.py")
