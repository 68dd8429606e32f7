"""Golden IR text of the shipped specs: what the front end lowers each one to.

``tools/regen_golden.py`` rewrites ``tests/frontend/golden/<spec>.ir``; ``test_golden``
compares.  The text is the lowered graph (before any pass), so it changes only when the
front end, an op's shape rule or the printer changes.
"""
from __future__ import annotations

from pathlib import Path

from netlang.frontend import load_spec
from netlang.ir.printer import format_graph

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
GOLDEN = Path(__file__).resolve().parent / "golden"


def spec_paths() -> list[Path]:
    return sorted(SPECS.glob("*.net"))


def golden_text(spec: Path) -> str:
    return format_graph(load_spec(spec.read_text(), f"specs/{spec.name}"))


def golden_path(spec: Path) -> Path:
    return GOLDEN / f"{spec.stem}.ir"
