"""netlang summary FILE [--batch B]: a Keras-like table of layers, parameters and FLOPs."""
from __future__ import annotations

import sys

import netlang
from netlang.errors import UsageError
from netlang.frontend.summary import (
    Summary,
    available_memory,
    format_bytes,
    format_count,
    memory_warnings,
    summarize,
)

HELP = "per-layer output shapes, parameters, FLOPs and activation memory"
COLUMNS = ("Layer", "Kind", "Output shape", "Params", "FLOPs/example", "Activations")


def add_arguments(parser) -> None:
    parser.add_argument("file", help="a .net spec")
    parser.add_argument("--batch", type=int, default=None,
                        help="batch size for activation memory (default: the train "
                             "section's batch, else 1)")


def run(args) -> int:
    model = netlang.compile(args.file)
    batch = args.batch if args.batch is not None else _train_batch(model.lowered)
    if batch < 1:
        raise UsageError(f"--batch must be at least 1, got {batch}")
    print(format_summary(summarize(model.lowered, batch)))
    for warning in memory_warnings(model.lowered, batch, available_memory()):
        print(str(warning), file=sys.stderr)
    return 0


def _train_batch(graph) -> int:
    batch = (graph.spec.train or {}).get("batch", 1)
    return batch if isinstance(batch, int) else 1


def format_summary(summary: Summary) -> str:
    rows = [(r.name, r.kind, str(r.type) if r.type else "-", format_count(r.params + r.state),
             format_count(r.flops), format_bytes(r.activation_bytes)) for r in summary.rows]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))

    def line(cells) -> str:
        left = [c.ljust(w) for c, w in zip(cells[:3], widths[:3])]
        right = [c.rjust(w) for c, w in zip(cells[3:], widths[3:])]
        return "  ".join(left + right).rstrip()

    out = [f"network {summary.network} (activations at batch {summary.batch})", rule,
           line(COLUMNS), rule, *(line(row) for row in rows), rule,
           f"Trainable params:     {format_count(summary.trainable)}",
           f"Non-trainable params: {format_count(summary.non_trainable)}",
           f"Total params:         {format_count(summary.total_params)}",
           f"Forward FLOPs per example: {format_count(summary.flops)}",
           f"Activations at batch {summary.batch}: {format_bytes(summary.activation_bytes)}"]
    return "\n".join(out)
