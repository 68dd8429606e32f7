"""Golden DOT files: the exact Graphviz source of small pictures, reviewed when they change."""
from __future__ import annotations

import pytest

from tests.viz.golden_cases import CASES, GOLDEN


@pytest.mark.parametrize("name", sorted(CASES))
def test_dot_source_matches_the_golden_file(name):
    expected = (GOLDEN / name).read_text()
    assert CASES[name]() == expected, (
        f"{name} changed; if intended, run tools/regen_viz_golden.py and review the diff")
