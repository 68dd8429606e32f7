"""netlang ir FILE [--after PASS] [--train]: the IR text, one node a line."""
from __future__ import annotations

import netlang

HELP = "print the typed IR, one node a line, with the spec location of each node"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="a .net spec")
    parser.add_argument("--after", metavar="PASS", default=None,
                        help="show the graph after this pass ('lowered' for the front end's "
                             "output)")
    parser.add_argument("--train", action="store_true",
                        help="the training step: gradients and, when the spec has a train "
                             "section, the optimizer's updates (--after gradients stops before "
                             "them)")
    parser.add_argument("--no-spans", action="store_true", help="omit the source locations")


def run(args) -> int:
    from netlang.cli.explain import train_step

    model = netlang.compile(args.file)
    step = train_step(model)[0] if args.train else None
    print(model.ir(after=args.after, training=args.train, with_span=not args.no_spans,
                   step=step), end="")
    return 0
