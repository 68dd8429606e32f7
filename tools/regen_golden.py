"""Rewrite the golden IR of every shipped spec (tests/frontend/golden/*.ir).

    python3 tools/regen_golden.py

Then review ``git diff tests/frontend/golden`` like code: it is what ``netlang ir --after
lowered`` shows users.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.frontend.golden import GOLDEN, golden_path, golden_text, spec_paths


def main() -> int:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for spec in spec_paths():
        path = golden_path(spec)
        text = golden_text(spec)
        old = path.read_text() if path.exists() else None
        path.write_text(text)
        print(f"{'unchanged' if old == text else 'wrote'} {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
