"""Rewrite the golden DOT files of the viz tests (tests/viz/golden/*.dot).

    python3 tools/regen_viz_golden.py

Then review ``git diff tests/viz/golden`` like code: it is exactly what users will see change.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.viz.golden_cases import CASES, GOLDEN


def main() -> int:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, make in CASES.items():
        path = GOLDEN / name
        text = make()
        old = path.read_text() if path.exists() else None
        path.write_text(text)
        print(f"{'unchanged' if old == text else 'wrote'} {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
