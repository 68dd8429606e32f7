"""netlang explain FILE [--train] [--batch B] [--device D]: what the optimizer did, pass by pass.

Prints each pass in order with its node count and what it changed (folded, rewritten,
merged, removed, fused: counts and the nodes by name and spec location), then the memory
plan's peak activation bytes with and without freeing after last use, and the arena the CPU
executor binds for the kernels that write into planned buffers.  Without ``--train``
it explains the eval program (all outputs, no updates).  With ``--train`` it explains one
training step as ``netlang train`` runs it: forward, gradients and, when the spec has a
train section, the optimizer's updates, fetching the loss and metrics.  A spec with
``on cpu { }`` / ``on gpu { }`` blocks gets a last ``placement`` step listing every copy
between devices, for a session on ``--device`` (no GPU is needed to explain one).
"""
from __future__ import annotations

import netlang
from netlang.errors import UsageError

HELP = "show what each optimization pass changed and the memory plan's peak"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="a .net spec")
    parser.add_argument("--train", action="store_true",
                        help="explain a training step (gradients and updates) instead of the "
                             "eval program")
    parser.add_argument("--batch", type=int, default=None, metavar="B",
                        help="batch size for the memory plan (default: the spec's train "
                             "batch, else 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                        help="the session's device: where nodes outside 'on' blocks run")


def run(args) -> int:
    if args.batch is not None and args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    model = netlang.compile(args.file)
    if not args.train:
        print(model.explain(training=False, batch=args.batch, device=args.device), end="")
        return 0
    step, fetches = train_step(model)
    print(model.explain(training=True, batch=args.batch, step=step, fetches=fetches,
                        device=args.device), end="")
    return 0


def train_step(model) -> tuple[tuple | None, list[str] | None]:
    """The optimizer stage and the fetches of ``netlang train``'s step, if the spec trains."""
    if model.train_config is None:
        return None, None
    from netlang.train.config import train_config
    from netlang.train.step import build_train_graph

    config = train_config(model.train_config, model.graph.name)
    optimizer = config.make_optimizer()
    graph = build_train_graph(model, optimizer, config.weight_decay)
    report = f"{optimizer.describe()} updates for {len(model.graph.params)} parameters"
    return ("optimizer", graph, report), [model.graph.loss, *model.graph.metrics]
