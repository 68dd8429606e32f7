"""netlang check FILE: parse, lower and type the spec; one line per layer, or the errors."""
from __future__ import annotations

import sys

import netlang
from netlang.frontend.summary import (
    available_memory,
    format_count,
    memory_warnings,
    summarize,
)

HELP = "check a spec: parse it, infer every shape, list the layers"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="a .net spec")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="print only warnings and errors")


def run(args) -> int:
    model = netlang.compile(args.file)
    summary = summarize(model.lowered)
    if not args.quiet:
        print(f"{args.file}: network {summary.network}, {len(summary.rows)} layers, "
              f"{format_count(summary.total_params)} parameters")
        print(layer_table(summary))
    batch = train_batch(model.lowered)
    for warning in [*model.warnings,
                    *memory_warnings(model.lowered, batch, available_memory())]:
        print(str(warning), file=sys.stderr)
    return 0


def train_batch(graph) -> int:
    """The train section's batch size (activation memory is checked at it), else 1."""
    batch = (graph.spec.train or {}).get("batch", 1)
    return batch if isinstance(batch, int) and batch >= 1 else 1


def layer_table(summary) -> str:
    """``  conv1  conv2d  f32[N,24,24,32]  h`` per layer, in columns."""
    rows = [(r.name, r.kind, str(r.type) if r.type else "-", ", ".join(r.names))
            for r in summary.rows]
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(3)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths)]
        lines.append(("  " + "  ".join(cells) + ("  " + row[3] if row[3] else "")).rstrip())
    return "\n".join(lines)
